// phoenix.js against myriad with the example application backend
// (examples/chat-backend): login, a refused and an accepted join, a
// moderated push, a stored and rewritten broadcast, the load_more RPC, and
// webhook events reaching the backend.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { startServer, within } from "./server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const backendBin =
  process.env.TEST_BACKEND_BIN || path.resolve(here, "../../target/debug/myriad-chat-backend");
const HOOK_SECRET = "hook-secret-for-the-js-test-32-bytes!";
const WEBHOOK_SECRET = "webhook-secret-for-the-js-test-32-by";

let dir, backend, backendUrl, server;
const sockets = [];

function startBackend() {
  const child = spawn(
    backendBin,
    ["--listen", "127.0.0.1:0", "--db", path.join(dir, "chat.db"),
      "--hook-secret", HOOK_SECRET, "--webhook-secret", WEBHOOK_SECRET],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const log = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`backend did not start:\n${log.join("")}`)), 20000);
    child.on("exit", (code) => reject(new Error(`backend exited with ${code}:\n${log.join("")}`)));
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log.push(chunk);
      const m = log.join("").match(/chat backend listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: `http://${m[1]}` });
      }
    });
  });
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "myriad-hooks-js-"));
  ({ child: backend, url: backendUrl } = await startBackend());
  const config = path.join(dir, "myriad.toml");
  writeFileSync(config, `
[hooks]
connect = { url = "${backendUrl}/myriad/connect" }
secret = "${HOOK_SECRET}"
forward_headers = ["cookie"]

[[namespaces]]
pattern = "chat:*"
presence = true
history_size = 50
join_hook = { url = "${backendUrl}/myriad/join" }
publish_hook = { url = "${backendUrl}/myriad/publish" }
rpc_hook = { url = "${backendUrl}/myriad/rpc" }
rpc_events = ["load_more"]

[webhooks]
url = "${backendUrl}/myriad/events"
secret = "${WEBHOOK_SECRET}"
batch_interval = "50ms"
`);
  server = await startServer(["--config", config]);
});

after(async () => {
  for (const s of sockets) s.disconnect();
  const code = await server.stop();
  if (process.env.SHOW_LOG) console.error(server.log.join(""));
  backend.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
  assert.equal(code, 0, "server exits 0 on SIGTERM");
});

async function login(user) {
  const resp = await fetch(`${backendUrl}/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, password: `${user}-password` }),
  });
  assert.equal(resp.status, 200);
  return (await resp.json()).token;
}

function connect(token) {
  const socket = new Socket(server.url, {
    transport: WebSocket,
    params: token ? { sid: token } : {},
    reconnectAfterMs: () => 200,
  });
  sockets.push(socket);
  socket.connect();
  return socket;
}

function join(channel) {
  return within(5000, `join ${channel.topic}`, (ok, fail) => {
    channel.join().receive("ok", ok).receive("error", fail).receive("timeout", () => fail("timeout"));
  });
}

function joinRefused(channel) {
  return within(5000, `refused join ${channel.topic}`, (ok, fail) => {
    channel.join().receive("ok", () => fail(new Error("joined"))).receive("error", (e) => {
      channel.leave();
      ok(e);
    });
  });
}

function push(channel, event, payload) {
  return within(5000, `push ${event}`, (ok, fail) => {
    channel.push(event, payload).receive("ok", (r) => ok({ ok: r })).receive("error", (e) => ok({ error: e }))
      .receive("timeout", () => fail(new Error("push timeout")));
  });
}

test("the backend's rooms, moderation, storage and RPC through phoenix.js", async () => {
  const alice = connect(await login("alice"));
  const bob = connect(await login("bob"));

  // Alice opens a new room and gets its invite code.
  const aliceRoom = alice.channel("chat:secret", {});
  const seen = [];
  aliceRoom.on("msg", (m) => seen.push(m));
  const opened = await join(aliceRoom);
  assert.equal(opened.owner, true);
  assert.match(opened.invite, /^[0-9a-f]{8}$/);

  // Bob is refused without the code, then let in with it.
  const refused = await joinRefused(bob.channel("chat:secret", {}));
  assert.match(refused.reason, /not a member/);
  const bobRoom = bob.channel("chat:secret", { invite: opened.invite });
  await join(bobRoom);

  // A moderated push is refused and never broadcast; a clean one is stored,
  // rewritten with its id and author, and broadcast.
  const bad = await push(bobRoom, "msg", { body: "oh heck" });
  assert.match(bad.error.reason, /mind your language/);
  for (const body of ["first", "second", "third"]) {
    const sent = await push(bobRoom, "msg", { body, name: "impostor" });
    assert.ok(sent.ok.id > 0);
  }
  await within(5000, "three broadcasts", (ok) => {
    const t = setInterval(() => seen.length >= 3 && (clearInterval(t), ok()), 20);
  });
  assert.deepEqual(seen.map((m) => m.body), ["first", "second", "third"]);
  assert.ok(seen.every((m) => m.name === "bob"), "the backend sets the author");

  // The RPC: older messages from the database, to the pusher only.
  const more = await push(aliceRoom, "load_more", { before: seen[2].id });
  assert.deepEqual(more.ok.messages.map((m) => m.body), ["first", "second"]);
  assert.equal(seen.length, 3, "an RPC is not broadcast");
});

test("no login, no connection; webhook events reach the backend", async () => {
  const socket = connect(null);
  const errors = await within(5000, "a refused connect", (ok) => {
    socket.onError(() => ok(true));
  });
  assert.ok(errors);
  socket.disconnect();
  await within(5000, "webhook events stored", (ok) => {
    const t = setInterval(async () => {
      const counts = await (await fetch(`${backendUrl}/events/counts`)).json();
      if (counts.session_opened >= 2 && counts.member_added >= 2 && counts.channel_occupied >= 1) {
        clearInterval(t);
        ok();
      }
    }, 50);
  });
});
