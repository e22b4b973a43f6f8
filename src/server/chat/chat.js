// The chat page's client: speaks Phoenix Channels V2 directly over a WebSocket
// ([join_ref, ref, topic, event, payload] frames), written for this page.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let ws = null;
  let topic = null;
  let joinRef = null;
  let ref = 0;
  let heartbeat = null;
  let pendingBeat = null; // ref of the heartbeat still unanswered
  let tries = 0; // reconnect attempts since the last successful join
  let recovering = false; // the pending join asks for what was missed (`since`)
  let members = {}; // key -> metas (Phoenix Presence state)
  let last = null; // {offset, epoch} of the newest message seen, for recovery
  const sent = new Set(); // refs of our pushes, to show refusals (moderation)

  // phoenix.js's reconnect schedule, each delay jittered (×0.5–1.5) so the
  // clients of a drained node do not come back in step.
  const BACKOFF_MS = [10, 50, 100, 150, 200, 250, 500, 1000, 2000];
  const backoff = (n) => (BACKOFF_MS[n] || 5000) * (0.5 + Math.random());
  const HEARTBEAT_MS = 30000;
  // A connect token from the page's own URL (`/?token=...`), as the server's
  // `token` query parameter.
  const token = new URLSearchParams(location.search).get("token");

  const nextRef = () => String(++ref);
  const send = (frame) => ws && ws.readyState === 1 && ws.send(JSON.stringify(frame));

  function line(cls, name, text) {
    const div = document.createElement("div");
    div.className = "msg " + cls;
    if (name) {
      const b = document.createElement("span");
      b.className = "name";
      b.textContent = name + ": ";
      div.appendChild(b);
    }
    div.appendChild(document.createTextNode(text));
    $("log").appendChild(div);
    $("log").scrollTop = $("log").scrollHeight;
  }

  function renderMembers() {
    const list = $("members");
    list.textContent = "";
    const names = Object.values(members)
      .map((metas) => (metas[0] && metas[0].name) || "anonymous")
      .sort();
    for (const n of names) {
      const li = document.createElement("li");
      li.textContent = n;
      list.appendChild(li);
    }
  }

  function applyDiff(diff) {
    for (const [key, { metas }] of Object.entries(diff.joins || {})) {
      const refs = new Set(metas.map((m) => m.phx_ref));
      members[key] = (members[key] || []).filter((m) => !refs.has(m.phx_ref)).concat(metas);
    }
    for (const [key, { metas }] of Object.entries(diff.leaves || {})) {
      const refs = new Set(metas.map((m) => m.phx_ref));
      const left = (members[key] || []).filter((m) => !refs.has(m.phx_ref));
      if (left.length) members[key] = left;
      else delete members[key];
    }
    renderMembers();
  }

  function onFrame([jr, r, t, event, payload]) {
    if (t === "phoenix" && event === "phx_reply" && r === pendingBeat) {
      pendingBeat = null;
      return;
    }
    if (t !== topic) return;
    if (event === "phx_reply" && sent.has(r)) {
      sent.delete(r);
      if (payload.status !== "ok") {
        const why = (payload.response && payload.response.reason) || JSON.stringify(payload.response);
        line("error", null, "not sent: " + why);
      }
    } else if (event === "phx_reply" && r === joinRef) {
      if (payload.status !== "ok") {
        $("status").textContent = "join failed: " + JSON.stringify(payload.response);
        return;
      }
      $("status").textContent = "joined " + topic;
      $("chat").classList.add("on");
      $("text").focus();
      tries = 0;
      const resp = payload.response || {};
      if (recovering && resp.recovered === false) {
        // The server cannot replay what was missed (its history moved on or
        // began again): say so instead of pretending nothing happened, and
        // count from where the topic is now.
        line("sys", null, "some messages could not be recovered while you were away");
        if (typeof resp.epoch === "string" && typeof resp.offset === "number") {
          last = { offset: resp.offset, epoch: resp.epoch };
        }
      }
    } else if (event === "presence_state") {
      members = {};
      for (const [key, { metas }] of Object.entries(payload)) members[key] = metas;
      renderMembers();
    } else if (event === "presence_diff") {
      applyDiff(payload);
    } else if (event === "msg") {
      // History broadcasts carry "<offset>:<epoch>" in the ref slot.
      if (typeof r === "string" && r.includes(":")) {
        const i = r.indexOf(":");
        const offset = Number(r.slice(0, i));
        const epoch = r.slice(i + 1);
        // Offsets count within one epoch: after the history began again
        // (a new epoch), offset 1 is new, not "already shown".
        if (last && epoch === last.epoch && offset <= last.offset) return;
        last = { offset, epoch };
      }
      line(payload.past ? "past" : "", payload.name, payload.body);
    } else if (event === "phx_error") {
      $("status").textContent = "channel error; rejoining";
      setTimeout(join, backoff(tries++));
    }
  }

  function join() {
    joinRef = nextRef();
    const params = { meta: { name: $("name").value.trim() } };
    // First join: replay the stored history; rejoin: recover from the last offset.
    recovering = Boolean(last);
    if (last) params.since = last;
    else params.history = true;
    send([joinRef, joinRef, topic, "phx_join", params]);
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const auth = token ? "&token=" + encodeURIComponent(token) : "";
    const socket = new WebSocket(proto + "//" + location.host + "/socket/websocket?vsn=2.0.0" + auth);
    ws = socket;
    socket.onopen = () => {
      join();
      clearInterval(heartbeat);
      pendingBeat = null;
      heartbeat = setInterval(() => {
        if (pendingBeat) {
          // No answer within a heartbeat interval: the connection is dead
          // even if the browser has not noticed. Close and reconnect.
          pendingBeat = null;
          socket.close(1000, "heartbeat timeout");
          return;
        }
        pendingBeat = nextRef();
        send([null, pendingBeat, "phoenix", "heartbeat", {}]);
      }, HEARTBEAT_MS);
    };
    socket.onmessage = (e) => {
      try {
        onFrame(JSON.parse(e.data));
      } catch (err) {
        console.error("bad frame", err);
      }
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      clearInterval(heartbeat);
      const wait = backoff(tries++);
      $("status").textContent = "disconnected; reconnecting in " + Math.round(wait) + " ms";
      setTimeout(connect, wait);
    };
  }

  $("join").addEventListener("submit", (e) => {
    e.preventDefault();
    if (ws) return;
    topic = "chat:" + $("room").value.trim();
    $("join-btn").disabled = true;
    connect();
  });

  $("send").addEventListener("submit", (e) => {
    e.preventDefault();
    const body = $("text").value.trim();
    if (!body) return;
    const r = nextRef();
    sent.add(r);
    send([joinRef, r, topic, "msg", { name: $("name").value.trim(), body }]);
    $("text").value = "";
  });
})();
