#!/usr/bin/env bash
# The measurements behind BENCHMARKS.md, in one run, each next to its baseline.
# Usage: scripts/bench.sh [million|idle|fanout|paced|connect|cluster|criterion|all]   (default: all)
# (cluster needs redis-server)
# Needs: release builds (done here), taskset (util-linux). Every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
cargo build --release --workspace --bins --examples >/dev/null
LOAD=target/release/myriad-load
PORT=4600
URL_PHX="ws://127.0.0.1:$PORT/socket/websocket"
URL_RAW="ws://127.0.0.1:$PORT/"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_myriad() { # extra flags...
  $1 target/release/myriad serve --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$((PORT + 1)) "${@:2}" >/dev/null 2>&1 &
  SP=$!; pids+=("$SP"); sleep 1
}
start_baseline() { # wrapper, extra flags (--naive)...
  $1 "$LOAD" baseline-server --listen 127.0.0.1:$PORT --run-for 600s "${@:2}" >/dev/null 2>&1 &
  SP=$!; pids+=("$SP"); sleep 1
}
stop() { kill "$SP"; wait "$SP" 2>/dev/null || true; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), $(rustc --version)"

if [[ $what == all || $what == million ]]; then
  echo "## million sessions over in-memory pipes"
  target/release/examples/million --sessions 1000000 --topics 1000
  target/release/examples/million --sessions 1000000 --topics 1000 --mode pipes
fi

if [[ $what == all || $what == idle ]]; then
  echo "## 19 000 idle sessions over loopback sockets (server RSS per connection)"
  for v in myriad baseline; do
    echo "### $v"
    if [[ $v == myriad ]]; then start_myriad ""; url=$URL_PHX; proto="--topics 100"; else start_baseline ""; url=$URL_RAW; proto="--protocol raw"; fi
    $LOAD connect --url "$url" $proto -n 19000 --rate 4000 --duration 5s \
      --source-ips 127.0.0.2-127.0.0.3 --server-pid "$SP" --quiet
    stop
  done
fi

if [[ $what == all || $what == fanout ]]; then
  echo "## fan-out to 15 000 subscribers, server pinned to core 0, load on core 1"
  # baseline = the strong plain server; naive = baseline-server --naive.
  for v in baseline myriad naive baseline myriad naive; do
    echo "### $v"
    case $v in
      myriad) start_myriad "taskset -c 0" --client-rate 0; url=$URL_PHX; proto="" ;;
      baseline) start_baseline "taskset -c 0"; url=$URL_RAW; proto="--protocol raw" ;;
      naive) start_baseline "taskset -c 0" --naive; url=$URL_RAW; proto="--protocol raw" ;;
    esac
    taskset -c 1 $LOAD fanout --url "$url" $proto -n 15000 -k 200 --publish-rate 0 --rate 5000 \
      --source-ips 127.0.0.2-127.0.0.3 --duration 60s --server-pid "$SP" --quiet
    stop
  done
fi

if [[ $what == all || $what == paced ]]; then
  echo "## paced fan-out to 15 000 subscribers (--publish-window 4: message k waits until k-4 reached 95 %), server on core 0"
  for v in baseline myriad baseline myriad; do
    echo "### $v"
    case $v in
      myriad) start_myriad "taskset -c 0" --client-rate 0; url=$URL_PHX; proto="" ;;
      baseline) start_baseline "taskset -c 0"; url=$URL_RAW; proto="--protocol raw" ;;
    esac
    taskset -c 1 $LOAD fanout --url "$url" $proto -n 15000 -k 200 --publish-rate 0 --publish-window 4 \
      --rate 5000 --source-ips 127.0.0.2-127.0.0.3 --duration 60s --server-pid "$SP" --quiet
    stop
  done
fi

if [[ $what == all || $what == connect ]]; then
  echo "## connect rate, 15 000 connections as fast as 256 in flight allow, server on core 0"
  echo "## (myriad: TCP connect + upgrade + phx_join reply; baseline: TCP connect + upgrade)"
  for v in baseline myriad baseline myriad; do
    echo "### $v"
    case $v in
      myriad) start_myriad "taskset -c 0" --client-rate 0 --accept-rate 0; url=$URL_PHX; proto="--topics 100" ;;
      baseline) start_baseline "taskset -c 0"; url=$URL_RAW; proto="--protocol raw" ;;
    esac
    taskset -c 1 $LOAD connect --url "$url" $proto -n 15000 --concurrency 256 --duration 1s \
      --source-ips 127.0.0.2-127.0.0.3 --server-pid "$SP" --quiet
    stop
  done
fi

if [[ $what == all || $what == cluster ]]; then
  echo "## fan-out across three nodes on Redis vs one node (15 000 subscribers, 100 msgs at 20/s)"
  RPORT=6399
  redis-server --port $RPORT --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  pids+=("$!"); sleep 0.5
  urls=()
  for i in 0 1 2; do
    p=$((PORT + 10 * i))
    target/release/myriad serve --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$((p + 1)) --client-rate 0 \
      --broker redis --broker-url redis://127.0.0.1:$RPORT >/dev/null 2>&1 &
    pids+=("$!"); urls+=("ws://127.0.0.1:$p/socket/websocket")
  done
  sleep 1
  echo "### one node (of the cluster)"
  $LOAD fanout --url "${urls[0]}" -n 15000 -k 100 --publish-rate 20 --rate 5000 \
    --source-ips 127.0.0.2-127.0.0.3 --duration 60s --topic room:one --quiet
  echo "### three nodes: subscribers round robin, publisher on node 1"
  $LOAD fanout --url "$(IFS=,; echo "${urls[*]}")" -n 15000 -k 100 --publish-rate 20 --rate 5000 \
    --source-ips 127.0.0.2-127.0.0.3 --duration 60s --topic room:three --quiet
fi

if [[ $what == all || $what == criterion ]]; then
  echo "## criterion"
  cargo bench --bench protocol -- --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^[a-z_/0-9]+ +time:|^[a-z_]+/[a-z_0-9/]+$|time:" || true
fi
