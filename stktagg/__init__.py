"""hapee-stktagg: a stick table aggregator for HAProxy peers.

This module holds the version only and imports no submodule, so that
``import stktagg`` stays cheap and free of side effects.
"""

__version__ = "0.1.0"
