"""The aggregator's configuration file: ``parse``/``load`` it, ``dump`` it, check it.

The public API of the package; everything else in it is private. Laid out
as CPython's ``tomllib`` is, one job per module, imports only downwards::

    _model                 frozen dataclasses (Config, Peer, HistoryLine, ...),
                           config_error, table_suffix, format_time, strip_positions
    _lexer                 text -> logical lines of tokens (continuations,
                           quotes, escapes, comments)
    _rules                 what every grammar rule uses (take a word, options, times)
    _global_section        the ``global`` keywords
    _aggregations_section  the ``aggregations`` keywords and section checks
    _parser                the whole file (and the grammar): parse, load
    _probes                checks that need the system: check_files, check_cpus
    _dump                  the model back to text: dump, quote_word

The package imports nothing from stktagg but ``errors`` and, to check a
``history`` line's statistic, ``history.parse_stat`` (sans-IO, importing nothing
of stktagg); it does no I/O except in :func:`load` (read the file) and the
``check_*`` probes.
"""

from stktagg.errors import ConfigError

from ._dump import dump, quote_word
from ._global_section import MAX_CPU, STATS_LEVELS, SYSLOG_FACILITIES, SYSLOG_LEVELS
from ._lexer import Token, tokenize
from ._model import (
    EMPTY_GLOBAL,
    NOWHERE,
    Address,
    Aggregations,
    Config,
    FromRule,
    GlobalSection,
    HistoryLine,
    LogTarget,
    Peer,
    PeerRole,
    Position,
    StatsSocket,
    Verify,
    config_error,
    format_cpu_set,
    strip_positions,
    table_suffix,
)
from ._parser import load, parse
from ._probes import check_cpus, check_files

__all__ = [
    "EMPTY_GLOBAL",
    "MAX_CPU",
    "NOWHERE",
    "STATS_LEVELS",
    "SYSLOG_FACILITIES",
    "SYSLOG_LEVELS",
    "Address",
    "Aggregations",
    "Config",
    "ConfigError",
    "FromRule",
    "GlobalSection",
    "HistoryLine",
    "LogTarget",
    "Peer",
    "PeerRole",
    "Position",
    "StatsSocket",
    "Token",
    "Verify",
    "check_cpus",
    "check_files",
    "config_error",
    "dump",
    "format_cpu_set",
    "load",
    "parse",
    "quote_word",
    "strip_positions",
    "table_suffix",
    "tokenize",
]
