#!/usr/bin/env python3
"""Entry point: ``python3 hapee_stktagg.py -f /etc/hapee-extras/hapee-stktagg.cfg``."""
from stktagg.daemon import main

if __name__ == "__main__":
    raise SystemExit(main())
