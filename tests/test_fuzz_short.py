"""The short form of the fuzz campaign (contrib/fuzz.py); the long run's figures are in the notes."""

from __future__ import annotations

import json
import subprocess
import sys

from harness import ROOT


def test_short_fuzz_campaign_finds_nothing():
    out = subprocess.run([sys.executable, "contrib/fuzz.py", "--inputs", "30000", "--processes", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["findings"] == [], report["findings"]
    assert report["inputs"] == 30000 and out.returncode == 0
    assert report["slowest_input_s"] < 1.0  # no input makes a target hang
