// Presence in `presence_mode = "count"` with the real phoenix.js Presence
// class: a joiner gets an empty presence_state and a presence_count, then the
// usual diffs; Presence.list() follows the members who join after it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as pathJoin } from "node:path";
import { Presence } from "phoenix";
import { connectSocket } from "./phoenix_socket.mjs";
import { startServer, within } from "./server.mjs";

let server;
const sockets = [];

before(async () => {
  const dir = mkdtempSync(pathJoin(tmpdir(), "myriad-count-"));
  const config = pathJoin(dir, "myriad.toml");
  writeFileSync(config, '[[namespaces]]\npattern = "big:*"\npresence = true\npresence_mode = "count"\n');
  server = await startServer(["--config", config]);
});

after(async () => {
  for (const s of sockets) s.disconnect();
  assert.equal(await server.stop(), 0);
});

function channel(topic, name) {
  return connectSocket(server.url, sockets).channel(topic, { meta: { name } });
}

function join(ch) {
  return within(5000, `join ${ch.topic}`, (ok, fail) => {
    ch.join().receive("ok", ok).receive("error", (e) => fail(new Error(JSON.stringify(e))));
  });
}

const names = (presence) => presence.list((_key, { metas }) => metas[0].name).sort();

test("count mode: joiners get the count, and Presence follows the diffs", async () => {
  const a = channel("big:lobby", "ann");
  await join(a);
  const b = channel("big:lobby", "bob");
  const pb = new Presence(b);
  const counted = within(5000, "presence_count", (ok) => b.on("presence_count", ok));
  let states = 0;
  b.on("presence_state", (s) => { states += 1; assert.deepEqual(s, {}, "no member list"); });
  await join(b);
  // ann and bob: two sessions present, though bob's list starts empty.
  assert.deepEqual(await counted, { count: 2 });
  await within(5000, "bob sees himself", (ok) => {
    const check = () => { if (names(pb).join(",") === "bob") ok(); };
    pb.onSync(check);
    check();
  });
  // A later joiner shows up in bob's list through the diff, and leaves it.
  const c = channel("big:lobby", "cid");
  await join(c);
  await within(5000, "cid listed", (ok) => {
    const check = () => { if (names(pb).join(",") === "bob,cid") ok(); };
    pb.onSync(check);
    check();
  });
  await within(5000, "cid leaves", (ok) => c.leave().receive("ok", ok));
  await within(5000, "cid gone", (ok) => {
    const check = () => { if (names(pb).join(",") === "bob") ok(); };
    pb.onSync(check);
    check();
  });
  assert.equal(states, 1);
});
