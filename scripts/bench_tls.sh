#!/usr/bin/env bash
# TLS on the listener against plain, alternately in one run (BENCHMARKS.md, "TLS"):
# idle memory per session, connect rate, and fan-out deliveries/s.
# Usage: scripts/bench_tls.sh [ROUNDS]. Server on core 0, load on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
cargo build --release -p myriad -p myriad-loadtest --bins >/dev/null
BIN=target/release/myriad
LOAD=target/release/myriad-load
PORT=4740
TMP=$(mktemp -d)
SP=
cleanup() { [[ -n $SP ]] && kill "$SP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
# A throwaway CA and a certificate for 127.0.0.1 (openssl, as any operator would).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -keyout "$TMP/ca-key.pem" -out "$TMP/ca.pem" -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$TMP/key.pem" -out "$TMP/req.csr" -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$TMP/ext"
openssl x509 -req -in "$TMP/req.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca-key.pem" \
  -CAcreateserial -days 1 -extfile "$TMP/ext" -out "$TMP/cert.pem" 2>/dev/null
start() {
  taskset -c 0 $BIN serve --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$((PORT + 1)) \
    --client-rate 0 "$@" >/dev/null 2>&1 &
  SP=$!; sleep 1
}
stop() { kill "$SP"; wait "$SP" 2>/dev/null || true; SP=; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r)"
for r in $(seq 1 "$rounds"); do
  for side in plain tls; do
    args=(); url="ws://127.0.0.1:$PORT/socket/websocket"; ca=()
    if [[ $side == tls ]]; then
      args=(--tls-cert-file "$TMP/cert.pem" --tls-key-file "$TMP/key.pem")
      url="wss://127.0.0.1:$PORT/socket/websocket"; ca=(--tls-ca "$TMP/ca.pem")
    fi
    echo "## round $r $side: 10 000 idle sessions (RSS per connection, connect rate)"
    start "${args[@]}"
    taskset -c 1 $LOAD connect --url "$url" "${ca[@]}" --topics 100 -n 10000 --concurrency 256 \
      --duration 3s --source-ips 127.0.0.2-127.0.0.3 --server-pid "$SP" --quiet
    stop
    echo "## round $r $side: fan-out to 5 000 subscribers, 100 messages"
    start "${args[@]}"
    taskset -c 1 $LOAD fanout --url "$url" "${ca[@]}" -n 5000 -k 100 --publish-rate 0 --rate 5000 \
      --source-ips 127.0.0.2-127.0.0.3 --duration 60s --server-pid "$SP" --quiet
    stop
  done
done
