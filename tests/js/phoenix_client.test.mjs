// The real npm `phoenix` client (pinned in package-lock.json) against myriad.
// Any deviation from what phoenix.js expects makes a step time out or fail.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { startServer, within } from "./server.mjs";

let server;
const sockets = [];

before(async () => {
  // A short idle timeout: only heartbeats keep the sockets open.
  server = await startServer(["--idle-timeout", "600ms", "--enable-fault-injection"]);
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
    heartbeatIntervalMs: 150,
    rejoinAfterMs: () => 50,
    reconnectAfterMs: () => 50,
    ...opts,
  });
  sockets.push(socket);
  socket.connect();
  return socket;
}

function join(channel) {
  return within(5000, `join ${channel.topic}`, (ok, fail) => {
    channel
      .join()
      .receive("ok", ok)
      .receive("error", (e) => fail(new Error(`join error ${JSON.stringify(e)}`)))
      .receive("timeout", () => fail(new Error("join timeout")));
  });
}

function push(channel, event, payload) {
  return within(5000, `push ${event}`, (ok, fail) => {
    channel
      .push(event, payload)
      .receive("ok", ok)
      .receive("error", (e) => fail(new Error(`push error ${JSON.stringify(e)}`)))
      .receive("timeout", () => fail(new Error("push timeout")));
  });
}

test("join, push with reply, and another client's broadcast", async () => {
  const a = connect();
  const b = connect();
  const chA = a.channel("room:js", { user: "a" });
  const chB = b.channel("room:js", { user: "b" });
  assert.deepEqual(await join(chA), {});
  await join(chB);

  const received = within(5000, "broadcast on B", (ok) => {
    chB.on("new_msg", (payload, ref) => ok({ payload, ref }));
  });
  assert.deepEqual(await push(chA, "new_msg", { body: "hello" }), {});
  const { payload } = await received;
  assert.deepEqual(payload, { body: "hello" });
});

test("heartbeats keep a socket alive past several idle timeouts", async () => {
  let closed = false;
  const s = connect();
  s.onClose(() => {
    closed = true;
  });
  const ch = s.channel("room:hb");
  await join(ch);
  // 8 heartbeat replies at 150 ms = 1.2 s, two server idle timeouts (600 ms).
  await within(10000, "8 heartbeat replies", (ok) => {
    let replies = 0;
    s.onMessage((msg) => {
      if (msg.topic === "phoenix" && msg.event === "phx_reply" && msg.payload.status === "ok") {
        replies += 1;
        if (replies === 8) ok();
      }
    });
  });
  assert.equal(closed, false, "socket stayed open");
  assert.equal(s.isConnected(), true);
  assert.deepEqual(await push(ch, "still_here", {}), {});
});

test("leave is acknowledged and stops broadcasts", async () => {
  const a = connect();
  const b = connect();
  const chA = a.channel("room:leave");
  const chB = b.channel("room:leave");
  await join(chA);
  await join(chB);
  let afterLeave = 0;
  chA.on("ping", () => {
    afterLeave += 1;
  });
  await within(5000, "leave ok", (ok, fail) => {
    chA.leave().receive("ok", ok).receive("timeout", () => fail(new Error("leave timeout")));
  });
  assert.equal(chA.state, "closed");
  // B's broadcast is acknowledged; A, having left, never sees it. B itself
  // receiving it proves it was sent before we look at A's count.
  const bSaw = within(5000, "B sees its own ping", (ok) => chB.on("ping", ok));
  await push(chB, "ping", {});
  await bSaw;
  await within(5000, "heartbeat round trip on A", (ok) => a.ping(ok));
  assert.equal(afterLeave, 0);
});

test("a crashed channel gets phx_error and the client rejoins by itself", async () => {
  const s = connect();
  const ch = s.channel("crash:js");
  await join(ch);
  const rejoined = within(5000, "rejoin after crash", (ok) => {
    let errored = false;
    ch.onError(() => {
      errored = true;
    });
    s.onMessage((msg) => {
      if (errored && msg.topic === "crash:js" && msg.event === "phx_reply" && msg.payload.status === "ok") {
        ok();
      }
    });
  });
  // No reply ever comes for the crashing push; a short timeout lets node exit promptly.
  ch.push("panic", {}, 200);
  await rejoined;
  assert.equal(ch.state, "joined");
  assert.deepEqual(await push(ch, "after_crash", {}), {});
});

test("ArrayBuffer payloads travel as V2 binary frames both ways", async () => {
  const a = connect();
  const b = connect();
  const chA = a.channel("room:binary", {});
  const chB = b.channel("room:binary", {});
  await join(chA);
  await join(chB);
  const received = within(5000, "binary broadcast", (ok) => {
    chB.on("file", (payload) => ok(payload));
  });
  const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
  await push(chA, "file", bytes.buffer);
  const payload = await received;
  assert.ok(payload instanceof ArrayBuffer, "decoded as an ArrayBuffer");
  assert.deepEqual([...new Uint8Array(payload)], [...bytes]);
});

test("a binary broadcast on a history topic is recovered as an ArrayBuffer after a reconnect", async () => {
  const a = connect();
  const chat = a.channel("chat:binary", {});
  await join(chat);
  // The client tracks its position: JSON broadcasts carry "<offset>:<epoch>"
  // in the ref slot; a binary broadcast has no slot and counts as the next
  // offset (docs/protocol.md §2.2).
  let since = null;
  const c = connect({ reconnectAfterMs: () => 60000 });
  const chC = c.channel("chat:binary", () => (since ? { since } : {}));
  const seen = [];
  chC.onMessage = (event, payload, ref) => {
    if (typeof ref === "string" && ref.includes(":")) {
      const [offset, epoch] = ref.split(":");
      since = { offset: Number(offset), epoch };
    } else if (event === "file" && since) {
      since = { offset: since.offset + 1, epoch: since.epoch };
    }
    return payload;
  };
  chC.on("msg", (p) => seen.push(p.n));
  chC.on("file", (p) => seen.push(p instanceof ArrayBuffer ? [...new Uint8Array(p)] : p));
  await join(chC);
  await push(chat, "msg", { n: 1 });
  await within(5000, "first message", (ok) => {
    const t = setInterval(() => seen.length === 1 && (clearInterval(t), ok()), 20);
  });
  c.disconnect();
  const bytes = new Uint8Array([9, 0, 255]);
  const reply = await push(chat, "file", bytes.buffer);
  assert.equal(typeof reply.offset, "number", "a history push is answered with its offset");
  await push(chat, "msg", { n: 2 });
  c.connect();
  await within(5000, "the missed ones", (ok) => {
    const t = setInterval(() => seen.length === 3 && (clearInterval(t), ok()), 20);
  });
  await push(chat, "file", bytes.buffer);
  await push(chat, "msg", { n: 3 });
  await within(5000, "then live", (ok) => {
    const t = setInterval(() => seen.length === 5 && (clearInterval(t), ok()), 20);
  });
  assert.deepEqual(seen, [1, [9, 0, 255], 2, [9, 0, 255], 3]);
  assert.equal(since.offset, reply.offset + 3, "counting kept the position exact");
});
