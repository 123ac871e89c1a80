// The live view: sign in, open /ui/ws, keep the feed, the charts and the
// spend table up to date, reconnect (resuming from the last sequence number)
// when the socket drops.
"use strict";

(function () {
  const TOKEN_KEY = "ccag.liveview.token";
  const MAX_EVENTS = 500;          // events kept in memory for the feed
  const MAX_ROWS = 200;            // rows drawn in the table
  const CHART_SECONDS = 300;       // seconds of history the charts show
  const RECONNECT_MAX_MS = 10000;
  const PALETTE = ["#5aa9ff", "#3fb950", "#d29922", "#bc8cff", "#f85149", "#39c5cf", "#ff9bce", "#e3b341"];

  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    socket: null,
    epoch: null,
    lastSeq: null,
    events: [],
    seconds: [],
    paused: false,
    pausedNew: 0,
    reconnectDelay: 500,
    reconnectTimer: null,
    drawPending: false,
    models: new Set(),
  };

  const charts = {};

  // -- sign-in ---------------------------------------------------------------

  function showLogin(message) {
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-password").focus();
  }

  async function login(event) {
    event.preventDefault();
    $("login-error").textContent = "";
    const body = JSON.stringify({ username: $("login-user").value, password: $("login-password").value });
    let response;
    try {
      response = await fetch("/auth/login", { method: "POST", headers: { "content-type": "application/json" }, body });
    } catch (error) {
      $("login-error").textContent = "The gateway cannot be reached.";
      return;
    }
    const document_ = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = document_.error && document_.error.message;
      $("login-error").textContent = message || "Sign-in failed (" + response.status + ").";
      return;
    }
    $("login-password").value = "";
    useToken(document_.token);
  }

  function useToken(token) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    connect();
  }

  function signOut() {
    const token = state.token;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (token && token.startsWith("ccag-session-")) {
      fetch("/admin/logout", { method: "POST", headers: { authorization: "Bearer " + token } }).catch(() => {});
    }
    if (state.socket) state.socket.close(1000, "signed out");
    state.epoch = null;
    state.lastSeq = null;
    $("main").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    setConnection("off", "offline");
    showLogin("");
  }

  // -- the socket --------------------------------------------------------------

  function setConnection(kind, text) {
    const pill = $("conn");
    pill.className = "pill pill-" + kind;
    pill.textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (!state.token) {
      showLogin("");
      return;
    }
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ui/ws");
    state.socket = socket;
    setConnection("wait", "connecting");

    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "hello", token: state.token, epoch: state.epoch, last_seq: state.lastSeq }));
    };
    socket.onmessage = (message) => {
      let document_;
      try {
        document_ = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      handle(document_);
    };
    socket.onclose = (closed) => {
      if (state.socket !== socket) return;
      state.socket = null;
      if (closed.code === 1008) {
        // Refused: the token is missing, wrong, expired or revoked.
        sessionStorage.removeItem(TOKEN_KEY);
        state.token = null;
        setConnection("off", "signed out");
        showLogin(closed.reason || "Please sign in.");
        return;
      }
      if (!state.token) return;
      setConnection("wait", "reconnecting");
      state.reconnectTimer = setTimeout(connect, state.reconnectDelay);
      state.reconnectDelay = Math.min(state.reconnectDelay * 2, RECONNECT_MAX_MS);
    };
  }

  function handle(message) {
    switch (message.type) {
      case "welcome":
        state.reconnectDelay = 500;
        setConnection("on", "live");
        $("who").textContent = (message.name || "") + " · " + message.role;
        $("main").hidden = false;
        $("signout").hidden = false;
        break;
      case "snapshot":
        state.epoch = message.epoch;
        state.lastSeq = message.seq;
        state.events = message.events.slice().reverse();
        state.seconds = message.seconds.slice(-CHART_SECONDS);
        state.models = new Set(state.events.map((event) => event.model));
        $("lagging").hidden = true;
        renderFeed(false);
        scheduleDraw();
        break;
      case "resumed":
        state.epoch = message.epoch;
        state.seconds = message.seconds.slice(-CHART_SECONDS);
        scheduleDraw();
        break;
      case "event":
        addEvent(message.event);
        break;
      case "second":
        state.seconds.push(message.second);
        if (state.seconds.length > CHART_SECONDS) state.seconds.shift();
        scheduleDraw();
        break;
      case "lagging":
        $("lagging").hidden = false;
        break;
      case "caught_up":
        $("lagging").hidden = true;
        break;
      case "spend":
        renderSpend(message);
        break;
    }
  }

  // -- the feed -----------------------------------------------------------------

  function addEvent(event) {
    if (state.lastSeq === null || event.seq > state.lastSeq) state.lastSeq = event.seq;
    state.events.unshift(event);
    if (state.events.length > MAX_EVENTS) state.events.pop();
    if (!state.models.has(event.model)) {
      state.models.add(event.model);
      refreshModelFilter();
    }
    if (state.paused) {
      state.pausedNew += 1;
      $("pause").textContent = "Resume (" + state.pausedNew + " new)";
      return;
    }
    if (matches(event)) {
      const tbody = $("feed-rows");
      tbody.insertBefore(row(event, true), tbody.firstChild);
      while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
      $("feed-empty").hidden = true;
      updateCount();
    }
  }

  function refreshModelFilter() {
    const select = $("f-model");
    const current = select.value;
    select.length = 1;
    for (const model of Array.from(state.models).sort()) {
      const option = document.createElement("option");
      option.value = model;
      option.textContent = model;
      select.appendChild(option);
    }
    select.value = current;
  }

  function matches(event) {
    const user = $("f-user").value.trim().toLowerCase();
    const team = $("f-team").value.trim().toLowerCase();
    const model = $("f-model").value;
    const status = $("f-status").value;
    if (user && !((event.user || "").toLowerCase().includes(user) || (event.key || "").toLowerCase().includes(user))) return false;
    if (team && !(event.team || "").toLowerCase().includes(team)) return false;
    if (model && event.model !== model) return false;
    if (status === "ok" && !(event.status >= 200 && event.status < 300)) return false;
    if (status === "error" && !(event.status >= 400 && event.status !== 429 && event.status !== 499)) return false;
    if ((status === "429" || status === "499") && String(event.status) !== status) return false;
    return true;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function statusClass(status) {
    if (status >= 200 && status < 300) return "s-ok";
    if (status === 429) return "s-warn";
    if (status === 499) return "s-gone";
    return "s-err";
  }

  function ms(value) {
    if (value == null) return "–";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
  }

  function row(event, fresh) {
    const tr = document.createElement("tr");
    tr.dataset.seq = event.seq;
    if (fresh) tr.className = "fresh";
    tr.appendChild(cell(new Date(event.at * 1000).toTimeString().slice(0, 8), "mono"));
    tr.appendChild(cell(event.user || event.key || "–"));
    tr.appendChild(cell(event.team || "–"));
    const model = cell(event.model);
    if (event.requested_model && event.requested_model !== event.model) model.title = "asked for " + event.requested_model;
    tr.appendChild(model);
    const mode = document.createElement("td");
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = event.streaming ? "stream" : "sync";
    mode.appendChild(tag);
    tr.appendChild(mode);
    const status = document.createElement("td");
    status.className = "num";
    const badge = document.createElement("span");
    badge.className = "status " + statusClass(event.status);
    badge.textContent = event.status;
    if (event.error_type) badge.title = event.error_type;
    status.appendChild(badge);
    tr.appendChild(status);
    tr.appendChild(cell(ms(event.ttft_ms), "num"));
    tr.appendChild(cell(ms(event.duration_ms), "num"));
    tr.appendChild(cell(tokens(event.input_tokens), "num"));
    tr.appendChild(cell(tokens(event.output_tokens), "num"));
    tr.appendChild(cell(event.tool_calls ? String(event.tool_calls) : "–", "num"));
    tr.appendChild(cell(money(event.cost_usd), "num"));
    // No endpoint id: the request reached no Bedrock endpoint.
    tr.appendChild(cell(event.endpoint_id || "–", "muted"));
    return tr;
  }

  function tokens(value) {
    return value < 10000 ? String(value) : formatNumber(value);
  }

  function money(value) {
    if (value == null) return "–";
    if (value === 0) return "$0";
    if (value >= 1 || value < 0) return "$" + value.toFixed(2);
    // Below $1, four significant digits, so $0.0001 does not read "$0.00".
    const decimals = Math.min(12, Math.max(2, 3 - Math.floor(Math.log10(value))));
    const text = value.toFixed(decimals).replace(/0+$/, "");
    const [whole, fraction] = text.split(".");
    return "$" + whole + "." + (fraction || "").padEnd(2, "0");
  }

  function renderFeed() {
    const tbody = $("feed-rows");
    const fragment = document.createDocumentFragment();
    let shown = 0;
    for (const event of state.events) {
      if (shown >= MAX_ROWS) break;
      if (!matches(event)) continue;
      fragment.appendChild(row(event, false));
      shown += 1;
    }
    tbody.replaceChildren(fragment);
    $("feed-empty").hidden = shown > 0;
    updateCount();
  }

  function updateCount() {
    const rows = $("feed-rows").rows.length;
    $("feed-count").textContent = rows ? "· showing " + rows + " most recent" : "";
  }

  function togglePause() {
    state.paused = !state.paused;
    const button = $("pause");
    button.classList.toggle("paused", state.paused);
    button.textContent = state.paused ? "Resume" : "Pause";
    if (!state.paused) {
      state.pausedNew = 0;
      renderFeed();
    }
  }

  // -- charts and tiles ------------------------------------------------------------

  function scheduleDraw() {
    if (state.drawPending) return;
    state.drawPending = true;
    requestAnimationFrame(() => {
      state.drawPending = false;
      drawCharts();
      drawTiles();
    });
  }

  function column(key) {
    return state.seconds.map((second) => second[key]);
  }

  function ratio(part, whole) {
    return state.seconds.map((second) => (second[whole] ? second[part] / second[whole] : null));
  }

  function breakdown(key, limit) {
    const totals = new Map();
    for (const second of state.seconds) {
      for (const [name, row_] of Object.entries(second[key] || {})) {
        totals.set(name, (totals.get(name) || 0) + row_.requests);
      }
    }
    const names = Array.from(totals.keys()).sort((a, b) => totals.get(b) - totals.get(a)).slice(0, limit);
    return names.map((name, index) => ({
      name,
      color: PALETTE[index % PALETTE.length],
      values: state.seconds.map((second) => ((second[key] || {})[name] || { requests: 0 }).requests),
    }));
  }

  function drawCharts() {
    const times = column("t");
    charts.rps.setData(times, [
      { name: "requests", color: PALETTE[0], values: column("requests") },
      { name: "errors", color: "#f85149", values: column("errors") },
      { name: "throttled", color: "#d29922", values: column("throttles") },
    ]);
    charts.errors.setData(times, [
      { name: "error rate", color: "#f85149", values: ratio("errors", "requests") },
      { name: "throttle rate", color: "#d29922", values: ratio("throttles", "requests") },
    ]);
    charts.inflight.setData(times, [{ name: "in flight", color: "#39c5cf", values: column("in_flight") }]);
    charts.tokens.setData(times, [
      { name: "input", color: PALETTE[0], values: column("input_tokens") },
      { name: "output", color: "#3fb950", values: column("output_tokens") },
    ]);
    charts.ttft.setData(times, [
      { name: "p50", color: PALETTE[0], values: column("ttft_p50") },
      { name: "p99", color: "#bc8cff", values: column("ttft_p99") },
    ]);
    charts.models.setData(times, breakdown("models", 6));
    charts.endpoints.setData(times, breakdown("endpoints", 6));
  }

  function sum(seconds, key) {
    return seconds.reduce((total, second) => total + (second[key] || 0), 0);
  }

  function drawTiles() {
    const recent = state.seconds.slice(-10);
    const minute = state.seconds.slice(-60);
    const span = Math.max(recent.length, 1);
    $("kpi-rps").textContent = (sum(recent, "requests") / span).toFixed(1);
    $("kpi-tps").textContent = formatNumber((sum(recent, "input_tokens") + sum(recent, "output_tokens")) / span);
    const requests = sum(minute, "requests");
    $("kpi-errors").textContent = requests ? ((100 * sum(minute, "errors")) / requests).toFixed(1) + "%" : "0%";
    $("kpi-throttles").textContent = requests ? ((100 * sum(minute, "throttles")) / requests).toFixed(1) + "%" : "0%";
    const last = state.seconds[state.seconds.length - 1];
    $("kpi-inflight").textContent = last && last.in_flight != null ? String(last.in_flight) : "–";
    const p50 = minute.map((second) => second.ttft_p50).filter((value) => value != null);
    const p99 = minute.map((second) => second.ttft_p99).filter((value) => value != null);
    // The median of per-second medians and the worst per-second p99: close
    // enough for a glance, exact values are in the metrics.
    p50.sort((a, b) => a - b);
    if (p50.length) {
      const median = p50[Math.floor(p50.length / 2)];
      const worst = Math.max(...p99);
      $("kpi-ttft").textContent = worst < 1000
        ? Math.round(median) + " · " + Math.round(worst) + " ms"
        : ms(median) + " · " + ms(worst);
    } else {
      $("kpi-ttft").textContent = "–";
    }
  }

  // -- spend ---------------------------------------------------------------------

  function renderSpend(report) {
    $("kpi-spend").textContent = money(report.total_usd);
    $("spend-source").textContent = report.source === "records" ? "· from spend records" : "· since this gateway started";
    const tbody = $("spend-rows");
    const fragment = document.createDocumentFragment();
    for (const entry of report.rows) {
      const tr = document.createElement("tr");
      tr.appendChild(cell(entry.name ? entry.kind + " " + entry.name : "no " + entry.kind));
      tr.appendChild(cell(money(entry.cost_usd), "num"));
      tr.appendChild(cell(entry.requests ? String(entry.requests) : "–", "num"));
      const budgetCell = document.createElement("td");
      if (entry.budgets.length) {
        const budget = entry.budgets[0];
        const fraction = budget.limit_usd > 0 ? budget.spent_usd / budget.limit_usd : 1;
        const bar = document.createElement("div");
        bar.className = "bar" + (fraction >= 1 ? " over" : fraction >= 0.8 ? " warn" : "");
        const fill = document.createElement("span");
        fill.style.width = Math.min(100, fraction * 100).toFixed(1) + "%";
        bar.appendChild(fill);
        budgetCell.appendChild(bar);
        const text = document.createElement("div");
        text.className = "budget-text";
        text.textContent = money(budget.spent_usd) + " of " + money(budget.limit_usd) + " " + budget.period + " · " + budget.policy;
        budgetCell.appendChild(text);
      } else {
        budgetCell.className = "muted";
        budgetCell.textContent = "none";
      }
      tr.appendChild(budgetCell);
      fragment.appendChild(tr);
    }
    if (!report.rows.length) {
      const tr = document.createElement("tr");
      const td = cell("No spend yet today.", "muted");
      td.colSpan = 4;
      tr.appendChild(td);
      fragment.appendChild(tr);
    }
    tbody.replaceChildren(fragment);
  }

  // -- start -------------------------------------------------------------------------

  function start() {
    charts.rps = new LineChart($("chart-rps"));
    charts.errors = new LineChart($("chart-errors"), { percent: true });
    charts.inflight = new LineChart($("chart-inflight"), { integer: true });
    charts.tokens = new LineChart($("chart-tokens"));
    charts.ttft = new LineChart($("chart-ttft"));
    charts.models = new LineChart($("chart-models"));
    charts.endpoints = new LineChart($("chart-endpoints"));

    $("login-form").addEventListener("submit", login);
    $("login-key-submit").addEventListener("click", () => {
      const key = $("login-key").value.trim();
      if (key) useToken(key);
    });
    $("signout").addEventListener("click", signOut);
    $("pause").addEventListener("click", togglePause);
    for (const id of ["f-user", "f-team", "f-model", "f-status"]) {
      $(id).addEventListener("input", () => renderFeed());
    }
    window.addEventListener("resize", scheduleDraw);
    connect();
  }

  window.ccagLive = { state };
  document.addEventListener("DOMContentLoaded", start);
})();
