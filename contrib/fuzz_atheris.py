#!/usr/bin/env python3
"""Coverage-guided fuzzing with atheris (where it installs: ``pip install atheris``).

    python3 contrib/fuzz_atheris.py -atheris_runs=2000000 [-max_len=4096]

The first input byte picks the target (decoder, session, config); the rest is
its input. Same contracts as contrib/fuzz.py: only the typed errors may
escape, anything else is a crash that libFuzzer reports with its input.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports():  # the modules under test, instrumented for coverage
    import stktagg.config
    import stktagg.session
    import stktagg.wire

INSTRUMENTED = (stktagg.config, stktagg.session, stktagg.wire)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz import HELLO, run_config, run_decoder, run_session  # noqa: E402  (the same targets and contracts)

_RNG = __import__("random").Random(0)


def one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 3, data[1:]
    if target == 0:
        run_decoder(body)
    elif target == 1:
        run_session(HELLO + body, _RNG)
    else:
        run_config(body)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
