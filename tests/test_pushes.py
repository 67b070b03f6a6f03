"""Push rounds: what one round sends, in which order (issues 14 and 15)."""

from __future__ import annotations

from types import SimpleNamespace

from stktagg.clock import ManualClock, table_ms
from stktagg.loop import Reactor
from stktagg.pushes import PUSH_CHUNK, PushScheduler
from test_table import hit, table


class RecordingPushes(PushScheduler):
    """The real rounds; each push recorded instead of sent."""

    def __init__(self, tables) -> None:
        self.clock = ManualClock()
        self.reactor = Reactor(clock=self.clock.now)
        section = SimpleNamespace(name="agg", tables={t.name: t for t in tables})
        super().__init__(self.reactor, self.clock, [section], SimpleNamespace(established={}), lambda: None)
        self.pushed: list[list[bytes]] = []

    def push(self, section, table, changed, now) -> None:
        self.pushed.append([key for key, _, _ in changed])


def keys_in_distinct_stripes(t, count: int) -> list[bytes]:
    found, stripes, i = [], set(), 0
    while len(found) < count:
        key = f"k{i}".encode()
        if t.stripe_of(key) not in stripes:
            stripes.add(t.stripe_of(key))
            found.append(key)
        i += 1
    return found


def test_keys_of_several_stripes_go_out_in_one_push() -> None:
    t = table()
    pushes = RecordingPushes([t])
    now = table_ms(pushes.clock.now())
    keys = keys_in_distinct_stripes(t, 10)
    for key in keys:
        hit(t, 0, key, 1, now)
    pushes.round()
    assert len(pushes.pushed) == 1 and sorted(pushes.pushed[0]) == sorted(keys)
    pushes.reactor.close()


def test_a_push_carries_at_most_a_chunk() -> None:
    t = table()
    pushes = RecordingPushes([t])
    now = table_ms(pushes.clock.now())
    for i in range(3 * PUSH_CHUNK + 7):
        hit(t, 0, f"k{i}".encode(), 1, now)
    pushes.round()
    assert sum(map(len, pushes.pushed)) == 3 * PUSH_CHUNK + 7
    assert max(map(len, pushes.pushed)) <= 2 * PUSH_CHUNK  # a chunk, plus at most one stripe's take
    pushes.reactor.close()


def test_peers_changes_go_before_keys_due_on_their_own() -> None:
    t = table()
    pushes = RecordingPushes([t])
    now = table_ms(pushes.clock.now())
    hit(t, 0, b"due", 1, now, expire=1000)  # peer 0's entry expires...
    hit(t, 1, b"due", 1, now)  # ...while peer 1's lives on: the sum changes on its own
    pushes.round()
    pushes.pushed.clear()
    later = now + 2000
    for s in range(len(t.stripes)):
        t.refresh(s, later)
    assert any(stripe.due for stripe in t.stripes)
    hit(t, 0, b"fresh", 1, later)
    pushes.clock.advance(2.0)
    pushes.round()
    assert pushes.pushed == [[b"fresh"], [b"due"]]
    pushes.reactor.close()
