// Measures server RSS per idle Phoenix session over real loopback sockets:
// starts `myriad serve` (release build unless $TEST_MYRIAD_BIN), opens N
// connections (each joins one topic and sends one heartbeat), reads the
// server's RSS from /proc before and after, and prints KiB per session.
// Usage: node scripts/idle_rss.mjs [N]   (bounded: N ≤ 15000, 60 s overall)
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../tests/js/package.json"));
const WebSocket = require("ws");

const N = Math.min(Number(process.argv[2] || 5000), 15000);
const bin = process.env.TEST_MYRIAD_BIN || path.join(here, "../target/release/myriad");
setTimeout(() => { console.error("timed out"); process.exit(2); }, 60000).unref();

const rss = (pid) => Number(readFileSync(`/proc/${pid}/statm`, "utf8").split(" ")[1]) * 4096;
const server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--idle-timeout", "0s"], { stdio: ["ignore", "ignore", "pipe"] });
let log = "";
const url = await new Promise((resolve) => {
  server.stderr.on("data", (c) => {
    log += c;
    const m = log.match(/public=(\S+)/);
    if (m) resolve(`ws://${m[1]}/socket/websocket?vsn=2.0.0`);
  });
});
const before = rss(server.pid);
const sockets = [];
let ready = 0;
await new Promise((resolve, reject) => {
  const open = (i) => {
    if (i >= N) return;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    sockets.push(ws);
    ws.on("error", reject);
    ws.on("open", () => {
      ws.send(JSON.stringify([String(i), String(i), `room:${i % 100}`, "phx_join", {}]));
      ws.send(JSON.stringify([null, "hb", "phoenix", "heartbeat", {}]));
      open(i + 64);
    });
    ws.on("message", (data) => {
      if (String(data).includes('"hb"')) {
        ready += 1;
        if (ready === N) resolve();
      }
    });
  };
  for (let i = 0; i < 64; i++) open(i);
});
const after = rss(server.pid);
console.log(JSON.stringify({ sessions: N, rss_before_kib: Math.round(before / 1024), rss_after_kib: Math.round(after / 1024), kib_per_session: +((after - before) / 1024 / N).toFixed(2) }));
for (const ws of sockets) ws.terminate();
server.kill("SIGTERM");
