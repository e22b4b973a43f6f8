#!/usr/bin/env bash
# What the backend hooks cost (BENCHMARKS.md, "Hooks"): the same runs against one
# myriad without hooks and with a join and a publish hook answered at once by
# `myriad-load backend`, alternately (plain, hooked, plain, hooked ...), then one
# run against a backend that answers in 2 s.
# Usage: scripts/bench_hooks.sh [ROUNDS]
# Server on core 0, load and stub on core 1 (taskset). Every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
cargo build --release -p myriad -p myriad-loadtest --bins >/dev/null
BIN=target/release/myriad
LOAD=target/release/myriad-load
PORT=4720
STUB=127.0.0.1:4730
URL="ws://127.0.0.1:$PORT/socket/websocket"
TMP=$(mktemp -d)
SP=; BP=
cleanup() {
  [[ -n $SP ]] && kill "$SP" 2>/dev/null || true
  [[ -n $BP ]] && kill "$BP" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/plain.toml" <<TOML
client_rate = 0
[[namespaces]]
pattern = "room:*"
TOML
cat >"$TMP/hooked.toml" <<TOML
client_rate = 0
[hooks]
max_in_flight = 1024
[[namespaces]]
pattern = "room:*"
join_hook = { url = "http://$STUB/join" }
publish_hook = { url = "http://$STUB/publish" }
TOML

stub() { # delay
  taskset -c 1 $LOAD backend --listen "$STUB" --delay "$1" --run-for 300s >"$TMP/stub.out" 2>/dev/null &
  BP=$!; sleep 0.5
}
start() { # config
  taskset -c 0 $BIN serve --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$((PORT + 1)) \
    --config "$1" >/dev/null 2>&1 &
  SP=$!; sleep 1
}
stop() { kill "$SP"; wait "$SP" 2>/dev/null || true; SP=; }
metric() { curl -s "http://127.0.0.1:$((PORT + 1))/metrics" | grep -E "^$1" || true; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r)"
stub 0s
for r in $(seq 1 "$rounds"); do
  for side in plain hooked; do
    echo "## round $r $side: connect + join, 5000 connections over 100 topics, unpaced"
    start "$TMP/$side.toml"
    taskset -c 1 $LOAD connect --url "$URL" -n 5000 --topics 100 --concurrency 256 \
      --duration 1s --source-ips 127.0.0.2-127.0.0.3 --server-pid "$SP" --quiet
    stop
    echo "## round $r $side: chat, 50 rooms x 10 members, each pushing 2/s for 10 s (1000 pushes/s)"
    start "$TMP/$side.toml"
    taskset -c 1 $LOAD chat --url "$URL" --rooms 50 --members 10 --msg-rate 2 \
      --duration 10s --server-pid "$SP" --quiet
    stop
  done
done
echo "## overload: hooked chat at 10 000 pushes/s (each member 20/s): what is shed"
start "$TMP/hooked.toml"
taskset -c 1 $LOAD chat --url "$URL" --rooms 50 --members 10 --msg-rate 20 \
  --duration 10s --server-pid "$SP" --quiet || true
metric 'myriad_hook_requests_total\{hook="publish"'
metric 'myriad_client_refusals_total\{reason="too_many_pending"'
stop
kill "$BP"; wait "$BP" 2>/dev/null || true; BP=
echo "stub answered: $(cat "$TMP/stub.out")"

echo "## a backend that answers in 2 s: 3000 joins at once (max_in_flight 1024)"
stub 2s
start "$TMP/hooked.toml"
taskset -c 1 $LOAD connect --url "$URL" -n 3000 --topics 100 --concurrency 3000 \
  --connect-timeout 10s --duration 3s --source-ips 127.0.0.2-127.0.0.3 --server-pid "$SP" --quiet || true
metric 'myriad_hook_(requests_total\{hook="join"|in_flight)'
metric 'myriad_process_resident_memory_bytes'
metric 'myriad_join_refusals_total\{reason="backend_unavailable"'
stop
