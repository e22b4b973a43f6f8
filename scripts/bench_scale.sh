#!/usr/bin/env bash
# Past one process (BENCHMARKS.md, "Past one process"): five release nodes on one
# redis-server carry 5 x 19 000 real WebSocket sessions (each process here may
# hold at most 20 000 descriptors), every session in one big topic plus a chat
# room of ten of its own; a publisher broadcasts into the big topic while the
# rooms chat. The same run on one node with 19 000 sessions is the baseline:
# the ratio of deliveries/s is the scaling figure.
# Usage: scripts/bench_scale.sh [one|five|both] [broadcasts/s, default 2] [chat msg/s per member, default 0.05] [broadcasts, default 60]
# Every run is bounded (--duration, --max-run-time) and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
rate=${2:-2}
side=${3:-0.05}
k=${4:-60}
export PATH="$PATH:/usr/sbin"
cargo build --release -p myriad -p myriad-loadtest --bins >/dev/null
BIN=target/release/myriad
LOAD=target/release/myriad-load
RPORT=6489
PER_NODE=19000
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# utime + stime of a process, in seconds.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
hwm_kib() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }

run() { # $1: number of nodes
  local nodes=$1
  redis-server --port $RPORT --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  local rp=$!
  PIDS+=("$rp")
  sleep 0.5
  local pids=() urls=()
  for i in $(seq 0 $((nodes - 1))); do
    local p=$((4800 + 10 * i))
    # 19 000 sessions + Redis links + the listener fit under 20 000 descriptors.
    $BIN serve --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$((p + 1)) --client-rate 0 \
      --max-connections 19500 --broker redis --broker-url redis://127.0.0.1:$RPORT \
      >/tmp/myriad-scale-$i.log 2>&1 &
    pids+=($!)
    PIDS+=($!)
    urls+=("ws://127.0.0.1:$p/socket/websocket")
  done
  sleep 2
  local n=$((nodes * PER_NODE))
  local redis_cpu0
  redis_cpu0=$(cpu_s "$rp")
  echo "## $nodes node(s), $n sessions: big topic + rooms of 10 chatting at $side msg/s per member, $k broadcasts at $rate/s"
  # One worker per 19 000 client sockets; each worker its own source address.
  $LOAD fanout --url "$(IFS=,; echo "${urls[*]}")" -n "$n" -k "$k" --publish-rate "$rate" \
    --side-room-size 10 --side-rate "$side" --topic room:scale --rate 2500 --concurrency 512 \
    --workers "$nodes" --source-ips "127.0.0.2-127.0.0.$((1 + 2 * nodes))" \
    --duration 120s --grace 30s --max-run-time 10m --connect-timeout 30s \
    --json "/tmp/myriad-scale-$nodes.json" --quiet || true
  echo "redis CPU during the run: $(awk -v a="$(cpu_s "$rp")" -v b="$redis_cpu0" 'BEGIN { printf "%.2f", a - b }') s"
  for i in "${!pids[@]}"; do
    echo "node $i: peak RSS $(hwm_kib "${pids[$i]}") KiB, CPU $(cpu_s "${pids[$i]}") s"
  done
  for p in "${pids[@]}" "$rp"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
  sleep 1
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD)"
[[ $which == one || $which == both ]] && run 1
[[ $which == five || $which == both ]] && run 5
exit 0
