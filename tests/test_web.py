"""The ``http`` listener (issue 19) through a real ``web.WebConnection`` on a reactor.

The status source is ``test_cli_stream``'s (a section over real ``AggTable``s, a
manual clock); each request goes over a unix socketpair whose other end the same
reactor reads. Checked: the routes and their answers, the security headers, the
API's order, filter and limit against the table's own contents, the scan of a
big table in bounded turns, the shared scans and the cache, and bad requests.
The browser's side is tests/test_e2e_dashboard.py.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from stktagg import web
from stktagg.clock import table_ms
from stktagg.dashboard import CACHE_SECONDS, MAX_SCANS, SCAN_TURN_BUDGET, SCAN_TURN_KEYS, Dashboard, TableQuery
from stktagg.datatypes import read_rate
from stktagg.errors import ApiError
from stktagg.httpwire import HttpError, Request, parse_request
from stktagg.loop import Reactor
from stktagg.schema import format_key
from stktagg.slices import Slicer
from stktagg.transport import StreamTransport

from test_cli_stream import TICK, Client, Source, fill

pytestmark = pytest.mark.usefixtures("no_fd_leak")
TIMEOUT = 120.0


class RealTime:
    def now(self) -> float:
        return time.monotonic()


class WebBed:
    """A reactor, a slicer and the dashboard over ``source``; requests over socketpairs."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.reactor = Reactor()
        # The slicer's turn budget is kept on the real clock (as in the daemon); the table's
        # times are the source's manual clock's.
        self.slices = Slicer(self.reactor, RealTime(), budget=SCAN_TURN_BUDGET, turn_keys=SCAN_TURN_KEYS)
        self.dashboard = Dashboard(source, self.slices)
        self.ticks: list[float] = []  #: CPU time between two runs of a timer every TICK (the turns between)
        self.exchanges: list[Exchange] = []
        self._timer = None

    def send(self, request: bytes) -> "Exchange":
        server_end, client_end = socket.socketpair()
        protocol = web.WebConnection(self.dashboard)
        exchange = Exchange(self.reactor, client_end, protocol, StreamTransport(self.reactor, server_end, protocol), True)
        self.exchanges.append(exchange)
        client_end.sendall(request)
        return exchange

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        exchange = self.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert self.reactor.run_until(lambda: exchange.eof, TIMEOUT), f"no answer to {path}"
        return exchange.answer()

    def api(self, path: str) -> dict:
        status, headers, body = self.get(path)
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        return json.loads(body)

    def start_ticking(self) -> None:
        last = [time.thread_time()]

        def tick() -> None:
            now = time.thread_time()
            self.ticks.append(now - last[0])
            last[0] = now
            self._timer = self.reactor.call_later(TICK, tick)
        self._timer = self.reactor.call_later(TICK, tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for exchange in self.exchanges:
            exchange.close()
        for _ in range(3):
            self.reactor.run_once(0)
        self.reactor.close()


class Exchange(Client):
    """The client end of one request (``test_cli_stream.Client``): the answer once the server closed."""

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
        assert int(headers["content-length"]) == len(body) or not body
        return int(lines[0].split()[1]), headers, body


@pytest.fixture
def bed_of():
    beds: list[WebBed] = []

    def make(source: Source) -> WebBed:
        beds.append(WebBed(source))
        return beds[-1]
    yield make
    for bed in beds:
        bed.close()


# -- requests ---------------------------------------------------------------------------------------


def test_request_lines_are_read_or_refused() -> None:
    assert parse_request(b"GET /api/table?section=a&table=t.aggr&sort=key HTTP/1.1\r\n\r\n") == \
        Request(False, "/api/table", {"section": "a", "table": "t.aggr", "sort": "key"})
    assert parse_request(b"HEAD / HTTP/1.0\r\n\r\n") == Request(True, "/", {})
    assert parse_request(b"GET /api/key?key=%3Cscript%3E HTTP/1.1\r\n\r\n").params == {"key": "<script>"}
    assert parse_request(b"POST / HTTP/1.1\r\n\r\n").status == 405
    assert parse_request(b"DELETE /api/table HTTP/1.1\r\n\r\n").status == 405
    assert parse_request(b"GET http://elsewhere/ HTTP/1.1\r\n\r\n").status == 400
    assert parse_request(b"GET / SPDY/3\r\n\r\n").status == 400
    many = "&".join(f"p{i}=1" for i in range(40))
    assert parse_request(f"GET /?{many} HTTP/1.1\r\n\r\n".encode()) == HttpError(400, "too many query parameters\n")


def test_the_page_its_files_and_the_metrics_are_served_with_the_security_headers(bed_of) -> None:
    bed = bed_of(Source(fill(10, 2), 2))
    for path, media, needle in (("/", "text/html", b'<script src="dashboard.js"'),
                                ("/dashboard.js", "text/javascript", b"textContent"),
                                ("/dashboard.css", "text/css", b"body"),
                                ("/metrics", "text/plain; version=0.0.4", b"hapee_stktagg_table_entries")):
        status, headers, body = bed.get(path)
        assert status == 200 and headers["content-type"].startswith(media) and needle in body, path
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    # Nothing is loaded from elsewhere: the page names no other origin.
    for path in ("/", "/dashboard.js", "/dashboard.css"):
        body = bed.get(path)[2]
        assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in body, path
    # The page never writes received text as markup.
    assert b"innerHTML" not in bed.get("/dashboard.js")[2]
    status, headers, body = bed.get("/", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /api/table HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 405),
    (b"GET /etc/passwd HTTP/1.1\r\n\r\n", 404),
    (b"GET /../stktagg/web.py HTTP/1.1\r\n\r\n", 404),
    (b"GET /api/table?section=agg&table=nope HTTP/1.1\r\n\r\n", 404),
    (b"GET /api/table?section=nope&table=big.aggr HTTP/1.1\r\n\r\n", 404),
    (b"GET /api/table?section=agg&table=big.aggr&sort=nope HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/table?section=agg&table=big.aggr&limit=0 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/table?section=agg&table=big.aggr&order=up HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/key?section=agg&table=big.aggr&key=not-an-ip HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/key?section=agg&table=big.aggr HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"garbage\r\n\r\n", 400),
])
def test_bad_requests_get_a_clear_answer_and_change_nothing(bed_of, request_bytes: bytes, status: int) -> None:
    source = Source(fill(50, 2), 2)
    bed = bed_of(source)
    exchange = bed.send(request_bytes)
    assert bed.reactor.run_until(lambda: exchange.eof, TIMEOUT)
    got, headers, body = exchange.answer()
    assert got == status, body
    if status == 405:
        assert headers["allow"] == "GET, HEAD"
    if headers["content-type"] == "application/json":
        assert json.loads(body)["error"]
    assert len(source.table) == 50


