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

with atheris.instrument_imports():
    from stktagg.config import parse
    from stktagg.errors import ConfigError, RemoteProtocolError
    from stktagg.session import PeerSession, Role
    from stktagg.wire import MessageDecoder

HELLO = b"HAProxyS 2.1\nAGGR\nA 4242 1\n"


def one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 3, data[1:]
    if target == 0:
        decoder = MessageDecoder()
        decoder.feed(body)
        try:
            while decoder.next_run() is not None or decoder.next_message() is not None:
                pass
        except RemoteProtocolError:
            pass
    elif target == 1:
        session = PeerSession(Role.ACCEPTING, "AGGR", 0.0, is_declared=lambda name: name == "A")
        session.receive_data(HELLO + body, 1.0)
        session.poll(10.0)
    else:
        try:
            parse(body.decode("utf-8", "replace"), "fuzz.cfg")
        except ConfigError:
            pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
