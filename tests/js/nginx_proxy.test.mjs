// The chat page through the deploy kit's nginx configuration
// (deploy/nginx/nginx.conf, only its upstream addresses and listen port
// changed for loopback): the page loads, its WebSocket passes the Origin check
// (nginx forwards Host with its port, $http_host), and a message goes round.
// The same file with `Host $host` (the port dropped) is refused, which shows
// the test would catch that regression. Needs Debian's nginx and chromium
// (scripts/test.sh installs both).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, launchBrowser } from "./server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const outDir = path.join(root, "test-output/browser");
const nginxBin = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => spawnSync(p, ["-v"]).status === 0);
let server;
let browser;

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

// deploy/nginx/nginx.conf pointed at `upstream` and listening on `port`, with
// its pid, logs and temporary files in `dir` (nginx runs unprivileged here).
function loopbackConfig(dir, port, upstream, hostHeader) {
  let conf = readFileSync(path.join(root, "deploy/nginx/nginx.conf"), "utf8");
  const servers = conf.match(/^\s*server myriad-\d:4000[^\n]*\n/gm);
  assert.ok(servers && servers.length >= 1, "the upstream block lists the nodes");
  conf = conf.replace(/(^\s*server myriad-\d:4000[^\n]*\n)+/m, `    server ${upstream};\n`);
  assert.match(conf, /listen 8080;/);
  conf = conf.replace("listen 8080;", `listen 127.0.0.1:${port};`);
  conf = conf.replace("worker_processes auto;", "worker_processes 1;");
  conf = conf.replace("worker_connections 65536;", "worker_connections 512;");
  if (hostHeader) conf = conf.replace("proxy_set_header Host $http_host;", `proxy_set_header Host ${hostHeader};`);
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((t) => `  ${t}_temp_path ${dir}/${t};`)
    .join("\n");
  conf = conf.replace("http {", `http {\n  access_log off;\n${temp}`);
  conf = `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\n` + conf;
  const file = path.join(dir, "nginx.conf");
  writeFileSync(file, conf);
  return file;
}

async function startNginx(hostHeader) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "myriad-nginx-"));
  const port = await freePort();
  const file = loopbackConfig(dir, port, server.public, hostHeader);
  const check = spawnSync(nginxBin, ["-t", "-c", file, "-p", dir]);
  assert.equal(check.status, 0, `nginx -t: ${check.stderr}`);
  const child = spawn(nginxBin, ["-c", file, "-p", dir, "-g", "daemon off;"], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => { s.end(); resolve(true); }).on("error", () => resolve(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}/`,
    stop: () => new Promise((resolve) => { child.on("exit", resolve); child.kill("SIGQUIT"); }),
  };
}

before(async () => {
  assert.ok(nginxBin, "nginx must be installed (scripts/test.sh installs Debian's nginx)");
  mkdirSync(outDir, { recursive: true });
  server = await startServer([]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  assert.equal(await server.stop(), 0);
});

test("the chat page works behind the deploy kit's nginx (Host keeps its port)", async () => {
  const proxy = await startNginx(null);
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(proxy.url);
    await page.fill("#name", "Ann");
    await page.fill("#room", "proxied");
    await page.click("#join-btn");
    await page.waitForSelector("#chat.on");
    await page.fill("#text", "through nginx");
    await page.click("#send-btn");
    await page.waitForSelector("text=through nginx");
    await page.screenshot({ path: path.join(outDir, "chat-through-nginx.png") });
    await page.close();
  } finally {
    await proxy.stop();
  }
});

test("the same configuration with `Host $host` would be refused by the Origin check", async () => {
  const proxy = await startNginx("$host");
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(proxy.url);
    await page.fill("#name", "Bob");
    await page.fill("#room", "proxied");
    await page.click("#join-btn");
    await page.waitForFunction(() => document.getElementById("status").textContent.includes("reconnecting"));
    assert.equal(await page.$("#chat.on"), null, "never joined");
    await page.close();
  } finally {
    await proxy.stop();
  }
});