# -- the table API ------------------------------------------------------------------------------------


def expected_top(source: Source, sort: str, descending: bool, limit: int, text: str = "") -> list[str]:
    """The keys ``/api/table`` must list, worked out from the table's own rows."""
    now_ms = table_ms(source.clock.now())
    rows = []
    for key, agg, expire, _ in source.status().sections[0].tables[0].rows(now_ms):
        shown = format_key(source.table.definition.key_type, key)
        if text not in shown:
            continue
        value = {"key": key, "http_req_cnt": agg[0], "http_req_rate": read_rate(agg[1], 10_000),
                 "expire": expire}[sort]
        rows.append((value, key, shown))
    rows.sort(reverse=descending)
    return [shown for _, _, shown in rows[:limit]]


@pytest.mark.parametrize("sort, order", [("http_req_cnt", "desc"), ("http_req_cnt", "asc"), ("key", "asc"),
                                         ("key", "desc"), ("http_req_rate", "desc")])
def test_a_table_sorted_by_any_column(bed_of, sort: str, order: str) -> None:
    source = Source(fill(3000, 3), 3)
    bed = bed_of(source)
    data = bed.api(f"/api/table?section=agg&table=big.aggr&sort={sort}&order={order}&limit=25")
    assert [row["key"] for row in data["rows"]] == expected_top(source, sort, order == "desc", 25)
    assert data["scanned"] == data["matched"] == data["entries"] == 3000
    assert data["columns"] == ["http_req_cnt", "http_req_rate"] and data["peers"] == ["P0", "P1", "P2"]
    first = data["rows"][0]
    # each key's sum is the sum of its parts, each node's part as the table holds it
    assert first["values"]["http_req_cnt"] == sum(p["values"]["http_req_cnt"] for p in first["peers"])
    assert [p["name"] for p in first["peers"]] == ["P0", "P1", "P2"]


def test_the_default_order_is_top_talkers_by_rate_first(bed_of) -> None:
    source = Source(fill(500, 2), 2)
    data = bed_of(source).api("/api/table?section=agg&table=big.aggr")
    assert (data["sort"], data["order"], data["limit"]) == ("http_req_rate", "desc", 100)
    assert [row["key"] for row in data["rows"]] == expected_top(source, "http_req_rate", True, 100)


def test_the_filter_keeps_the_keys_whose_text_holds_it(bed_of) -> None:
    source = Source(fill(3000, 2), 2)
    data = bed_of(source).api("/api/table?section=agg&table=big.aggr&sort=key&filter=10.0.1.&limit=1000")
    assert [row["key"] for row in data["rows"]] == expected_top(source, "key", False, 1000, "10.0.1.")
    assert data["matched"] == 256 and data["scanned"] == 3000


def test_one_key_with_its_parts(bed_of) -> None:
    source = Source(fill(100, 2), 2)
    bed = bed_of(source)
    data = bed.api("/api/key?section=agg&table=big.aggr&key=10.0.0.7")
    assert data["found"] and data["row"]["key"] == "10.0.0.7"
    assert [p["name"] for p in data["row"]["peers"]] == ["P0", "P1"]
    assert not bed.api("/api/key?section=agg&table=big.aggr&key=192.0.2.1")["found"]


