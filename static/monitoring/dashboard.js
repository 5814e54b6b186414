// BeastMode dashboard: first paint from the server, then a snapshot every 5 s over a
// websocket. Charts update with Plotly.react (uirevision keeps zoom and hover); the
// socket is closed while the tab is hidden and reopened when it is shown again.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  const status = document.getElementById("status");
  let windowName = root.dataset.window;
  let socket = null;
  let updates = 0;

  const percent = (v) => (v * 100).toFixed(v < 0.1 ? 2 : 1) + "%";
  // Significant digits, not fixed decimals: $0.000123, $1.23, $12,345.
  const usd = (v) => "$" + (v >= 1000 ? Math.round(v).toLocaleString("en-US")
    : v >= 1 ? v.toFixed(2) : v.toLocaleString("en-US", { maximumSignificantDigits: 3 }));
  const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 0));
  const clock = (iso) => new Date(iso).toLocaleTimeString();
  // Plotly has no time zones: hand it local wall-clock times, as the tables show them.
  const local = (epochMs) => new Date(epochMs - new Date(epochMs).getTimezoneOffset() * 60000)
    .toISOString().slice(0, 19).replace("T", " ");
  // Touch screens have no hover: Plotly's modebar would stay over the chart, so it goes.
  const touch = window.matchMedia("(hover: none)").matches;
  const config = { displaylogo: false, responsive: true, displayModeBar: touch ? false : "hover" };
  // Titles are the figures' captions (HTML), so the modebar never covers one.
  const layout = (extra) => Object.assign({
    uirevision: "keep", height: 280, margin: { l: 48, r: 12, t: 28, b: 40 },
    legend: { orientation: "h", x: 0, y: -0.15, yanchor: "top", traceorder: "normal" },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
  }, extra || {});

  function text(el, value) { if (el.textContent !== value) el.textContent = value; }

  function renderKpis(k) {
    root.querySelectorAll("[data-kpi]").forEach((el) => {
      const name = el.dataset.kpi;
      if (name === "latency") text(el, `${ms(k.p50_ms)} / ${ms(k.p95_ms)} / ${ms(k.p99_ms)} ms`);
      else if (el.dataset.format === "percent") text(el, percent(k[name]));
      else if (el.dataset.format === "usd") text(el, usd(k[name]));
      else text(el, String(k[name]));
    });
  }

  function renderCharts(s) {
    // Each point is drawn in the middle of its bucket, and the axis spans the buckets the
    // series has: from the first traffic when it is younger than the window.
    const period = s.series.bucket_s * 1000;
    const starts = s.series.t.map((iso) => Date.parse(iso));
    const t = starts.map(local);
    const time = { xperiod: period, xperiodalignment: "middle" };
    const xaxis = { type: "date", range: starts.length
      ? [local(starts[0]), local(starts[starts.length - 1] + period)] : undefined };
    const answered = s.series.requests.map((n, i) => n - s.series.errors[i] - s.series.rejected[i]);
    const bar = (y, name, color) => Object.assign(
      { x: t, y, name, type: "bar", width: period * 0.9, marker: { color } }, time);
    const line = (y, name, color) => Object.assign(
      { x: t, y, name, type: "scatter", mode: "lines", line: { color } }, time);
    // Stacked: a bar's height is its requests. Colours set: Plotly's defaults repeat red.
    Plotly.react("chart-requests", [
      bar(answered, "answered", "#1f77b4"),
      bar(s.series.errors, "failed", "#d62728"),
      bar(s.series.rejected, "rejected", "#ff7f0e"),
      line(s.series.exact_hits, "exact hits", "#2ca02c"),
      line(s.series.semantic_hits, "semantic hits", "#9467bd"),
    ], layout({ barmode: "stack", xaxis, yaxis: { rangemode: "nonnegative" } }), config);
    // A bucket without requests has no latency: the line goes on to the next one.
    Plotly.react("chart-latency", ["p50_ms", "p95_ms", "p99_ms"].map((name) => Object.assign(
      { x: t, y: s.series[name], name: name.replace("_ms", ""), type: "scatter",
        mode: "lines+markers", marker: { size: 4 }, connectgaps: true }, time)
    ), layout({ xaxis, yaxis: { type: "log", dtick: 1 } }), config);
    // Horizontal bars: model names stay readable on a phone.
    const models = s.by_model.slice().reverse();
    Plotly.react("chart-models", [{
      y: models.map((m) => m.model), x: models.map((m) => m.requests), type: "bar",
      orientation: "h", name: "requests",
    }], layout({ height: Math.max(200, 60 + 24 * models.length), showlegend: false,
                 yaxis: { automargin: true } }), config);
    const hits = Object.values(s.tiers);
    Plotly.react("chart-tiers", [{ x: Object.keys(s.tiers), y: hits, type: "bar", name: "hits" }],
      layout({ showlegend: false, yaxis: { range: [0, Math.max(1, ...hits) * 1.05] } }), config);
  }

  function row(table, cells) {
    const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
    const tr = document.createElement("tr");
    cells.forEach((cell, i) => {
      const td = document.createElement("td");
      td.dataset.label = labels[i];
      if (Array.isArray(cell)) {
        const ul = document.createElement("ul");
        cell.forEach((tip) => { const li = document.createElement("li"); li.textContent = tip; ul.appendChild(li); });
        td.appendChild(ul);
      } else if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell;
      tr.appendChild(td);
    });
    return tr;
  }

  function renderTables(s) {
    const endpoints = document.getElementById("endpoints");
    endpoints.tBodies[0].replaceChildren(...s.endpoints.map((e) => {
      const tr = row(endpoints, [e.endpoint, e.circuit, e.requests, percent(e.error_rate), ms(e.p95_ms), e.last_error]);
      tr.className = "circuit-" + e.circuit;
      return tr;
    }));
    const keyName = (k) => k.prefix ? `${k.name} (${k.prefix}…)` : k.name;
    const used = (k) => k.budget_used === null ? "—" : percent(k.budget_used);
    const topKeys = document.getElementById("top-keys");
    topKeys.tBodies[0].replaceChildren(...s.top_keys.map((k) =>
      row(topKeys, [keyName(k), k.requests, usd(k.cost_usd), used(k)])));
    const near = document.getElementById("near-budget");
    near.tBodies[0].replaceChildren(...s.keys_near_budget.map((k) => {
      const tr = row(near, [keyName(k), usd(k.cost_usd), usd(k.budget_usd), used(k)]);
      if (k.budget_used >= 1) tr.className = "over-budget";
      return tr;
    }));
    // One row per kind of error (the server groups them): its latest, and how many.
    const errors = document.getElementById("errors");
    errors.tBodies[0].replaceChildren(...s.recent_errors.map((e) => {
      const when = document.createElement("span");
      const [last, first] = [clock(e.at), clock(e.first_at)];
      when.textContent = e.count === 1 ? last
        : `${last} (×${e.count}${first === last ? "" : " since " + first})`;
      if (e.cause_of) {
        const tag = document.createElement("span");
        tag.className = "cause";
        tag.textContent = "cause of " + e.cause_of;
        when.appendChild(tag);
      }
      return row(errors, [when, e.model, e.endpoint, e.status, `${e.error_class}: ${e.message}`, e.tips]);
    }));
  }

  function render(snapshot) {
    renderKpis(snapshot.kpis);
    renderCharts(snapshot);
    renderTables(snapshot);
    root.dataset.updates = String(updates);
    root.dataset.window = snapshot.window;
    root.dataset.generatedAt = snapshot.generated_at;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.socketPath);
    socket.onopen = () => { text(status, "live"); socket.send(JSON.stringify({ window: windowName })); };
    socket.onmessage = (event) => {
      const snapshot = JSON.parse(event.data);
      if (snapshot.window !== windowName) return;
      updates += 1;
      render(snapshot);
      text(status, "live · updated " + new Date(snapshot.generated_at).toLocaleTimeString());
    };
    socket.onclose = () => {
      text(status, "disconnected");
      socket = null;
      if (!document.hidden) setTimeout(connect, 3000);
    };
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden && socket) socket.close();  // idle while nobody looks
    else if (!document.hidden && !socket) connect();
  });

  // (The buttons only: <main> has a data-window too.)
  const buttons = document.querySelectorAll(".windows button[data-window]");
  buttons.forEach((button) => {
    button.addEventListener("click", () => {
      windowName = button.dataset.window;
      buttons.forEach((b) => b.classList.toggle("active", b === button));
      // The URL names the window: a reload or a shared link shows the same one.
      const url = new URL(location.href);
      url.searchParams.set("window", windowName);
      history.replaceState(null, "", url);
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ window: windowName }));
    });
  });

  render(JSON.parse(document.getElementById("first-snapshot").textContent));
  connect();
})();
