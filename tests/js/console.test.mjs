// The admin console (admin_ui = true) in headless Chromium: a wrong key is
// refused, the right one logs in, a session this test opens (phoenix.js)
// appears with its topic, the page shows the topic's presence, broadcasts to
// it (the session receives the message) and disconnects its user.
// Screenshots go to test-output/browser/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createHmac } from "node:crypto";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { startServer, within, launchBrowser } from "./server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(here, "../../test-output/browser");
const KEY = "console-test-key";
const SECRET = "console-test-secret-of-at-least-32-bytes!";

// An HS256 connect token for `sub`.
function jwt(sub) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = enc({ alg: "HS256", typ: "JWT" }) + "." + enc({ sub, exp: Math.floor(Date.now() / 1000) + 600 });
  return body + "." + createHmac("sha256", SECRET).update(body).digest("base64url");
}
let server;
let browser;

before(async () => {
  mkdirSync(outDir, { recursive: true });
  server = await startServer(["--admin-ui", "--api-keys", KEY, "--jwt-secret", SECRET]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  assert.equal(await server.stop(), 0);
});

test("the console is off by default and served only on the admin listener", async () => {
  const plain = await startServer([]);
  try {
    assert.equal((await fetch(`http://${plain.admin}/console`)).status, 404);
  } finally {
    await plain.stop();
  }
  assert.equal((await fetch(`http://${server.public}/console`)).status, 404, "not on the public listener");
  const overview = await fetch(`http://${server.admin}/console/overview`);
  assert.equal(overview.status, 401, "figures need the key");
});

test("log in, see a session appear, look at its topic, broadcast to it, disconnect it", async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`http://${server.admin}/console`);

  await page.fill("#key", "wrong-key");
  await page.click("#login-btn");
  await page.waitForSelector("text=missing or wrong API key");
  assert.equal(await page.$("#app.on"), null);

  await page.fill("#key", KEY);
  await page.click("#login-btn");
  await page.waitForSelector("#app.on");
  await page.waitForSelector("#nodes >> text=this node");
  await page.screenshot({ path: path.join(outDir, "console-empty.png"), fullPage: true });

  // A session of our own, in a presence topic.
  const socket = new Socket(server.url, { transport: WebSocket, params: { token: jwt("dee") }, reconnectAfterMs: () => 60000 });
  socket.connect();
  const channel = socket.channel("chat:console", { meta: { name: "Dee" } });
  await within(5000, "join", (ok, fail) => channel.join().receive("ok", ok).receive("error", fail));
  const got = new Promise((resolve) => channel.on("shout", resolve));

  await page.waitForSelector("#topics >> text=chat:console", { timeout: 10000 });
  const sessions = await page.$eval("#nodes tbody tr td:nth-child(2)", (td) => Number(td.textContent));
  assert.ok(sessions >= 1, `sessions shown: ${sessions}`);

  await page.click("#topics >> text=chat:console");
  await page.waitForSelector("#presence >> text=Dee");

  await page.fill("#b-topic", "chat:console");
  await page.fill("#b-event", "shout");
  await page.fill("#b-payload", '{"body":"from the console"}');
  await page.click("#broadcast-btn");
  await page.waitForSelector("#broadcast-result >> text=delivered to 1");
  const message = await within(5000, "broadcast reaches the session", (ok) => got.then(ok));
  assert.deepEqual(message, { body: "from the console" });
  await page.screenshot({ path: path.join(outDir, "console-session.png"), fullPage: true });

  // The session's user is its token's `sub`, as the presence view shows.
  const presence = JSON.parse(await page.$eval("#presence", (p) => p.textContent));
  const user = Object.keys(presence.presences)[0];
  assert.equal(user, "dee");
  const closed = new Promise((resolve) => socket.onClose(resolve));
  await page.fill("#d-user", user);
  await page.click("#disconnect-form button");
  await page.waitForFunction(() => document.getElementById("disconnect-result").textContent !== "");
  const result = await page.$eval("#disconnect-result", (p) => p.textContent);
  assert.match(result, /^1 session\(s\) closed/, result);
  await within(5000, "the session is closed", (ok) => closed.then(ok));
  socket.disconnect();
  await page.close();
});