def test_overview_lists_sections_peers_and_tables(bed_of) -> None:
    data = bed_of(Source(fill(10, 2), 2)).api("/api/overview")
    section = data["sections"][0]
    assert [p["name"] for p in section["peers"]] == ["P0", "P1"]
    assert section["peers"][0]["state"] == "established" and section["peers"][0]["role"] == "down"
    assert section["tables"][0]["name"] == "big.aggr" and section["tables"][0]["entries"] == 10


# -- a big table: bounded turns, shared scans, the cache ----------------------------------------------


BIG = 200_000


@pytest.fixture(scope="module")
def big_table():
    return fill(BIG, 2)


def test_a_big_table_is_scanned_in_bounded_turns(bed_of, big_table) -> None:
    source = Source(big_table, 2)
    bed = bed_of(source)
    bed.start_ticking()
    started = time.monotonic()
    exchange = bed.send(b"GET /api/table?section=agg&table=big.aggr&sort=http_req_cnt&filter=.7&limit=100"
                        b" HTTP/1.1\r\n\r\n")
    assert bed.reactor.run_until(lambda: exchange.eof, TIMEOUT)
    took = time.monotonic() - started
    status, _, body = exchange.answer()
    data = json.loads(body)
    assert status == 200 and data["scanned"] == BIG and len(data["rows"]) == 100
    assert [r["key"] for r in data["rows"]] == expected_top(source, "http_req_cnt", True, 100, ".7")
    longest = max(bed.ticks)
    print(f"\n{BIG:,} keys scanned in {took:.2f} s; longest turn {longest * 1000:.1f} ms CPU "
          f"over {len(bed.ticks)} ticks")
    assert len(bed.ticks) >= 5  # the scan took several turns: the loop ran its timer meanwhile
    assert longest < 0.100  # the loop's budget (50 ms), with room for a slow machine's step


def test_identical_queries_share_one_scan_then_the_cache(bed_of, big_table) -> None:
    source = Source(big_table, 2)
    bed = bed_of(source)
    table = source.status().sections[0].tables[0]
    original = type(table).column

    path = b"GET /api/table?section=agg&table=big.aggr&limit=10 HTTP/1.1\r\n\r\n"
    counted = []

    def counting(self, stripe, keys, now_ms, column):
        counted.append(len(keys))
        return original(self, stripe, keys, now_ms, column)
    type(table).column = counting
    try:
        exchanges = [bed.send(path) for _ in range(3)]
        assert bed.reactor.run_until(lambda: all(e.eof for e in exchanges), TIMEOUT)
        bodies = {e.answer()[2] for e in exchanges}
        assert len(bodies) == 1 and sum(counted) == BIG  # one scan for the three
        again = bed.send(path)
        assert bed.reactor.run_until(lambda: again.eof, TIMEOUT)
        assert again.answer()[2] in bodies and sum(counted) == BIG  # from the cache
        source.clock.advance(CACHE_SECONDS + 0.1)
        later = bed.send(path)
        assert bed.reactor.run_until(lambda: later.eof, TIMEOUT)
        assert sum(counted) == 2 * BIG  # the cache is short-lived: a new scan
    finally:
        type(table).column = original


def test_too_many_different_scans_at_once_get_503(bed_of, big_table) -> None:
    bed = bed_of(Source(big_table, 2))
    exchanges = [bed.send(f"GET /api/table?section=agg&table=big.aggr&limit={n} HTTP/1.1\r\n\r\n".encode())
                 for n in range(1, MAX_SCANS + 2)]
    assert bed.reactor.run_until(lambda: all(e.eof for e in exchanges), TIMEOUT)
    statuses = sorted(e.answer()[0] for e in exchanges)
    assert statuses == [200] * MAX_SCANS + [503]


def test_a_client_gone_during_a_scan_costs_nothing_else(bed_of, big_table) -> None:
    bed = bed_of(Source(big_table, 2))
    gone = bed.send(b"GET /api/table?section=agg&table=big.aggr&limit=5 HTTP/1.1\r\n\r\n")
    bed.reactor.run_once(0)
    bed.reactor.remove_reader(gone.sock)
    gone.sock.close()
    status, _, _ = bed.get("/api/table?section=agg&table=big.aggr&limit=5")
    assert status == 200


def test_queries_are_checked_before_any_scan() -> None:
    source = Source(fill(10, 1), 1)
    with pytest.raises(ApiError) as info:
        TableQuery.parse(source.status(), {"section": "agg", "table": "big.aggr", "filter": "x" * 300})
    assert info.value.status == 400
    query = TableQuery.parse(source.status(), {"section": "agg", "table": "big.aggr", "filter": "ABC"})
    assert query.filter == "abc" and query.sort == "http_req_rate" and query.descending
