"""YAML conversion of the configuration (issue 8): round trips, comments, -f with YAML."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("ruamel.yaml")

from harness import ENTRY, ROOT  # noqa: E402
from stktagg.config import parse, strip_positions  # noqa: E402
from stktagg.errors import ConfigError  # noqa: E402
from stktagg.yamlconf import _comments_by_line, cfg_to_yaml, load_yaml, yaml_to_cfg  # noqa: E402

VALID = sorted((ROOT / "tests/data/config/valid").glob("*.cfg"))
REFERENCE_EXAMPLES = [p for p in VALID if p.name.startswith("ref_")]


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_round_trip_through_yaml_gives_an_identical_parse(path):
    text = path.read_text()
    yaml_text = cfg_to_yaml(text, str(path))
    back = yaml_to_cfg(yaml_text, str(path))
    assert strip_positions(parse(back, str(path))) == strip_positions(parse(text, str(path)))
    # and once more: the YAML of the converted file is the same YAML
    assert cfg_to_yaml(back, str(path)) == cfg_to_yaml(yaml_to_cfg(cfg_to_yaml(back)), str(path))


def test_every_reference_example_is_covered():
    assert len(REFERENCE_EXAMPLES) >= 9


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_comments_survive_both_ways(path):
    text = path.read_text()
    comments = [c for c in _comments_by_line(text).values() if c]
    yaml_text = cfg_to_yaml(text, str(path))
    back = yaml_to_cfg(yaml_text, str(path))
    for comment in comments:
        assert comment in yaml_text, comment
        assert comment in back, comment


def test_order_of_peers_and_sections_is_kept():
    path = ROOT / "tests/data/config/valid/two_sections.cfg"
    config = parse(yaml_to_cfg(cfg_to_yaml(path.read_text())))
    original = parse(path.read_text())
    assert [s.name for s in config.aggregations] == [s.name for s in original.aggregations]
    assert [[p.name for p in s.peers] for s in config.aggregations] == [[p.name for p in s.peers] for s in original.aggregations]


def test_daemon_accepts_a_yaml_file(tmp_path):
    yaml_file = tmp_path / "aggr.yaml"
    yaml_file.write_text(cfg_to_yaml((ROOT / "tests/data/config/valid/ref_single_level.cfg").read_text()))
    out = subprocess.run([sys.executable, str(ENTRY), "-c", "-f", str(yaml_file)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_errors_in_a_yaml_file_point_at_its_line(tmp_path):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("aggregations:\n  agg:\n    peer:\n      - A 192.0.2.1:1\n      - B 192.0.2.2:2 lcoal\n"
                         "    from: any to .aggr\n")
    with pytest.raises(ConfigError) as error:
        load_yaml(str(yaml_file))
    assert (error.value.lineno, error.value.path) == (5, str(yaml_file))
    assert "lcoal" in error.value.msg


def test_invalid_yaml_is_a_config_error_with_position(tmp_path):
    yaml_file = tmp_path / "broken.yaml"
    yaml_file.write_text("aggregations:\n  agg: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load_yaml(str(yaml_file))
    assert error.value.lineno >= 2 and "invalid YAML" in error.value.msg


def test_command_line_converter(tmp_path):
    cfg = ROOT / "tests/data/config/valid/ref_multilevel_a.cfg"
    to_yaml = subprocess.run([sys.executable, "-m", "stktagg.yamlconf", "to-yaml", str(cfg)], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    assert to_yaml.returncode == 0 and "up group 1" in to_yaml.stdout
    yaml_file = tmp_path / "a.yaml"
    yaml_file.write_text(to_yaml.stdout)
    to_cfg = subprocess.run([sys.executable, "-m", "stktagg.yamlconf", "to-cfg", str(yaml_file)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert to_cfg.returncode == 0
    assert strip_positions(parse(to_cfg.stdout)) == strip_positions(parse(cfg.read_text()))


HISTORY_CFG = """\
global
    history-file /var/lib/hapee-stktagg/history.db   # the samples
aggregations agg
    peer A 127.0.0.1:1 local
    from .local to .aggr
    # yesterday's hourly average
    history .aggr to .yday stat avg window 1h offset 1d
    history .aggr to .peak stat p90 window 90s   # the peaks
"""


def test_history_lines_and_file_round_trip_through_yaml():
    yaml_text = cfg_to_yaml(HISTORY_CFG)
    assert "  history-file: /var/lib/hapee-stktagg/history.db" in yaml_text
    assert "    history:\n" in yaml_text
    assert "      - .aggr to .yday stat avg window 1h offset 1d\n" in yaml_text
    assert "      - .aggr to .peak stat p90 window 90s" in yaml_text
    back = parse(yaml_to_cfg(yaml_text))
    assert strip_positions(back) == strip_positions(parse(HISTORY_CFG))
    assert [(h.target, h.stat, h.window_ms, h.offset_ms) for h in back.aggregations[0].history] == [
        (".yday", "avg", 3_600_000, 86_400_000), (".peak", "p90", 90_000, 0)]
    for comment in ("the samples", "yesterday's hourly average", "the peaks"):
        assert comment in yaml_text and comment in yaml_to_cfg(yaml_text)


def test_history_written_in_yaml(tmp_path):
    yaml_file = tmp_path / "h.yaml"
    yaml_file.write_text("global:\n  history-file: h.db\naggregations:\n  agg:\n"
                         "    peer:\n      - A 127.0.0.1:1 local\n    from: any to .aggr\n"
                         "    history:\n      - .aggr to .min stat min window 10m\n"
                         "      - .aggr to .p50 stat p50 window 2h offset 1500\n")
    config = load_yaml(str(yaml_file))
    assert config.global_.history_file == "h.db"
    assert [(h.source, h.target, h.stat, h.window_ms, h.offset_ms) for h in config.aggregations[0].history] == [
        (".aggr", ".min", "min", 600_000, 0), (".aggr", ".p50", "p50", 7_200_000, 1500)]


@pytest.mark.parametrize("history, global_, lineno, fragment", [
    ("      - .aggr to .a stat avg window 1h\n      - .aggr to .b stat p0 window 1h\n",
     "global:\n  history-file: h.db\n", 10, "unknown statistic 'p0'"),
    ("      - .aggr to .a stat avg window 0s\n", "global:\n  history-file: h.db\n", 9,
     "'window' expects a time from 1ms to 400d, not '0s'"),
    ("      - .aggr to .a stat avg window 1h\n      - .aggr to .a stat max window 1h\n",
     "global:\n  history-file: h.db\n", 10, "duplicate history suffix '.a' (first at line"),
    ("      - .aggr to .a stat avg window 1h\n", "", 7, "history needs 'history-file' in the global section"),
])
def test_history_errors_in_a_yaml_file_point_at_its_line(tmp_path, history, global_, lineno, fragment):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(global_ + "aggregations:\n  agg:\n    peer:\n      - A 127.0.0.1:1 local\n"
                         "    from: any to .aggr\n    history:\n" + history)
    with pytest.raises(ConfigError) as error:
        load_yaml(str(yaml_file))
    assert (error.value.path, error.value.lineno) == (str(yaml_file), lineno)
    assert fragment in error.value.msg
