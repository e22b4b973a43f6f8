// phoenix.js over long-poll against myriad: forced (`transport: LongPoll`) and
// by fallback when the WebSocket upgrade is blocked; messages both ways with
// WebSocket clients, and a reconnect that recovers exactly what was missed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Socket, LongPoll } from "phoenix";
import WebSocket from "ws";
import { startServer, within } from "./server.mjs";

let server;
const sockets = [];

before(async () => {
  server = await startServer(["--client-rate", "0"]);
});

after(async () => {
  for (const s of sockets) s.disconnect();
  const code = await server.stop();
  if (process.env.SHOW_LOG) console.error(server.log.join(""));
  assert.equal(code, 0, "server exits 0 on SIGTERM");
});

function connect(opts = {}) {
  const socket = new Socket(server.url, {
    transport: WebSocket,
    rejoinAfterMs: () => 50,
    reconnectAfterMs: () => 50,
    ...opts,
  });
  sockets.push(socket);
  socket.connect();
  return socket;
}

function join(channel) {
  return within(8000, `join ${channel.topic}`, (ok, fail) => {
    channel.join().receive("ok", ok).receive("error", (e) => fail(new Error(JSON.stringify(e))))
      .receive("timeout", () => fail(new Error("join timeout")));
  });
}

function push(channel, event, payload) {
  return within(8000, `push ${event}`, (ok, fail) => {
    channel.push(event, payload).receive("ok", ok).receive("error", (e) => fail(new Error(JSON.stringify(e))))
      .receive("timeout", () => fail(new Error("push timeout")));
  });
}

function collect(channel, event) {
  const got = [];
  channel.on(event, (p) => got.push(p));
  return got;
}

const until = (what, cond) => within(8000, what, (ok) => {
  const t = setInterval(() => cond() && (clearInterval(t), ok()), 20);
});

test("a long-poll client and a WebSocket client talk through one room", async () => {
  const lp = connect({ transport: LongPoll });
  const ws = connect();
  const chLp = lp.channel("room:lp", {});
  const chWs = ws.channel("room:lp", {});
  const atLp = collect(chLp, "msg");
  const atWs = collect(chWs, "msg");
  await join(chLp);
  await join(chWs);
  await push(chWs, "msg", { from: "ws" });
  await push(chLp, "msg", { from: "lp" });
  await until("both messages on both sides", () => atLp.length === 2 && atWs.length === 2);
  assert.deepEqual(atLp.map((m) => m.from), ["ws", "lp"]);
  assert.equal(lp.transport, LongPoll);
  const metrics = await (await fetch(`http://${server.admin}/metrics`)).text();
  assert.match(metrics, /myriad_sessions_opened_total\{endpoint="longpoll"\} [1-9]/);
});

test("a reconnecting long-poll client recovers exactly the broadcasts it missed", async () => {
  const ws = connect();
  const chWs = ws.channel("chat:lp-recovery", {});
  await join(chWs);
  let since = null;
  const lp = connect({ transport: LongPoll });
  const chLp = lp.channel("chat:lp-recovery", () => (since ? { since } : {}));
  const seen = [];
  chLp.on("msg", (p) => seen.push(p.n));
  // History broadcasts carry "<offset>:<epoch>" in the ref slot.
  chLp.onMessage = (event, payload, ref) => {
    if (event === "msg" && typeof ref === "string" && ref.includes(":")) {
      const [offset, epoch] = ref.split(":");
      since = { offset: Number(offset), epoch };
    }
    return payload;
  };
  await join(chLp);
  await push(chWs, "msg", { n: 1 });
  await until("first message", () => seen.length === 1);
  lp.disconnect();
  await push(chWs, "msg", { n: 2 });
  await push(chWs, "msg", { n: 3 });
  lp.connect();
  await until("missed messages", () => seen.length === 3);
  await push(chWs, "msg", { n: 4 });
  await until("then live", () => seen.length === 4);
  assert.deepEqual(seen, [1, 2, 3, 4]);
});

test("ArrayBuffer pushes over long-poll reach WebSocket members as binary, and come back as JSON", async () => {
  const lp = connect({ transport: LongPoll });
  const ws = connect();
  const chLp = lp.channel("room:lp-binary", {});
  const chWs = ws.channel("room:lp-binary", {});
  const atLp = collect(chLp, "file");
  const atWs = collect(chWs, "file");
  await join(chLp);
  await join(chWs);
  const bytes = new Uint8Array([0, 1, 254, 255]);
  // phoenix.js sends a long-poll ArrayBuffer push base64-encoded.
  await push(chLp, "file", bytes.buffer);
  await push(chWs, "file", new Uint8Array([7]).buffer);
  await until("both binary broadcasts on both sides", () => atLp.length === 2 && atWs.length === 2);
  assert.ok(atWs[0] instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(atWs[0])], [...bytes]);
  // phoenix.js's long-poll takes strings only: the JSON form.
  assert.deepEqual(atLp, [{ binary: Buffer.from(bytes).toString("base64") }, { binary: "Bw==" }]);
});

test("with the WebSocket upgrade blocked, phoenix.js falls back to long-poll by itself", async () => {
  // A proxy that strips the upgrade: the WebSocket never opens.
  class BlockedWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url.replace("/socket/websocket", "/blocked-by-proxy"), protocols);
    }
  }
  const socket = connect({ transport: BlockedWebSocket, longPollFallbackMs: 300 });
  const ch = socket.channel("room:fallback", {});
  await join(ch);
  assert.equal(socket.transport, LongPoll);
  const reply = await push(ch, "msg", { ok: true });
  assert.deepEqual(reply, {});
});
