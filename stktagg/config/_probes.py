"""Checks of a parsed configuration that need the system: files and CPUs.

The parser never touches the system; the daemon calls these at start-up and
for ``-c``. :func:`check_files` opens every ``crt`` and ``ca-file`` (without
blocking on a FIFO); :func:`check_cpus` compares ``cpu-map`` with the CPUs
the caller found available. Errors point at the word of the configuration
that names the file or the CPUs. Imports only ``_model``.
"""

from __future__ import annotations

import os
import stat

from stktagg.errors import ConfigError

from ._model import Config, config_error, format_cpu_set


def check_files(config: Config) -> list[ConfigError]:
    """Return one error per ``crt``/``ca-file`` that is not a readable regular file.

    Relative paths are taken from the current directory. Errors point at the
    path's word and come in file order.
    """
    errors: list[ConfigError] = []
    for section in config.aggregations:
        for peer in section.peers:
            for what, name, at in (("crt", peer.crt, peer.crt_position),
                                   ("ca-file", peer.ca_file, peer.ca_file_position)):
                problem = None if name is None else file_problem(name)
                if problem:
                    errors.append(config_error(at or peer.position,
                                               f"cannot read {what} file '{name}': {problem}"))
    return errors


def file_problem(path: str) -> str | None:
    """Why *path* cannot be read as a regular file, or None (never blocks on FIFOs)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
    finally:
        os.close(fd)
    return None


def check_cpus(config: Config, available: set[int]) -> None:
    """Raise ConfigError at ``cpu-map`` if it names a CPU not in *available*."""
    cpu_map, at = config.global_.cpu_map, config.global_.cpu_map_position
    if cpu_map is None or at is None:
        return
    missing = sorted(set(cpu_map) - available)
    if missing:
        cpus = format_cpu_set(missing)
        verb = "CPU {} is" if len(missing) == 1 else "CPUs {} are"
        have = format_cpu_set(sorted(available)) or "none"
        raise config_error(at, f"{verb.format(cpus)} not available (available CPUs: {have})")

