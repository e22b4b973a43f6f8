// Merged presence diffs of big topics (presence_batch_members) with the real
// phoenix.js Presence class: joins and leaves that went out as one diff per
// interval, including a member who joined and left inside one window, leave
// every list exactly as separate diffs would.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
import { connectSocket } from "./phoenix_socket.mjs";
import { startServer, within } from "./server.mjs";

let server;
const sockets = [];

before(async () => {
  // Every topic of two or more members here is "big"; a long window makes
  // the merging certain.
  server = await startServer(["--presence-batch-members", "2", "--presence-batch-interval", "500ms"]);
});

after(async () => {
  for (const s of sockets) s.disconnect();
  assert.equal(await server.stop(), 0);
});

function channel(topic, name) {
  return connectSocket(server.url, sockets).channel(topic, { meta: { name } });
}

const join = (ch) =>
  within(5000, `join ${ch.topic}`, (ok, fail) => {
    ch.join().receive("ok", ok).receive("error", (e) => fail(new Error(JSON.stringify(e))));
  });

const names = (presence) => presence.list((_key, { metas }) => metas[0].name).sort();

function listed(presence, want, what) {
  return within(5000, what, (ok) => {
    const check = () => { if (names(presence).join(",") === want) ok(); };
    presence.onSync(check);
    check();
  });
}

test("merged diffs keep phoenix.js Presence lists right", async () => {
  const a = channel("chat:batched", "ann");
  const pa = new Presence(a);
  const diffs = [];
  a.on("presence_diff", (d) => diffs.push(d));
  await join(a);
  await listed(pa, "ann", "ann sees herself");

  // bob, cid and dee join; cid leaves again at once: one window.
  const b = channel("chat:batched", "bob");
  const c = channel("chat:batched", "cid");
  const d = channel("chat:batched", "dee");
  await Promise.all([join(b), join(c), join(d)]);
  await within(5000, "cid leaves", (ok) => c.leave().receive("ok", ok));
  await listed(pa, "ann,bob,dee", "ann's list after the merged diff");
  assert.ok(diffs.length < 4, `merged, not one diff per change: ${diffs.length}`);
});
