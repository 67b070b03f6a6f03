"""``python3 -m stktagg``: the daemon (how the main process starts a shard's process)."""
from .daemon import main

raise SystemExit(main())
