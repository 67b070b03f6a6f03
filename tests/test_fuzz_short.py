"""The short form of the fuzz campaign (contrib/fuzz.py); the long run's figures are in the notes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from harness import ROOT


def test_short_fuzz_campaign_finds_nothing():
    out = subprocess.run([sys.executable, "contrib/fuzz.py", "--inputs", "30000", "--processes", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip(), out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["findings"] == [], report["findings"]
    assert report["inputs"] == 30000 and out.returncode == 0, out.stderr[-3000:]
    # No input makes a target hang (a typical input takes well under a millisecond; the
    # bound is generous for a loaded machine).
    assert report["slowest_input_s"] < 5.0


def run_fuzz_with_vectors(directory) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "contrib/fuzz.py", "--inputs", "3000", "--processes", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,  # it used to wait forever
                         env=dict(os.environ, STKTAGG_VECTORS=str(directory)))
    return out, time.monotonic() - started


def test_no_recorded_traces_fail_at_once_with_a_clear_message(tmp_path):
    empty = tmp_path / "no-vectors"
    empty.mkdir()
    out, elapsed = run_fuzz_with_vectors(empty)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith(f"fuzz.py: no seed inputs: no recorded traces in {empty} "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""  # no report: nothing ran
    assert elapsed < 30  # at once (a Python start-up), not after some timeout


def test_traces_without_message_streams_fail_at_once_with_a_clear_message(tmp_path):
    # One trace holding only handshake lines: no stream to seed the decoder and session targets.
    (tmp_path / "handshake-only.hex").write_text(
        "# < 2026-01-01T00:00:00.000000 c1 handshake line 1: 'HAProxyS 2.1'\n"
        + "HAProxyS 2.1\n".encode().hex() + "\n")
    out, _ = run_fuzz_with_vectors(tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    reason = f"the 1 recorded trace(s) in {tmp_path} hold no message streams"
    assert out.stderr.startswith(f"fuzz.py: no seed inputs: {reason}"), out.stderr
