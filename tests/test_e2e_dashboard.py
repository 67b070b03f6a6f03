"""The dashboard (issue 19) in a real browser, after traffic on real HAProxy nodes.

Nodes A and B count requests per key; the aggregator sums them and serves its
dashboard at ``http <ip:port>``. Headless Chromium (Debian's ``chromium``) loads
the page, runs its script against the daemon's API and dumps the rendered DOM,
which the test reads: each key's sum and each node's part against what HAProxy
itself shows (``show table``), the peers against ``show peers``, the order the
page was asked for, a node's expired part marked, the history table beside the
aggregate, and hostile keys shown as text, never run. A screenshot of the same
page is written too (``STKTAGG_SCREENSHOT=path`` keeps it: the README's image).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser

import pytest

from harness import (CONVERGE_TIMEOUT, Aggregator, Cluster, HaproxyNode, TableSpec, aggregator_config, fresh_loopback,
                     need_haproxy, version_params, wait_for)

pytestmark = pytest.mark.e2e
VERSIONS = version_params()
PORT = 11300
WEB_PORT = 11310
CHROMIUM = shutil.which("chromium")
#: Keys an attacker chooses: markup that would run if the page wrote keys as HTML.
HOSTILE = ("<script>document.title='pwned'</script>", "<img src=x onerror=\"document.title='pwned'\">")
TABLE = TableSpec("mytable", "string len 64", "http_req_cnt,http_req_rate(10s)", aggr_suffixes=(".aggr", ".peak"))
#: A short expiry, for a node's part that expires while the other's lives on.
SHORT = TableSpec("short", "string len 64", "http_req_cnt", header="x-short", fetch="req.hdr(x-short)", expire="3s")


class Element:
    """An element of the dumped DOM: its tag, attributes, children (elements and strings)."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: "Element | None") -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element | str] = []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def all(self, tag: str | None = None, **attrs: str) -> list["Element"]:
        """Every element below (depth first) with that tag and those attributes (``class_`` for one class)."""
        found = []
        for child in self.children:
            if isinstance(child, str):
                continue
            wanted = "class_" not in attrs or attrs["class_"] in child.classes
            if wanted and (tag is None or child.tag == tag) and all(
                    child.attrs.get(name.replace("_", "-")) == value for name, value in attrs.items()
                    if name != "class_"):
                found.append(child)
            found += child.all(tag, **attrs)
        return found

    def one(self, tag: str | None = None, **attrs: str) -> "Element":
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class DomReader(HTMLParser):
    VOID = {"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "embed", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("#document", {}, None)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(element)
        if tag not in self.VOID:
            self.current = element

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.current.children.append(Element(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def chromium(tmp_path, *args: str) -> str:
    """Run headless Chromium; its standard output. Virtual time lets the page's polls run at once."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=6000", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rendered(tmp_path, url: str) -> Element:
    """The page's DOM once its first poll is answered whole (``data-polls`` on the body: the
    page counts them). Virtual time runs the page's timers at once; a dump taken before the
    answers came is taken again."""
    for attempt in range(5):
        text = chromium(tmp_path, "--dump-dom", url)
        reader = DomReader()
        reader.feed(text)
        body = reader.root.one("body")
        if int(body.attrs.get("data-polls", "0")) >= 1:
            (tmp_path / f"dom-{attempt}.html").write_text(text)  # kept for a failure's inspection
            return reader.root
    raise AssertionError(f"the page never finished a poll: {text[-2000:]}")


def key_rows(dom: Element) -> list[Element]:
    return [row for row in dom.all("tr", class_="key")]


def cell(row: Element, column: str) -> str:
    return row.one("td", data_col=column).text


def node_count(node: HaproxyNode, table: str, key: str) -> str | None:
    """A key's ``http_req_cnt`` as HAProxy's ``show table`` prints it (which escapes a string
    key's spaces and equal signs with a backslash)."""
    shown = re.sub(r"([ =])", r"\\\1", key)
    for line in node.cli(f"show table {table}").splitlines():
        if f" key={shown} use=" in line:
            return re.search(r" http_req_cnt=(\d+)", line)[1]
    return None


class Bed(Cluster):
    def __init__(self, tmp_path, binary: str) -> None:
        self.tmp_path = tmp_path
        self.address = address = fresh_loopback()
        self.nodes = {name: HaproxyNode(name, binary, address, 18281 + i, PORT + 1 + i, tmp_path, [TABLE, SHORT],
                                        [("AGGR", address, PORT)])
                      for i, name in enumerate("AB")}
        text = aggregator_config(tmp_path, address, PORT, list(self.nodes.values()))
        text = text.replace("global\n", f"global\n    http {address}:{WEB_PORT}\n"
                                        f"    history-file {tmp_path / 'history.db'}\n", 1)
        self.aggr = Aggregator(tmp_path, text + "    history .aggr to .peak stat max window 2s\n")
        self.base = f"http://{address}:{WEB_PORT}/"

    def api(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=10) as answer:
            return json.loads(answer.read())

    def hit(self, node: str, header: str, key: str, count: int = 1) -> None:
        for _ in range(count):
            assert self.nodes[node].request({header: key}) == 200



@pytest.fixture(params=VERSIONS, ids=[v for v, _ in VERSIONS])
def haproxy(request):
    if CHROMIUM is None:
        if os.environ.get("STKTAGG_REQUIRE_MATRIX") == "1":
            pytest.fail("chromium is not installed (contrib/test.sh installs Debian's package)")
        pytest.skip("chromium is not installed")
    return need_haproxy(request.param)


def test_the_dashboard_in_a_browser_shows_what_haproxy_shows(tmp_path, haproxy):
    with Bed(tmp_path, haproxy) as bed:
        wait_for(lambda: all(n.table("mytable.aggr") == {} for n in bed.nodes.values()), what="nodes up")
        bed.hit("A", "x-key", "alice", 3)
        bed.hit("B", "x-key", "alice", 4)
        bed.hit("A", "x-key", "bob", 2)
        bed.hit("A", "x-key", HOSTILE[0])
        bed.hit("B", "x-key", HOSTILE[1])
        bed.hit("A", "x-short", "carol")
        bed.hit("B", "x-short", "carol")

        def nodes_show(key: str, count: int) -> bool:
            return all(n.table("mytable.aggr").get(key, {}).get("http_req_cnt") == str(count)
                       for n in bed.nodes.values())
        wait_for(lambda: nodes_show("alice", 7) and nodes_show("bob", 2) and all(
            node_count(n, "mytable.aggr", k) == "1" for n in bed.nodes.values() for k in HOSTILE),
            timeout=CONVERGE_TIMEOUT, what="the sums on the nodes")

        def peak_holds_the_sum() -> bool:
            row = bed.api("api/key?section=agg&table=mytable.aggr&key=alice")["row"]
            return (row["history"].get("mytable.peak") or {}).get("http_req_cnt") == 7
        wait_for(peak_holds_the_sum, timeout=CONVERGE_TIMEOUT, what="the history table holding the sum")

        # carol: A's part expires (3 s) while B's is kept alive by B's traffic.
        def a_expired_b_live() -> bool:
            bed.hit("B", "x-short", "carol")
            parts = {p["name"]: p["expire"] for p in
                     bed.api("api/key?section=agg&table=short.aggr&key=carol")["row"]["peers"]}
            return parts.get("A", 0) is None and parts.get("B") is not None
        wait_for(a_expired_b_live, timeout=CONVERGE_TIMEOUT, interval=0.5, what="A's part of carol expired")

        dom = rendered(tmp_path, bed.base + "#section=agg&table=mytable.aggr&sort=http_req_cnt&order=desc&key=alice")

        # Peers: as the page shows them, and as HAProxy does.
        for name, node in bed.nodes.items():
            row = dom.one("tr", class_="peer", data_peer=name)
            assert row.one("td", data_f="state").text == "established"
            assert int(row.one("td", data_f="updates_in").text) >= 1
            peers = node.cli("show peers")
            assert any("AGGR" in line and "ESTA" in line for line in peers.splitlines()), peers

        # The keys, in the order asked (sum of http_req_cnt, largest first), with the nodes' values.
        rows = key_rows(dom)
        assert [r.attrs["data-key"] for r in rows[:2]] == ["alice", "bob"]
        for row in rows:
            key = row.attrs["data-key"]
            assert cell(row, "http_req_cnt") == node_count(bed.nodes["A"], "mytable.aggr", key), key
        counts = [int(cell(r, "http_req_cnt")) for r in rows]
        assert counts == sorted(counts, reverse=True)
        for name, node in bed.nodes.items():
            part = dom.one("tr", class_="part", data_key="alice", data_peer=name)
            assert cell(part, "http_req_cnt") == node_count(node, "mytable.local", "alice")
            assert "expired" not in part.classes
        peak = dom.one("tr", class_="history", data_key="alice", data_history="mytable.peak")
        assert cell(peak, "http_req_cnt") == "7"

        # Hostile keys: shown as their text, and nothing of them ran or became markup.
        for hostile in HOSTILE:
            row = dom.one("tr", class_="key", data_key=hostile)
            assert row.one("td", class_="key").text == hostile
        assert dom.one("title").text == "hapee-stktagg"
        assert len(dom.all("script")) == 1 and dom.all("img") == []

        # The charts: updates/s, and the chosen key's value.
        assert len(dom.one("svg", id="trend").all("polyline")) == 2
        assert dom.one("section", id="key-view").attrs.get("hidden") is None
        assert dom.one("svg", id="key-chart").all("polyline")
        assert "live" in dom.one("span", id="status").classes

        # A node's expired part is marked; the other's is not.
        dom = rendered(tmp_path, bed.base + "#section=agg&table=short.aggr")
        assert "expired" in dom.one("tr", class_="part", data_key="carol", data_peer="A").classes
        assert "expired" not in dom.one("tr", class_="part", data_key="carol", data_peer="B").classes

        # The filter box's query: only the keys holding the text.
        dom = rendered(tmp_path, bed.base + "#section=agg&table=mytable.aggr&filter=ali")
        assert [r.attrs["data-key"] for r in key_rows(dom)] == ["alice"]
        assert dom.one("input", id="filter").attrs.get("value", "ali") == "ali"

        # A screenshot of the real page (the README's, when STKTAGG_SCREENSHOT names where to keep it).
        for key in ("dave", "erin", "frank", "grace"):
            bed.hit("A", "x-key", key, 1 + len(key))
            bed.hit("B", "x-key", key, len(key) // 2)
        picture = tmp_path / "dashboard.png"
        started = time.monotonic()
        chromium(tmp_path, f"--screenshot={picture}", "--window-size=1280,1400", "--hide-scrollbars",
                 bed.base + "#section=agg&table=mytable.aggr&sort=http_req_cnt&order=desc&key=alice")
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
        print(f"screenshot in {time.monotonic() - started:.1f} s")
        if os.environ.get("STKTAGG_SCREENSHOT"):
            shutil.copyfile(picture, os.environ["STKTAGG_SCREENSHOT"])
