// Starts a myriad binary on free loopback ports for one test file and stops it
// afterwards. The binary is $TEST_MYRIAD_BIN or target/debug/myriad.
// (Not MYRIAD_*: every MYRIAD_* variable is a server config key.)
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const defaultBin = path.resolve(here, "../../target/debug/myriad");

// `listen`: a fixed public address (a restart on the same port), else a free one.
export async function startServer(extraArgs = [], { listen = "127.0.0.1:0" } = {}) {
  const bin = process.env.TEST_MYRIAD_BIN || defaultBin;
  const child = spawn(
    bin,
    ["serve", "--listen", listen, "--admin-listen", "127.0.0.1:0", ...extraArgs],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const log = [];
  const addrs = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log.join("")}`)), 20000);
    child.on("exit", (code) => reject(new Error(`server exited with ${code}:\n${log.join("")}`)));
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log.push(chunk);
      const m = log.join("").match(/myriad listening public=(\S+) admin=(\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ public: m[1], admin: m[2] });
      }
    });
  });
  return {
    ...addrs,
    url: `ws://${addrs.public}/socket`,
    log,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
      child.kill("SIGTERM");
      return exited;
    },
  };
}

// Resolves with the value passed to `done`, or rejects after `ms`.
export function within(ms, what, body) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    body((value) => {
      clearTimeout(timer);
      resolve(value);
    }, (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

// Headless Chromium (Debian's, or $CHROMIUM_PATH) for the browser tests.
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
}
