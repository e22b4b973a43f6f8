// The admin console's script: logs in with an API key (kept in this tab's
// sessionStorage only), polls /console/overview every 2 s, draws two charts
// as SVG polylines, and calls the HTTP API for presence, history, broadcast
// and disconnect. No third-party code.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  const POINTS = 90; // 3 minutes of samples
  let key = sessionStorage.getItem("myriad-console-key");
  let timer = null;
  const sessions = [];
  const rates = [];
  let lastBroadcasts = null;
  let lastAt = null;
  const topicLast = new Map(); // topic -> [broadcasts, at]

  async function call(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + key } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
    if (!res.ok) throw new Error((json && json.error) || res.status + " " + text);
    return json;
  }

  const fmtBytes = (n) => {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  };

  function cell(tr, text, numeric) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "n";
    tr.appendChild(td);
    return td;
  }

  function chart(id, values) {
    const max = Math.max(1, ...values);
    const pts = values.map((v, i) => {
      const x = (i / Math.max(1, POINTS - 1)) * 300;
      const y = 98 - (v / max) * 94;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    $(id).querySelector("polyline").setAttribute("points", pts.join(" "));
  }

  function push(series, v) {
    series.push(v);
    if (series.length > POINTS) series.shift();
  }

  function render(o) {
    const now = Date.now();
    $("broker").textContent = "(broker: " + o.broker + ")";
    const nodes = $("nodes").querySelector("tbody");
    nodes.textContent = "";
    for (const n of o.nodes) {
      const tr = document.createElement("tr");
      cell(tr, n.node + (n.this ? " (this node)" : ""));
      cell(tr, String(n.sessions), true);
      cell(tr, String(n.topics), true);
      cell(tr, n.memory ? fmtBytes(n.memory) : "-", true);
      cell(tr, n.broker);
      cell(tr, n.draining ? "draining" : "serving");
      nodes.appendChild(tr);
    }
    const me = o.nodes.find((n) => n.this);
    push(sessions, me ? me.sessions : 0);
    $("sessions-now").textContent = me ? "now " + me.sessions : "";
    if (lastBroadcasts !== null) {
      const rate = Math.max(0, (o.broadcasts - lastBroadcasts) / ((now - lastAt) / 1000));
      push(rates, rate);
      $("rate-now").textContent = "now " + rate.toFixed(1);
    }
    lastBroadcasts = o.broadcasts;
    lastAt = now;
    chart("chart-sessions", sessions);
    chart("chart-rate", rates);
    const topics = $("topics").querySelector("tbody");
    topics.textContent = "";
    for (const t of o.topics) {
      const tr = document.createElement("tr");
      const a = document.createElement("a");
      a.textContent = t.topic;
      a.addEventListener("click", () => { $("topic").value = t.topic; showTopic(t.topic); });
      cell(tr, "").appendChild(a);
      cell(tr, String(t.members), true);
      cell(tr, String(t.broadcasts), true);
      const prev = topicLast.get(t.topic);
      const rate = prev ? (t.broadcasts - prev[0]) / ((now - prev[1]) / 1000) : 0;
      cell(tr, rate.toFixed(1), true);
      topicLast.set(t.topic, [t.broadcasts, now]);
      topics.appendChild(tr);
    }
  }

  async function poll() {
    try {
      render(await call("GET", "/console/overview"));
    } catch (e) {
      if (String(e.message).includes("API key")) return logout(e.message);
      $("who").textContent = "error: " + e.message;
    }
  }

  async function showTopic(topic) {
    const q = "?topic=" + encodeURIComponent(topic);
    try {
      $("presence").textContent = JSON.stringify(await call("GET", "/api/presence" + q), null, 2);
    } catch (e) { $("presence").textContent = e.message; }
    try {
      $("history").textContent = JSON.stringify(await call("GET", "/api/history" + q), null, 2);
    } catch (e) { $("history").textContent = e.message; }
  }

  function logout(why) {
    clearInterval(timer);
    sessionStorage.removeItem("myriad-console-key");
    key = null;
    $("app").classList.remove("on");
    $("login").style.display = "";
    $("login-error").textContent = why || "";
  }

  async function login(k) {
    key = k;
    try {
      await call("GET", "/console/overview");
    } catch (e) {
      return logout(e.message);
    }
    sessionStorage.setItem("myriad-console-key", k);
    $("login").style.display = "none";
    $("app").classList.add("on");
    $("who").textContent = "logged in";
    await poll();
    timer = setInterval(poll, POLL_MS);
  }

  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login($("key").value);
  });
  $("topic-form").addEventListener("submit", (e) => {
    e.preventDefault();
    showTopic($("topic").value.trim());
  });
  $("broadcast-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    let payload;
    try { payload = JSON.parse($("b-payload").value); } catch (_) {
      $("broadcast-result").textContent = "the payload must be JSON";
      return;
    }
    try {
      const r = await call("POST", "/api/broadcast", {
        topic: $("b-topic").value.trim(), event: $("b-event").value.trim(), payload,
      });
      $("broadcast-result").textContent = "delivered to " + r.delivered + " on this node" +
        (r.offset != null ? ", offset " + r.offset : "");
    } catch (err) { $("broadcast-result").textContent = "refused: " + err.message; }
  });
  $("disconnect-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await call("POST", "/api/disconnect", { user: $("d-user").value.trim() });
      $("disconnect-result").textContent = r.disconnected + " session(s) closed on this node; other nodes close theirs";
    } catch (err) { $("disconnect-result").textContent = "refused: " + err.message; }
  });

  if (key) login(key);
})();
