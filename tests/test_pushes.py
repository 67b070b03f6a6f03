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
        self.behind: list[int] = []  #: the backlog each round told the backpressure
        super().__init__(self.reactor, self.clock, [section], SimpleNamespace(established={}), self.behind.append)
        self.pushed: list[list[bytes]] = []
        self.bodies: list[list[tuple[bytes, int]]] = []

    def push(self, section, table, changed, now) -> None:
        self.pushed.append([key for key, _, _ in changed])

    def push_encoded(self, section, table, keys, bodies, now) -> None:
        self.pushed.append(list(keys))
        self.bodies.append(list(bodies))


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


def test_a_round_that_cannot_push_everything_takes_the_oldest_changes_of_every_stripe() -> None:
    t = table()
    pushes = RecordingPushes([t])
    now = table_ms(pushes.clock.now())
    keys = [f"k{i}".encode() for i in range(4000)]
    for key in keys:  # changed in this order
        hit(t, 0, key, 1, now)
    pushes._drain(pushes._tables_in_turn(), now, pushes.clock.now(), 1000, pushes.clock.now() + 60, due=False)
    taken = [key for push in pushes.pushed for key in push]
    assert len(taken) >= 1000
    # Every stripe gave its oldest keys, in order: none of the keys taken was
    # changed after a key of its stripe that was left.
    for stripe in range(len(t.stripes)):
        mine = [k for k in keys if t.stripe_of(k) == stripe]
        got = [k for k in taken if t.stripe_of(k) == stripe]
        assert got == mine[: len(got)]
        assert got, "a stripe was left out of the round"
    pushes.reactor.close()


def test_a_key_changed_again_keeps_its_place() -> None:
    t = table(stripes=1)
    hit(t, 0, b"a", 1, 0)
    hit(t, 0, b"b", 1, 0)
    hit(t, 0, b"a", 2, 0)  # changed again: still the oldest change waiting
    assert [k for k, _, _ in t.take_dirty(0, 0, 1)] == [b"a"]
    assert [k for k, _, _ in t.take_dirty(0, 0, 1)] == [b"b"]


def test_a_cut_round_tells_the_backpressure_what_it_left() -> None:
    from stktagg import pushes as module

    t = table()
    pushes = RecordingPushes([t])
    now = table_ms(pushes.clock.now())
    for i in range(module.PUSH_BUDGET + 10):
        hit(t, 0, f"k{i}".encode(), 1, now)
    pushes.round()
    pushes.clock.advance(1.0)
    pushes.round()
    assert pushes.behind[0] > 0 and pushes.behind[-1] == 0
    assert sum(map(len, pushes.pushed)) == module.PUSH_BUDGET + 10
    pushes.reactor.close()


def test_encoded_pushes_carry_what_the_general_path_would_send() -> None:
    from stktagg.aggregation import Section

    fast, slow = table(), table()
    assert fast.encodes_itself
    now = 5_000_000
    for i in range(300):
        for peer in range(3):
            for t in (fast, slow):
                hit(t, peer, f"k{i}".encode(), i * 7 + peer, now - peer * 3000, rate=(peer * 4000, i, peer))
    encoded = {}
    for s in range(len(fast.stripes)):
        keys, bodies = fast.take_encoded(s, now)
        encoded.update(zip(keys, bodies))
    general = {}
    for s in range(len(slow.stripes)):
        changed = slow.take_dirty(s, now)
        batch = Section.encode_changes(slow, changed, now / 1000 - (table_ms(0) / 1000))
        general.update(zip([k for k, _, _ in changed], batch.bodies))
    assert encoded == general and len(encoded) == 300
    assert [s.timers for s in fast.stripes] == [s.timers for s in slow.stripes]  # the same next changes
