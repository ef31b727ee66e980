#!/usr/bin/env bash
# Measures two builds of the signal node side by side, interleaved, with one loadtest
# binary: the relay, fan-out and memory figures of docs/benchmarks.md ("How to
# reproduce"), each round running the "before" build then the "after" build against a
# fresh private redis-server and two nodes on loopback. Prints one line per run and
# keeps the JSON reports and the nodes' logs in $OUT. Everything it started is stopped on exit.
#
#   bash loadtest/compare-builds.sh BEFORE_SIGNAL AFTER_SIGNAL LOADTEST [ROUNDS]
#
# Settings (environment): REDIS_PORT (7400), NODE_PORTS ("7411 7412"), OUT
# (target/compare-builds), SCENARIOS (default "relay5k relay20k fanout connect"; also
# relay10k, relay30k; sio5k, sio20k, plain5k, plain20k: the relay in the Socket.IO and plain
# dialects; bigroom: a 2,000-member room; webinar: a 10,000-member room; in both the
# members connect first, then all join at once).
set -euo pipefail

before=$1 after=$2 loadtest=$3 rounds=${4:-2}
REDIS_PORT=${REDIS_PORT:-7400}
NODE_PORTS=${NODE_PORTS:-"7411 7412"}
OUT=${OUT:-target/compare-builds}
URL_PATH=/ws
mkdir -p "$OUT"
work=$(mktemp -d)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

# Starts redis and two nodes of build $1; sets URLS and PIDS.
start_cluster() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  local urls=() server_pids=() i=0
  for port in $NODE_PORTS; do
    i=$((i + 1))
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST=127.0.0.1 PORT="$port" NODE_ID="n$i" RUST_LOG=warn \
      "$1" >"$work/node$i.log" 2>&1 &
    pids+=($!)
    server_pids+=($!)
    urls+=("ws://127.0.0.1:$port$URL_PATH")
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  URLS=$(IFS=,; echo "${urls[*]}")
  PIDS=$(IFS=,; echo "${server_pids[*]}")
}

# One scenario against a fresh cluster of build $2 (label $1); the report is $OUT/$1-$3.json.
# URL_PATH is the nodes' WebSocket path (/ws; empty for Socket.IO, which finds its own).
run() {
  local label=$1 build=$2 name=$3
  shift 3
  start_cluster "$build"
  "$loadtest" "$@" --url "$URLS" --server-pid "$PIDS" --quiet --json "$OUT/$label-$name.json" >/dev/null || true
  stop_all
  for log in "$work"/node*.log; do cp "$log" "$OUT/$label-$name-$(basename "$log")"; done
  python3 - "$OUT/$label-$name.json" "$label" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat, server = r["latency"], r["server"] or {}
def pct(name):
    l = lat.get(name)
    return f"{name} p50/p99 {l['p50_us'] / 1000:.2f}/{l['p99_us'] / 1000:.2f} ms" if l else ""
figures = [pct(r["primary_latency"])]
if r["scenario"] == "fanout":
    figures.append(pct("broadcast_all"))
if r["scenario"] == "connect":
    figures.append(pct("join"))
    per = server.get("bytes_per_connection")
    figures.append(f"RSS per connection {per / 1024:.2f} KiB" if per else "")
else:
    figures.append(f"deliveries/CPU-s {server.get('deliveries_per_cpu_second') or 0:,.0f}")
if r["counters"].get("join_failed"):
    figures.append(f"joins failed {r['counters']['join_failed']}")
figures.append(f"delivered {r['counters'].get('delivered', r['counters'].get('joined'))}, lost {r['lost']}")
print(f"{sys.argv[2]:10} {sys.argv[3]:9}", " | ".join(f for f in figures if f))
PY
}

for round in $(seq 1 "$rounds"); do
  for side in before after; do
    build=$before
    [ "$side" = after ] && build=$after
    for scenario in ${SCENARIOS:-relay5k relay20k fanout connect}; do
      case $scenario in
        relay5k) run "$side-r$round" "$build" relay5k relay --peers 200 --rate 5000 --duration 15s ;;
        relay10k) run "$side-r$round" "$build" relay10k relay --peers 200 --rate 10000 --duration 15s ;;
        relay20k) run "$side-r$round" "$build" relay20k relay --peers 200 --rate 20000 --duration 15s ;;
        # Beyond what this 2-core box sustains: how each build degrades under overload.
        relay30k) run "$side-r$round" "$build" relay30k relay --peers 200 --rate 30000 --duration 15s ;;
        sio5k) URL_PATH= run "$side-r$round" "$build" sio5k relay --dialect socketio --peers 200 --rate 5000 --duration 15s ;;
        sio20k) URL_PATH= run "$side-r$round" "$build" sio20k relay --dialect socketio --peers 200 --rate 20000 --duration 15s ;;
        plain5k) URL_PATH=/ run "$side-r$round" "$build" plain5k relay --dialect plain --peers 200 --rate 5000 --duration 15s ;;
        plain20k) URL_PATH=/ run "$side-r$round" "$build" plain20k relay --dialect plain --peers 200 --rate 20000 --duration 15s ;;
        fanout) run "$side-r$round" "$build" fanout fanout --rooms 1 --room-size 1000 --rate 20 --duration 15s ;;
        # A room twice the default capacity, filled at 200 joins a second (docs/benchmarks.md, Set 6).
        bigroom) ROOM_CAPACITY=20000 run "$side-r$round" "$build" bigroom fanout --rooms 1 --room-size 2000 --rate 2 \
          --duration 10s --connect-rate 200 --setup-timeout 600s ;;
        # One webinar: a 10,000-member room (beyond PRESENCE_LIMIT, so quiet), connected at
        # 1,000 a second, then every member joining at once, then 2 broadcasts a second.
        webinar) ROOM_CAPACITY=20000 run "$side-r$round" "$build" webinar fanout --rooms 1 --room-size 10000 --rate 2 \
          --duration 10s --connect-rate 1000 --setup-timeout 600s ;;
        connect) run "$side-r$round" "$build" connect connect --connections 10000 --connect-rate 2000 --hold 5s ;;
      esac
    done
  done
done
