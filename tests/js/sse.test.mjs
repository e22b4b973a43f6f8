// A real EventSource in headless Chromium reading /sse: broadcasts arrive as
// messages with ids, and a new EventSource resuming from the last id (the
// `last_event_id` query parameter, for clients that cannot set the header)
// gets exactly the broadcasts it missed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser } from "./server.mjs";

let server;
let browser;

before(async () => {
  // Streams end after ~1.5 s: the browser's own reconnect is exercised too.
  server = await startServer(["--api-keys", "k", "--sse-max-age", "1500ms"]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  assert.equal(await server.stop(), 0);
});

async function publish(n, topic = "chat:es") {
  const resp = await fetch(`http://${server.public}/api/broadcast`, {
    method: "POST",
    headers: { authorization: "Bearer k", "content-type": "application/json" },
    body: JSON.stringify({ topic, event: "msg", payload: { n } }),
  });
  assert.equal(resp.status, 200);
}

test("EventSource receives broadcasts and resumes from its last id", async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(10000);
  await page.goto(`http://${server.public}/`);
  const open = (query) => page.evaluate((q) => {
    window.got = window.got || [];
    window.es = new EventSource(`/sse?topics=chat:es${q}`);
    window.es.onmessage = (e) => window.got.push({ id: e.lastEventId, n: JSON.parse(e.data).payload.n });
    return new Promise((resolve) => window.es.addEventListener("ready", (e) => {
      window.lastId = e.lastEventId;
      resolve();
    }));
  }, query);
  await open("");
  await publish(1);
  await publish(2);
  await page.waitForFunction(() => window.got.length === 2);
  const lastId = await page.evaluate(() => {
    window.es.close();
    return window.got[window.got.length - 1].id;
  });
  assert.ok(lastId.length > 0, "history events carry an id");
  await publish(3);
  await publish(4);
  await open(`&last_event_id=${encodeURIComponent(lastId)}`);
  await publish(5);
  await page.waitForFunction(() => window.got.length === 5);
  assert.deepEqual(await page.evaluate(() => window.got.map((g) => g.n)), [1, 2, 3, 4, 5]);
});

test("when the server ends the stream, EventSource reconnects by itself and misses nothing", async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`http://${server.public}/`);
  await page.evaluate(() => {
    window.auto = [];
    window.drops = 0;
    window.opens = 0;
    const es = new EventSource("/sse?topics=chat:auto");
    es.onmessage = (e) => window.auto.push(JSON.parse(e.data).payload.n);
    es.onerror = () => { window.drops += 1; };
    es.addEventListener("ready", () => { window.opens += 1; });
  });
  await page.waitForFunction(() => window.opens === 1);
  await publish(1, "chat:auto");
  await page.waitForFunction(() => window.auto.length === 1);
  // The stream is rotated (sse_max_age); while the browser waits its retry
  // time, two more broadcasts happen.
  await page.waitForFunction(() => window.drops >= 1);
  await publish(2, "chat:auto");
  await publish(3, "chat:auto");
  await page.waitForFunction(() => window.opens >= 2 && window.auto.length === 3);
  assert.deepEqual(await page.evaluate(() => window.auto), [1, 2, 3]);
});
