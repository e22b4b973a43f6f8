// Presence with the real phoenix.js Presence class, and history recovery
// through an unmodified client (offset read from the ref slot of broadcasts).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
import { connectSocket } from "./phoenix_socket.mjs";
import { startServer, within } from "./server.mjs";

let server;
const sockets = [];

before(async () => {
  server = await startServer([]);
});

after(async () => {
  for (const s of sockets) s.disconnect();
  assert.equal(await server.stop(), 0);
});

function connect() {
  return connectSocket(server.url, sockets);
}

function join(channel) {
  return within(5000, `join ${channel.topic}`, (ok, fail) => {
    channel.join().receive("ok", ok).receive("error", (e) => fail(new Error(JSON.stringify(e))));
  });
}

const names = (presence) =>
  presence.list((_key, { metas }) => metas[0].name).sort();

test("Presence.list shows every member and drops the one who leaves", async () => {
  const a = connect().channel("chat:presence", { meta: { name: "ann" } });
  const b = connect().channel("chat:presence", { meta: { name: "bob" } });
  const pa = new Presence(a);
  const pb = new Presence(b);
  const bothOn = (p) => within(5000, "both members listed", (ok) => {
    const check = () => { if (names(p).join(",") === "ann,bob") ok(); };
    p.onSync(check);
    check();
  });
  await join(a);
  await join(b);
  await Promise.all([bothOn(pa), bothOn(pb)]);

  const onlyAnn = within(5000, "bob left", (ok) => {
    pa.onSync(() => { if (names(pa).join(",") === "ann") ok(); });
  });
  await within(5000, "leave", (ok) => b.leave().receive("ok", ok));
  await onlyAnn;
});

test("a client that rejoins with the last offset it saw recovers exactly what it missed", async () => {
  const pubSocket = connect();
  const pub = pubSocket.channel("chat:recover", {});
  await join(pub);
  const send = (i) => within(5000, `push ${i}`, (ok) => pub.push("m", { i }).receive("ok", ok));

  // The reader tracks the last "<offset>:<epoch>" from the ref argument and
  // passes it back as `since` on every (re)join: chanParams as a function is
  // re-evaluated by phoenix.js on each rejoin.
  let last = null;
  const got = [];
  const readerSocket = connect();
  const reader = readerSocket.channel("chat:recover", () =>
    last ? { since: { offset: Number(last.split(":")[0]), epoch: last.split(":").slice(1).join(":") } } : {},
  );
  reader.on("m", (payload, ref) => {
    got.push(payload.i);
    last = ref;
  });
  await join(reader);
  for (let i = 1; i <= 3; i++) await send(i);
  await within(5000, "reader saw 1..3", (ok) => {
    const t = setInterval(() => { if (got.length === 3) { clearInterval(t); ok(); } }, 10);
  });
  assert.match(last, /^3:.+/, "the ref slot carries offset:epoch");

  // Drop the reader's connection; messages 4..6 are published while it is away.
  readerSocket.disconnect();
  for (let i = 4; i <= 6; i++) await send(i);
  let recovered;
  const rejoined = within(5000, "rejoin reply", (ok) => {
    readerSocket.onMessage((msg) => {
      if (msg.topic === "chat:recover" && msg.event === "phx_reply" && msg.payload.response?.recovered !== undefined) {
        recovered = msg.payload.response.recovered;
        ok();
      }
    });
  });
  readerSocket.connect();
  await rejoined;
  assert.equal(recovered, true);
  await send(7);
  await within(5000, "reader saw 1..7", (ok) => {
    const t = setInterval(() => { if (got.length >= 7) { clearInterval(t); ok(); } }, 10);
  });
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7], "no gap, no duplicate, in order");
});
