"""The recorder of tests/data/vectors still works against real HAProxy, and what it records replays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import haproxy_binaries
from vectors import read_trace

ROOT = Path(__file__).resolve().parents[1]
RECORDER = ROOT / "contrib" / "record_vectors.py"

sys.path.insert(0, str(ROOT / "contrib"))
import record_vectors  # noqa: E402

BINARIES = haproxy_binaries()


@pytest.mark.skipif(not BINARIES, reason="no HAProxy installed")
def test_a_fresh_recording_of_the_basic_session_decodes_and_replays(tmp_path):
    version, binary = BINARIES[0]
    done = subprocess.run(
        [sys.executable, str(RECORDER), "--haproxy", binary, "--only", "session-basic", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / f"haproxy-{version}-session-basic.hex"
    units = read_trace(path)
    texts = [unit.text for unit in units]
    # the whole story happened: hello, pushes, our write acked, our resync answered, heartbeats
    assert texts[:4] == ["handshake line b'HAProxyS 2.1\\n'", "handshake line b'AGGR\\n'", texts[2], "handshake line b'200\\n'"]
    assert any(t.startswith("stick-table/update table=mytable.local") and "key='alice'" in t for t in texts)
    assert any(u.direction == "<" and u.text.startswith("stick-table/update-timed table=mytable.aggr") for u in units)
    assert any(u.direction == "<" and u.text == "control/heartbeat" for u in units)
    assert any(u.direction == ">" and u.text == "control/heartbeat" for u in units)
    assert (tmp_path / f"haproxy-{version}-session-basic.cli.txt").read_text().count("# table: ") == 6

    # and it checks out like the committed ones: codec cross-check and session replay
    import test_session
    import test_wire

    assert sum(test_wire.cross_check(path).values()) == test_wire.count_message_lines_independently(path)
    test_session.test_replay_emits_what_a_working_peer_sent(path)


def test_the_capture_peers_own_decoder_agrees_with_the_reference_examples():
    # peers-protocol.md §5.9, independent of stktagg: 1000 -> f8 2f, and an update's text
    assert record_vectors.varint(1000) == bytes.fromhex("f82f")
    assert record_vectors.varint(2**32 - 1) == bytes.fromhex("fff0fefe7e")
    direction = record_vectors.Direction()
    definition = bytes.fromhex("0a8218030a6d7969702e6c6f63616c0404f051f0d9dc0c0af0e203")
    assert record_vectors.describe(definition, direction).startswith(
        "stick-table/table-definition id=3 name='myip.local' key_type=4(ip) key_len=4 data_types=0x600"
    )
    text = record_vectors.describe(bytes.fromhex("0a800d000000047f00000102f4040200"), direction)
    assert text == "stick-table/update table=myip.local uid=4 key=ip:127.0.0.1 http_req_cnt=2 http_req_rate=[tick=308,curr=2,prev=0]"
    text = record_vectors.describe(bytes.fromhex("0a81087f00000103000300"), direction)
    assert text == "stick-table/update-incremental table=myip.local uid=5(implied) key=ip:127.0.0.1 http_req_cnt=3 http_req_rate=[tick=0,curr=3,prev=0]"


def test_the_recorder_refuses_an_unknown_scenario():
    done = subprocess.run([sys.executable, str(RECORDER), "--only", "nosuch"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown scenario" in done.stderr
