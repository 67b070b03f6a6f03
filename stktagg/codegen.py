"""Functions generated at run time, with their source where tools can find it.

The hot path (``wire``'s run decoder and body encoder, ``table``'s combine and
pack) is straight-line code generated once per table layout. Compiled as
``<string>``, such code shows no source in a traceback and ``inspect`` cannot
read it. ``compile_function`` compiles under a file name of its own, per
function, and registers the source with ``linecache``: tracebacks then show
the generated lines, and ``inspect.getsource`` works. The source is also kept
on the function as ``__source__``.

Imports nothing of stktagg.
"""

from __future__ import annotations

import collections
import itertools
import linecache
from typing import Any, Callable

_serial = itertools.count(1)
#: Sources registered with linecache, oldest first. A peer can make us generate code
#: for many layouts (one per distinct table definition), so the registry is bounded:
#: past it, the oldest generated functions still run but lose their source lines.
MAX_REGISTERED = 1024
_registered: collections.OrderedDict[str, None] = collections.OrderedDict()


def compile_function(source: str, name: str, namespace: dict[str, Any], label: str) -> Callable:
    """Compile ``source`` (which defines ``name``) in ``namespace``; return that function.

    ``label`` says what the code is for (the layout it was generated for); it
    goes into the file name, ``<stktagg generated N: label>``, which is unique.
    """
    filename = f"<stktagg generated {next(_serial)}: {label}>"
    lines = source.splitlines(keepends=True)
    # mtime None: linecache.checkcache leaves the entry alone (no file to compare with).
    linecache.cache[filename] = (len(source), None, lines, filename)
    _registered[filename] = None
    while len(_registered) > MAX_REGISTERED:
        linecache.cache.pop(_registered.popitem(last=False)[0], None)
    exec(compile(source, filename, "exec"), namespace)  # our own templates only
    function = namespace[name]
    function.__source__ = source
    return function
