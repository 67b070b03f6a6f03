"""Issue 15: the processes that serve a sharded configuration (``shards.plan``) and their supervisor."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from stktagg.clock import Clock
from stktagg.config import PeerRole, parse
from stktagg.loop import Reactor
from stktagg.shards import Supervisor, is_sharded, plan, shard_command, write_configs

CONFIG = """\
global
    stats socket /run/aggr.sock
    prometheus 127.0.0.1:9100
    pidfile /run/aggr.pid
    max-entries 500000
aggregations agg1
    shards 3
    peer AGGR.1 127.0.0.1:10001 local shard 1
    peer AGGR.2 127.0.0.1:10002 shard 2
    peer AGGR.3 127.0.0.1:10003 local shard 3
    peer A 127.0.0.1:10000
    peer TOP 127.0.0.2:10000 up
    from .local to .aggr
aggregations agg2
    peer ME 127.0.0.1:10010 local
    peer B 127.0.0.1:10011
    from .local to .aggr
"""


def test_one_process_per_local_shard_and_one_for_the_unsharded_sections(tmp_path) -> None:
    config = parse(CONFIG, "aggr.cfg")
    assert is_sharded(config)
    plans = plan(config, str(tmp_path))
    assert [p.label for p in plans] == ["agg1/AGGR.1", "agg1/AGGR.3", "agg2"]
    for p, local in zip(plans[:2], ("AGGR.1", "AGGR.3")):
        (section,) = p.config.aggregations
        assert section.shards is None
        # its one local peer (no shard inside the process), the nodes and up peers; no other shard peer
        assert [(peer.name, peer.role, peer.shard) for peer in section.peers] == [
            (local, PeerRole.LOCAL, None), ("A", PeerRole.DOWN, None), ("TOP", PeerRole.UP, None)]
    assert [s.name for s in plans[2].config.aggregations] == ["agg2"]
    for p in plans:
        g = p.config.global_
        assert [s.path for s in g.stats_sockets] == [p.cli_path] and g.stats_sockets[0].mode == 0o600
        assert g.http is None and g.pidfile is None and g.max_entries == 500_000
        assert os.path.dirname(p.cli_path) == str(tmp_path)
    assert len({p.cli_path for p in plans}) == 3


def test_the_derived_files_are_valid_configurations(tmp_path) -> None:
    plans = plan(parse(CONFIG, "aggr.cfg"), str(tmp_path))
    write_configs(plans)
    for p in plans:
        again = parse(open(p.config_path).read(), p.config_path)
        assert [s.name for s in again.aggregations] == [s.name for s in p.config.aggregations]
        assert not is_sharded(again)


def test_certificate_paths_become_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = CONFIG.replace("peer AGGR.1 127.0.0.1:10001 local shard 1",
                          "peer AGGR.1 127.0.0.1:10001 local shard 1 ssl crt certs/me.pem")
    (first, *_) = plan(parse(text, "aggr.cfg"), str(tmp_path))
    assert first.config.aggregations[0].peers[0].crt == str(tmp_path / "certs" / "me.pem")


def test_a_shard_process_is_started_with_the_daemons_options(tmp_path) -> None:
    (first, *_) = plan(parse(CONFIG, "aggr.cfg"), str(tmp_path))
    command = shard_command(first, debug=True, workers=2, user="nobody", group=None)
    assert command[:3] == [sys.executable, "-m", "stktagg"]
    assert command[3:] == ["-f", first.config_path, "-W", "2", "-d", "-u", "nobody"]


@pytest.fixture
def reactor():
    clock = Clock()
    r = Reactor(clock=clock.now)
    yield r, clock
    r.close()


def test_the_supervisor_restarts_a_process_that_died_and_stops_them_all(tmp_path, reactor) -> None:
    loop, clock = reactor
    plans = plan(parse(CONFIG, "aggr.cfg"), str(tmp_path))
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    supervisor = Supervisor(loop, clock.now, plans, lambda p: sleeper)
    supervisor.start()
    try:
        first = supervisor.pids()
        assert all(first.values()) and len(set(first.values())) == 3
        os.kill(first["agg1/AGGR.3"], signal.SIGKILL)
        assert loop.run_until(lambda: supervisor.pids()["agg1/AGGR.3"] not in (None, first["agg1/AGGR.3"]),
                              timeout=20)
        after = supervisor.pids()
        assert after["agg1/AGGR.1"] == first["agg1/AGGR.1"] and after["agg2"] == first["agg2"]
    finally:
        supervisor.stop()
    assert supervisor.pids() == {p.label: None for p in plans}
