// A real EventSource in headless Chromium reading /sse: broadcasts arrive as
// messages with ids, and a new EventSource resuming from the last id (the
// `last_event_id` query parameter, for clients that cannot set the header)
// gets exactly the broadcasts it missed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
let server;
let browser;

before(async () => {
  server = await startServer(["--api-keys", "k"]);
  browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  assert.equal(await server.stop(), 0);
});

async function publish(n) {
  const resp = await fetch(`http://${server.public}/api/broadcast`, {
    method: "POST",
    headers: { authorization: "Bearer k", "content-type": "application/json" },
    body: JSON.stringify({ topic: "chat:es", event: "msg", payload: { n } }),
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
