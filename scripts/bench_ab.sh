#!/usr/bin/env bash
# Two builds of myriad, measured alternately in one run (A B A B ...), so a change
# is judged against its base on the same machine at the same time.
# Usage: scripts/bench_ab.sh A_BIN_DIR B_BIN_DIR [idle|fanout|paced|million|connect|all] [ROUNDS]
#   paced: A, B and the strong raw baseline (myriad-load baseline-server) each
#   round, unpaced and with --publish-window 4.
#   connect: 15 000 connections as fast as 256 in flight allow (myriad: TCP +
#   upgrade + phx_join reply; the strong baseline after B: TCP + upgrade).
#   *_BIN_DIR holds `myriad` and `million` (a `target/release` or a copy of one);
#   myriad-load comes from this checkout (target/release, built here).
# Example (base = main before a change, built in a worktree):
#   git worktree add /tmp/base main && (cd /tmp/base && cargo build --release --bins --examples)
#   scripts/bench_ab.sh /tmp/base/target/release target/release all 2
# Needs taskset (util-linux). Every run is bounded (--duration, --run-for).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; what=${3:-all}; rounds=${4:-2}
cargo build --release -p myriad-loadtest --bins >/dev/null
LOAD=target/release/myriad-load
PORT=4700
URL="ws://127.0.0.1:$PORT/socket/websocket"
SP=
cleanup() { [[ -n $SP ]] && kill "$SP" 2>/dev/null || true; }
trap cleanup EXIT
start() { # bin_dir, prefix..., then serve flags after --
  local dir=$1; shift
  local prefix=(); while [[ $1 != -- ]]; do prefix+=("$1"); shift; done; shift
  "${prefix[@]}" "$dir/myriad" serve --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$((PORT + 1)) "$@" >/dev/null 2>&1 &
  SP=$!; sleep 1
}
stop() { kill "$SP"; wait "$SP" 2>/dev/null || true; SP=; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); A=$A B=$B"
for r in $(seq 1 "$rounds"); do
  for side in A B; do
    dir=$A; [[ $side == B ]] && dir=$B
    if [[ $what == all || $what == idle ]]; then
      echo "## round $r $side: 19 000 idle sessions (server RSS per connection)"
      start "$dir" env -- 
      $LOAD connect --url "$URL" --topics 100 -n 19000 --rate 4000 --duration 5s \
        --source-ips 127.0.0.2-127.0.0.3 --server-pid "$SP" --quiet
      stop
    fi
    if [[ $what == all || $what == fanout ]]; then
      echo "## round $r $side: fan-out to 15 000 subscribers, server on core 0, load on core 1"
      start "$dir" taskset -c 0 -- --client-rate 0
      taskset -c 1 $LOAD fanout --url "$URL" -n 15000 -k 200 --publish-rate 0 --rate 5000 \
        --source-ips 127.0.0.2-127.0.0.3 --duration 60s --server-pid "$SP" --quiet
      stop
    fi
    if [[ $what == all || $what == paced ]]; then
      for window in 0 4; do
        echo "## round $r $side: fan-out to 15 000 subscribers, publish window $window (0 = unpaced)"
        start "$dir" taskset -c 0 -- --client-rate 0
        flags=(); [[ $window != 0 ]] && flags=(--publish-window "$window")
        taskset -c 1 $LOAD fanout --url "$URL" -n 15000 -k 200 --publish-rate 0 "${flags[@]}" --rate 5000 \
          --source-ips 127.0.0.2-127.0.0.3 --duration 60s --server-pid "$SP" --quiet
        stop
        if [[ $side == B ]]; then
          echo "## round $r strong baseline: publish window $window"
          taskset -c 0 $LOAD baseline-server --listen 127.0.0.1:$PORT --run-for 600s >/dev/null 2>&1 &
          SP=$!; sleep 1
          taskset -c 1 $LOAD fanout --url "ws://127.0.0.1:$PORT/" --protocol raw -n 15000 -k 200 --publish-rate 0 \
            "${flags[@]}" --rate 5000 --source-ips 127.0.0.2-127.0.0.3 --duration 60s --server-pid "$SP" --quiet
          stop
        fi
      done
    fi
    if [[ $what == all || $what == connect ]]; then
      echo "## round $r $side: connect rate, 15 000 connections, 256 in flight, server on core 0"
      # Each side connects from its own source addresses: the previous run's
      # TIME_WAIT sockets would otherwise slow whichever side runs next.
      src=127.0.0.2-127.0.0.3; [[ $side == B ]] && src=127.0.0.4-127.0.0.5
      start "$dir" taskset -c 0 -- --client-rate 0 --accept-rate 0
      taskset -c 1 $LOAD connect --url "$URL" --topics 100 -n 15000 --concurrency 256 --duration 1s \
        --source-ips "$src" --server-pid "$SP" --quiet
      stop
      if [[ $side == B ]]; then
        echo "## round $r strong baseline: connect rate (TCP + upgrade only)"
        taskset -c 0 $LOAD baseline-server --listen 127.0.0.1:$PORT --run-for 600s >/dev/null 2>&1 &
        SP=$!; sleep 1
        taskset -c 1 $LOAD connect --url "ws://127.0.0.1:$PORT/" --protocol raw -n 15000 --concurrency 256 \
          --duration 1s --source-ips 127.0.0.6-127.0.0.7 --server-pid "$SP" --quiet
        stop
      fi
    fi
    if [[ $what == all || $what == million ]]; then
      echo "## round $r $side: 1 000 000 sessions over in-memory pipes, one broadcast"
      "$dir/million" --sessions 1000000 --topics 1000 --broadcasts 1
    fi
  done
done
