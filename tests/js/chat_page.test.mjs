// The chat page at `/` in headless Chromium (Debian `chromium`, driven by
// playwright-core): two pages chat, each sees the other in the member list,
// and a late joiner sees the history; across a server restart (a new history
// epoch) the page says what it could not recover and shows what comes next.
// Screenshots go to test-output/browser/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, launchBrowser } from "./server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(here, "../../test-output/browser");
let server;
let browser;

before(async () => {
  mkdirSync(outDir, { recursive: true });
  server = await startServer([]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  assert.equal(await server.stop(), 0);
});

async function openChat(name, room) {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`http://${server.public}/`);
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join-btn");
  await page.waitForSelector("#chat.on");
  return page;
}

const members = (page) => page.$$eval("#members li", (lis) => lis.map((li) => li.textContent));

test("two pages chat and see each other online; a late joiner sees history", async () => {
  const ann = await openChat("Ann", "e2e");
  const bob = await openChat("Bob", "e2e");
  for (const page of [ann, bob]) {
    await page.waitForFunction(() => document.querySelectorAll("#members li").length === 2);
    assert.deepEqual(await members(page), ["Ann", "Bob"]);
  }

  await ann.fill("#text", "hello from Ann");
  await ann.click("#send-btn");
  await bob.waitForSelector("text=hello from Ann");
  await bob.fill("#text", "hi Ann");
  await bob.click("#send-btn");
  await ann.waitForSelector("text=hi Ann");

  const cat = await openChat("Cat", "e2e");
  await cat.waitForSelector("text=hello from Ann");
  await cat.waitForSelector("text=hi Ann");
  await ann.waitForFunction(() => document.querySelectorAll("#members li").length === 3);

  await ann.screenshot({ path: path.join(outDir, "chat-ann.png") });
  await bob.screenshot({ path: path.join(outDir, "chat-bob.png") });

  // Bob leaves: Ann's member list drops him.
  await bob.close();
  await ann.waitForFunction(() => !Array.from(document.querySelectorAll("#members li")).some((li) => li.textContent === "Bob"));
  assert.deepEqual(await members(ann), ["Ann", "Cat"]);
});

test("after a restart (new epoch) the page shows the gap and the messages that follow", async () => {
  const ann = await openChat("Ann", "epochs");
  await ann.fill("#text", "before the restart");
  await ann.click("#send-btn");
  await ann.waitForSelector("text=before the restart");

  // The same address, a fresh node: the topic's history starts again at
  // offset 1 under a new epoch.
  const address = server.public;
  assert.equal(await server.stop(), 0);
  server = await startServer([], { listen: address });
  await ann.waitForSelector("text=could not be recovered", { timeout: 20000 });
  await ann.waitForFunction(() => document.getElementById("status").textContent.startsWith("joined"));

  const bob = await openChat("Bob", "epochs");
  await bob.fill("#text", "after the restart");
  await bob.click("#send-btn");
  // Offset 1 of the new epoch is not "already shown" (offset 1 of the old one was).
  await ann.waitForSelector("text=after the restart");
  await ann.screenshot({ path: path.join(outDir, "chat-after-restart.png") });
  const lines = await ann.$$eval("#log .msg", (ds) => ds.map((d) => d.textContent));
  assert.deepEqual(
    lines.filter((l) => !l.startsWith("some messages")),
    ["Ann: before the restart", "Bob: after the restart"],
  );
  await bob.close();
  await ann.close();
});
