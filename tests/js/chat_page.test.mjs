// The chat page at `/` in headless Chromium (Debian `chromium`, driven by
// playwright-core): two pages chat, each sees the other in the member list,
// and a late joiner sees the history. Screenshots go to test-output/browser/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(here, "../../test-output/browser");
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
let server;
let browser;

before(async () => {
  mkdirSync(outDir, { recursive: true });
  server = await startServer([]);
  browser = await chromium.launch({
    executablePath,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  assert.equal(await server.stop(), 0);
});

async function openChat(name, room) {
  const page = await browser.newPage();
  page.setDefaultTimeout(10000);
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
