#!/usr/bin/env bash
# A reconnect storm on this machine (BENCHMARKS.md, "Reconnect storms"): three
# release nodes on one redis-server, 18 000 subscribers of a history topic of
# which 15 000 are on node A; node A is drained (SIGTERM) or killed (SIGKILL)
# while a publisher publishes through node B. Run with the door changes
# ("after": listen_backlog 4096, drain waves, broker_timeout 5s) and without
# them ("before": backlog 128, every session closed at once, 500 ms broker
# timeout, as the code was).
# Usage: scripts/bench_storm.sh [before|after|both] [term|kill|both]
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
signals=${2:-both}
export PATH="$PATH:/usr/sbin"
cargo build --release -p myriad -p myriad-loadtest --bins >/dev/null
BIN=target/release/myriad
LOAD=target/release/myriad-load
RPORT=6479
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap 'cleanup; rm -f "${CONF:-}"' EXIT
# A history namespace without presence: with presence, every one of 18 000
# joins would be a presence_diff to every member (the presence-at-scale part
# of the issue), which is not what this measures.
CONF=$(mktemp /tmp/myriad-storm-XXXX.toml)
cat >"$CONF" <<'TOML'
[[namespaces]]
pattern = "storm:*"
history_size = 1000
history_ttl = "10m"
TOML
before_flags=(--listen-backlog 128 --drain-batch-size 0 --broker-timeout 500ms)
after_flags=()
run() { # $1 before|after, $2 term|kill
  redis-server --port $RPORT --save "" --appendonly no >/dev/null & local rp=$!
  PIDS+=("$rp"); sleep 0.5
  local flags=("${after_flags[@]}")
  [[ $1 == before ]] && flags=("${before_flags[@]}")
  local pids=()
  for i in 0 1 2; do
    $BIN serve --listen 127.0.0.1:$((4700 + i)) --admin-listen 127.0.0.1:$((4750 + i)) \
      --broker redis --broker-url redis://127.0.0.1:$RPORT --client-rate 0 \
      --max-connections 40000 --config "$CONF" "${flags[@]}" >/tmp/myriad-storm-$i.log 2>&1 &
    pids+=($!); PIDS+=($!)
  done
  sleep 2
  local a=ws://127.0.0.1:4700/socket/websocket
  local urls=$a
  for _ in $(seq 2 10); do urls="$urls,$a"; done
  urls="$urls,ws://127.0.0.1:4701/socket/websocket,ws://127.0.0.1:4702/socket/websocket"
  echo "## $1, SIG${2^^}: 18 000 subscribers (15 000 on node A), node A stopped 8 s in"
  $LOAD storm --url "$urls" --victim 0 --victim-pid "${pids[0]}" --signal "$2" --signal-after 8s \
    --topic storm:bench -n 18000 -k 400 --publish-rate 25 --rate 2000 --workers 2 \
    --source-ips 127.0.0.2-127.0.0.9 --duration 30s --grace 20s --quiet || true
  for p in "${pids[@]}" "$rp"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
  sleep 1
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), somaxconn $(cat /proc/sys/net/core/somaxconn)"
for w in before after; do
  [[ $which == both || $which == "$w" ]] || continue
  for s in term kill; do
    [[ $signals == both || $signals == "$s" ]] || continue
    run "$w" "$s"
  done
done
