// The dashboard of hapee-stktagg (issue 19): polls the daemon's read-only JSON API and draws it.
// Keys and names come from the network and may be hostile: they are only ever written as
// text (textContent, attributes through setAttribute), never parsed as markup.
"use strict";

(() => {
  const POLL_MS = 2000;          // time between the end of one poll and the next
  const KEY_POINTS = 150;        // a chosen key's chart keeps this many polls (5 minutes)
  const SVG = "http://www.w3.org/2000/svg";

  // What is shown: kept in the location's hash, so a view can be bookmarked or shared.
  const view = {section: "", table: "", sort: "", order: "", filter: "", limit: "100", key: ""};
  let overview = null;           // the last /api/overview answer
  let keySeries = [];            // [time, value] of the chosen key
  let timer = null;
  let polls = 0;                 // polls answered whole since the page was loaded

  const $ = (id) => document.getElementById(id);

  // An element with attributes and children (strings become text nodes: never markup).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const name of Object.keys(view)) view[name] = params.get(name) || (name === "limit" ? "100" : "");
  }

  function writeHash() {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(view)) if (value) params.set(name, value);
    history.replaceState(null, "", "#" + params.toString());
  }

  function query(params) {
    return new URLSearchParams(params).toString();
  }

  async function getJSON(path) {
    const answer = await fetch(path, {cache: "no-store"});
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.error || answer.statusText);
    return data;
  }

  function ago(wall, now) {
    if (!wall) return "never";
    const s = Math.max(0, Math.round(now - wall));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24, m = Math.floor(seconds / 60) % 60;
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${seconds % 60}s`;
  }

  const number = (value) => (value === null || value === undefined) ? "\u2013" : String(value);

  // -- charts ------------------------------------------------------------------------------------

  // Draws series of [x, y] points in an SVG whose viewBox is 600 x 120; x from xMin to xMax.
  function drawChart(svg, seriesList, xMin, xMax) {
    while (svg.firstChild) svg.firstChild.remove();
    let top = 1;
    for (const series of seriesList) for (const [, y] of series.points) top = Math.max(top, y);
    for (const series of seriesList) {
      if (!series.points.length) continue;
      const line = document.createElementNS(SVG, "polyline");
      const span = Math.max(1e-9, xMax - xMin);
      line.setAttribute("points", series.points.map(([x, y]) =>
        `${((x - xMin) / span * 600).toFixed(1)},${(118 - y / top * 112).toFixed(1)}`).join(" "));
      line.setAttribute("class", series.name);
      svg.append(line);
    }
    return top;
  }

  function drawTrend(data) {
    const received = data.trend.map(([t, r]) => [t, r]);
    const pushed = data.trend.map(([t, , p]) => [t, p]);
    // The last five minutes once there are; until then the span there is (at least a minute).
    const span = Math.min(300, Math.max(60, data.trend.length ? -data.trend[0][0] : 0));
    const top = drawChart($("trend"), [{name: "in", points: received}, {name: "out", points: pushed}], -span, 0);
    $("trend-span").textContent = span >= 300 ? "5 minutes" : Math.round(span) + " s";
    $("trend-max").textContent = String(top);
  }

  // -- the overview: figures, sections, peers, tables -------------------------------------------------

  function renderOverview(data) {
    $("version").textContent = `${data.version} on ${data.python}, pid ${data.pid}`;
    $("rate-in").textContent = number(data.rates.updates_received_per_s_1s);
    $("rate-out").textContent = number(data.rates.updates_pushed_per_s_1s);
    $("loop").textContent = data.loop.longest_turn_ms_1m + " ms";
    $("uptime").textContent = duration(data.uptime_s);
    let entries = 0;
    for (const section of data.sections) for (const table of section.tables) entries += table.entries;
    $("entries").textContent = String(entries);
    drawTrend(data);

    const holder = $("sections");
    const parts = [];
    for (const section of data.sections) {
      const peers = el("table", {class: "peers"},
        el("thead", {}, el("tr", {}, ...["peer", "role", "state", "address", "last hello", "received/s",
          "sent/s", "received", "sent", "last error"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...section.peers.map((p) => el("tr", {class: "peer " + p.state, "data-peer": p.name},
          el("td", {"data-f": "name"}, p.name), el("td", {"data-f": "role"}, p.role),
          el("td", {"data-f": "state"}, el("span", {class: "state " + p.state}, p.state)),
          el("td", {"data-f": "address"}, p.address + (p.tls ? " (TLS)" : "")),
          el("td", {"data-f": "last_hello"}, ago(p.last_hello, data.now)),
          el("td", {"data-f": "updates_in_per_s", class: "num"}, number(p.updates_in_per_s)),
          el("td", {"data-f": "updates_out_per_s", class: "num"}, number(p.updates_out_per_s)),
          el("td", {"data-f": "updates_in", class: "num"}, number(p.updates_in)),
          el("td", {"data-f": "updates_out", class: "num"}, number(p.updates_out)),
          el("td", {"data-f": "last_error", class: "error"}, p.last_error)))));
      const tables = el("table", {class: "tables"},
        el("thead", {}, el("tr", {}, ...["table", "kind", "from", "entries", "history"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...section.tables.map((t) => {
          const link = el("a", {href: "#" + query({section: section.name, table: t.name}), "data-table": t.name},
            t.name);
          link.addEventListener("click", (event) => {
            event.preventDefault();
            choose({section: section.name, table: t.name, sort: "", order: "", filter: "", key: ""});
          });
          const current = section.name === view.section && t.name === view.table;
          return el("tr", {class: current ? "table current" : "table", "data-table": t.name},
            el("td", {}, link), el("td", {}, t.mode), el("td", {}, t.source),
            el("td", {class: "num", "data-f": "entries"}, String(t.entries)), el("td", {}, t.history.join(" ")));
        })));
      parts.push(el("section", {class: "section", "data-section": section.name},
        el("h2", {}, "aggregations ", el("span", {class: "name"}, section.name)), peers, tables));
    }
    holder.replaceChildren(...parts);
  }

  // -- a table's keys ---------------------------------------------------------------------------

  function renderTable(data) {
    $("table-view").hidden = false;
    $("table-title").replaceChildren(el("span", {class: "name"}, data.table), ` in aggregations ${data.section}`);
    $("table-info").textContent = `${data.rows.length} of ${data.matched} keys` +
      (data.filter ? ` holding \u201c${data.filter}\u201d` : "") +
      ` (${data.entries} in the table; read in ${data.scan_ms} ms, ${ago(data.now, Date.now() / 1000)})`;
    const head = el("tr", {});
    for (const name of ["key", ...data.columns, "expire"]) {
      const sorted = name === data.sort;
      const th = el("th", {"data-sort": name, class: sorted ? "sorted " + data.order : "sortable",
        "aria-sort": sorted ? (data.order === "desc" ? "descending" : "ascending") : null,
        title: "sort by " + name}, name, sorted ? (data.order === "desc" ? " \u25bc" : " \u25b2") : "");
      th.addEventListener("click", () => {
        const order = sorted ? (data.order === "desc" ? "asc" : "desc") : (name === "key" ? "asc" : "desc");
        choose({sort: name, order: order});
      });
      head.append(th);
    }
    const rows = [];
    const width = data.columns.length + 2;
    for (const row of data.rows) {
      const key = el("a", {href: "#", class: "key-link", title: "chart this key"}, row.key);
      key.addEventListener("click", (event) => { event.preventDefault(); choose({key: row.key}); });
      rows.push(el("tr", {class: row.expire === null ? "key expired" : "key", "data-key": row.key},
        el("td", {class: "key"}, key),
        ...data.columns.map((c) => el("td", {class: "num", "data-col": c}, String(row.values[c]))),
        el("td", {class: "expire"}, row.expire === null ? "expired" : (row.expire / 1000).toFixed(1) + " s")));
      for (const part of row.peers) {
        const expired = part.expire === null;
        rows.push(el("tr", {class: expired ? "part expired" : "part", "data-key": row.key, "data-peer": part.name},
          el("td", {class: "who"}, "\u21b3 ", part.name, expired ? " (expired)" : ""),
          ...data.columns.map((c) => el("td", {class: "num", "data-col": c}, String(part.values[c]))),
          el("td", {class: "expire"}, expired ? "expired" : (part.expire / 1000).toFixed(1) + " s")));
      }
      for (const [name, values] of Object.entries(row.history || {})) {
        rows.push(el("tr", {class: "history", "data-key": row.key, "data-history": name},
          el("td", {class: "who"}, "\u21b3 ", name),
          ...data.columns.map((c) => el("td", {class: "num", "data-col": c},
            values && c in values ? String(values[c]) : "\u2013")),
          el("td", {}, "")));
      }
    }
    if (!data.rows.length) {
      rows.push(el("tr", {class: "none"}, el("td", {colspan: width}, "no key")));
    }
    $("keys").tHead.replaceChildren(head);
    $("keys").tBodies[0].replaceChildren(...rows);
  }

  // -- the chosen key's chart ---------------------------------------------------------------------

  function keyColumn(data) {
    if (view.sort && data.columns.includes(view.sort)) return view.sort;
    return data.columns.find((c) => c.endsWith("_rate")) || data.columns[0];
  }

  function renderKey(data) {
    $("key-view").hidden = false;
    $("key-title").textContent = `${data.row ? data.row.key : view.key} in ${data.table}`;
    const column = keyColumn(data);
    $("key-column").textContent = column || "";
    if (data.row && column) keySeries.push([data.now, Number(data.row.values[column]) || 0]);
    if (keySeries.length > KEY_POINTS) keySeries = keySeries.slice(-KEY_POINTS);
    const now = data.now;
    const span = Math.min(300, Math.max(60, keySeries.length ? now - keySeries[0][0] : 0));
    const top = drawChart($("key-chart"), [{name: "in", points: keySeries.map(([t, v]) => [t - now, v])}], -span, 0);
    $("key-max").textContent = String(top);
  }

  // -- polling ----------------------------------------------------------------------------------

  function choose(changes) {
    const keyChanged = "key" in changes && changes.key !== view.key;
    Object.assign(view, changes);
    if (keyChanged || "table" in changes) keySeries = [];
    writeHash();
    poll();
  }

  function pickDefault() {
    if (view.table || !overview) return;
    for (const section of overview.sections) {
      const table = section.tables.find((t) => t.mode === "aggregate") || section.tables[0];
      if (table) { view.section = section.name; view.table = table.name; return; }
    }
  }

  async function poll() {
    clearTimeout(timer);
    try {
      overview = await getJSON("api/overview");
      pickDefault();
      renderOverview(overview);
      if (view.table) {
        const params = {section: view.section, table: view.table, limit: view.limit};
        if (view.sort) params.sort = view.sort;
        if (view.order) params.order = view.order;
        if (view.filter) params.filter = view.filter;
        renderTable(await getJSON("api/table?" + query(params)));
      }
      if (view.key && view.table) {
        renderKey(await getJSON("api/key?" + query({section: view.section, table: view.table, key: view.key})));
      } else {
        $("key-view").hidden = true;
      }
      polls += 1;
      document.body.dataset.polls = String(polls);  // complete polls (what a test waits for)
      $("status").textContent = "live \u00b7 " + new Date().toLocaleTimeString();
      $("status").className = "status live";
    } catch (error) {
      $("status").textContent = "not answering: " + error.message;
      $("status").className = "status down";
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function start() {
    readHash();
    $("filter").value = view.filter;
    $("limit").value = view.limit;
    let typing = null;
    $("filter").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => choose({filter: $("filter").value.trim()}), 300);
    });
    $("limit").addEventListener("change", () => choose({limit: $("limit").value}));
    window.addEventListener("hashchange", () => { readHash(); keySeries = []; poll(); });
    poll();
  }

  start();
})();
