// Token auth with the real phoenix.js client: `params: {token}` and the 1.8
// `authToken` option (sent as the base64url.bearer.phx. subprotocol).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Socket, Presence } from "phoenix";
import WebSocket from "ws";
import { startServer, within } from "./server.mjs";

const SECRET = "js-test-secret-of-at-least-32-bytes";
let server;
const sockets = [];

function jwt(claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = createHmac("sha256", SECRET).update(body).digest("base64url");
  return `${body}.${sig}`;
}
const token = (sub) => jwt({ sub, exp: Math.floor(Date.now() / 1000) + 60 });

before(async () => {
  server = await startServer(["--anonymous", "false", "--jwt-secret", SECRET]);
});

after(async () => {
  for (const s of sockets) s.disconnect();
  assert.equal(await server.stop(), 0);
});

function connect(opts) {
  const socket = new Socket(server.url, { transport: WebSocket, reconnectAfterMs: () => 1000, ...opts });
  sockets.push(socket);
  socket.connect();
  return socket;
}

function joinOk(channel) {
  return within(5000, `join ${channel.topic}`, (ok, fail) => {
    channel.join().receive("ok", ok).receive("error", (e) => fail(new Error(JSON.stringify(e))));
  });
}

test("a token in params connects, and its sub is the presence key", async () => {
  const s = connect({ params: { token: token("alice") } });
  const ch = s.channel("chat:auth-js", {});
  const presence = new Presence(ch);
  const listed = within(5000, "alice listed", (ok) => {
    presence.onSync(() => {
      if (presence.list((key) => key).includes("alice")) ok();
    });
  });
  await joinOk(ch);
  await listed;
});

test("the authToken option (subprotocol) connects", async () => {
  const s = connect({ authToken: token("bob") });
  await joinOk(s.channel("room:auth-js", {}));
  assert.equal(s.isConnected(), true);
});

test("a bad token is refused before the upgrade", async () => {
  const s = connect({ params: { token: "not-a-jwt" } });
  let opened = false;
  s.onOpen(() => {
    opened = true;
  });
  await within(5000, "socket error", (ok) => s.onError(ok));
  assert.equal(opened, false);
  assert.equal(s.isConnected(), false);
  s.disconnect();
});
