#!/usr/bin/env bash
# Subscribers over WebSocket and over Server-Sent Events, alternately in one run
# (BENCHMARKS.md, "Transports"): server RSS per subscriber (connections per GiB)
# and fan-out deliveries/s, for WebSocket, SSE and long-poll subscribers.
# Usage: scripts/bench_transports.sh [ROUNDS]. Server on core 0, load on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
cargo build --release -p myriad -p myriad-loadtest --bins >/dev/null
BIN=target/release/myriad
LOAD=target/release/myriad-load
PORT=4760
URL="ws://127.0.0.1:$PORT/socket/websocket"
SP=
cleanup() { [[ -n $SP ]] && kill "$SP" 2>/dev/null || true; }
trap cleanup EXIT
start() {
  taskset -c 0 $BIN serve --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$((PORT + 1)) \
    --client-rate 0 --api-keys bench >/dev/null 2>&1 &
  SP=$!; sleep 1
}
stop() { kill "$SP"; wait "$SP" 2>/dev/null || true; SP=; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r)"
for r in $(seq 1 "$rounds"); do
  for transport in websocket sse longpoll; do
    echo "## round $r $transport: fan-out to 5 000 subscribers, 100 messages via the API"
    start
    taskset -c 1 $LOAD fanout --transport "$transport" --url "$URL" -n 5000 -k 100 \
      --publish-via api --api-key bench --publish-rate 0 --rate 4000 \
      --source-ips 127.0.0.2-127.0.0.3 --duration 60s --server-pid "$SP" --quiet
    stop
  done
done
