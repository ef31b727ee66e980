#!/usr/bin/env bash
# Runs every load-test scenario against a local cluster in one command: a private
# redis-server and two signal nodes on loopback, then connect, relay, fanout, churn and
# meeting, each bounded in count and time. Reports (JSON and HTML) go to $OUT.
# Everything it started is stopped on exit.
#
#   bash loadtest/local-cluster.sh                  # small run, about a minute
#   RATE=20000 DURATION=15s bash loadtest/local-cluster.sh
#
# Settings (environment): REDIS_PORT (7400), NODE_PORTS ("7411 7412"), RATE (5000
# relay signals/s), DURATION (10s), CONNECTIONS (2000), OUT (target/loadtest-reports).
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-7400}
NODE_PORTS=${NODE_PORTS:-"7411 7412"}
RATE=${RATE:-5000}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-2000}
OUT=${OUT:-target/loadtest-reports}

command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
  || { echo "redis-server and redis-cli are needed (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --locked -p signal -p loadtest
mkdir -p "$OUT"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
urls=()
server_pids=()
i=0
for port in $NODE_PORTS; do
  i=$((i + 1))
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT="$port" NODE_ID="local$i" RUST_LOG=warn \
    ./target/release/signal >"$work/node$i.log" 2>&1 &
  pids+=($!)
  server_pids+=($!)
  urls+=("ws://127.0.0.1:$port/ws")
done
URLS=$(IFS=,; echo "${urls[*]}")
PIDS=$(IFS=,; echo "${server_pids[*]}")

for port in $NODE_PORTS; do
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "node on $port did not become ready" >&2; cat "$work"/node*.log >&2; exit 1; }
done

lt() {
  local name=$1; shift
  echo "== $name"
  ./target/release/loadtest "$@" --url "$URLS" --server-pid "$PIDS" --quiet \
    --json "$OUT/$name.json" --html "$OUT/$name.html"
}
status=0
lt connect connect --connections "$CONNECTIONS" --connect-rate 2000 --hold 3s || status=$?
lt relay relay --peers 200 --rate "$RATE" --duration "$DURATION" || status=$?
lt fanout fanout --rooms 2 --room-size 200 --rate 20 --duration "$DURATION" || status=$?
lt churn churn --peers 100 --rooms 10 --duration "$DURATION" || status=$?
lt meeting meeting --meetings 10 --size 4 --duration "$DURATION" || status=$?
echo "reports in $OUT"
exit "$status"
