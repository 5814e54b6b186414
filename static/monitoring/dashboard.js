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
  const usd = (v) => "$" + Number(v).toFixed(v < 1 ? 4 : 2);
  const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 0));
  const layout = (title, extra) => Object.assign({
    title: { text: title, font: { size: 14 } }, uirevision: "keep",
    margin: { l: 50, r: 10, t: 36, b: 72 }, height: 290,
    legend: { orientation: "h", x: 0, y: -0.32, yanchor: "top" },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
  }, extra || {});
  const config = { displaylogo: false, responsive: true };

  function text(el, value) { if (el.textContent !== value) el.textContent = value; }

  function renderKpis(k) {
    root.querySelectorAll("[data-kpi]").forEach((el) => {
      const name = el.dataset.kpi;
      if (name === "latency") text(el, `${ms(k.p50_ms)} / ${ms(k.p95_ms)} / ${ms(k.p99_ms)} ms`);
      else if (name === "hits") text(el, `${k.exact_hits} / ${k.semantic_hits}`);
      else if (el.dataset.format === "percent") text(el, percent(k[name]));
      else if (el.dataset.format === "usd") text(el, usd(k[name]));
      else text(el, String(k[name]));
    });
  }

  function renderCharts(s) {
    const t = s.series.t;
    Plotly.react("chart-requests", [
      { x: t, y: s.series.requests, name: "requests", type: "bar" },
      { x: t, y: s.series.errors, name: "errors", type: "bar", marker: { color: "#d62728" } },
      // Colours set: Plotly's fourth default is the errors' red.
      { x: t, y: s.series.exact_hits, name: "exact hits", type: "scatter",
        line: { color: "#2ca02c" } },
      { x: t, y: s.series.semantic_hits, name: "semantic hits", type: "scatter",
        line: { color: "#9467bd" } },
    ], layout("Requests, errors and cache hits", { barmode: "overlay" }), config);
    Plotly.react("chart-latency", ["p50_ms", "p95_ms", "p99_ms"].map((name) => (
      { x: t, y: s.series[name], name: name.replace("_ms", ""), type: "scatter",
        mode: "lines+markers", marker: { size: 4 }, connectgaps: false }
    )), layout("Latency (ms)", { yaxis: { type: "log", dtick: 1 } }), config);
    Plotly.react("chart-models", [{
      x: s.by_model.map((m) => m.model), y: s.by_model.map((m) => m.requests), type: "bar",
      name: "requests",
    }], layout("Requests by model"), config);
    Plotly.react("chart-tiers", [{
      x: Object.keys(s.tiers), y: Object.values(s.tiers), type: "bar", name: "hits",
    }], layout("Cache hits by tier"), config);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    cells.forEach((cell) => {
      const td = document.createElement("td");
      if (Array.isArray(cell)) {
        const ul = document.createElement("ul");
        cell.forEach((tip) => { const li = document.createElement("li"); li.textContent = tip; ul.appendChild(li); });
        td.appendChild(ul);
      } else td.textContent = cell;
      tr.appendChild(td);
    });
    return tr;
  }

  function renderTables(s) {
    const endpoints = document.querySelector("#endpoints tbody");
    endpoints.replaceChildren(...s.endpoints.map((e) => {
      const tr = row([e.endpoint, e.circuit, e.requests, percent(e.error_rate), ms(e.p95_ms), e.last_error]);
      tr.className = "circuit-" + e.circuit;
      return tr;
    }));
    // The same failure repeated (an open circuit, say) is one row with a count.
    const groups = new Map();
    s.recent_errors.forEach((e) => {
      const key = [e.model, e.endpoint, e.status, e.error_class, e.message].join("\u0000");
      const group = groups.get(key);
      if (group) { group.count += 1; group.first = e.at; } else groups.set(key, { e, count: 1, first: e.at });
    });
    const errors = document.querySelector("#errors tbody");
    errors.replaceChildren(...[...groups.values()].map(({ e, count, first }) => {
      const last = new Date(e.at).toLocaleTimeString();
      const when = count > 1 ? `${last} (×${count} since ${new Date(first).toLocaleTimeString()})` : last;
      return row([when, e.model, e.endpoint, e.status, `${e.error_class}: ${e.message}`, e.tips]);
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

  root.parentElement.querySelectorAll("[data-window]").forEach((button) => {
    button.addEventListener("click", () => {
      windowName = button.dataset.window;
      document.querySelectorAll("[data-window]").forEach((b) => b.classList.toggle("active", b === button));
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ window: windowName }));
    });
  });

  render(JSON.parse(document.getElementById("first-snapshot").textContent));
  connect();
})();
