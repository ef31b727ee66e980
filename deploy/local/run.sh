#!/usr/bin/env bash
# The compose topology as local processes, from the same configuration files: Redis,
# 3 signal nodes, the credential service, coturn, HAProxy (deploy/compose/haproxy.cfg)
# and Prometheus (deploy/compose/prometheus.yml with the alert rules). For machines
# without Docker, and for the tests that prove the load balancer's stickiness.
#
#   deploy/local/run.sh [--base-port 7700] [--bin target/release] [--dir /tmp/x] [--no-prometheus]
#
# Ports: base = Redis, base+1..3 = signal nodes, base+4 = credentials, base+5 = coturn,
# base+6 = the load balancer (open http://127.0.0.1:<base+6>), base+7 = Prometheus,
# base+10..base+40 = coturn's relay ports. Runs in the foreground; Ctrl-C (or SIGTERM)
# stops everything. Prints "ready lb=http://127.0.0.1:<port>" once the LB answers.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
base=7700
bin="$root/target/release"
dir=""
prometheus=1
while [ $# -gt 0 ]; do
  case "$1" in
    --base-port) base="$2"; shift 2 ;;
    --bin) bin="$(cd "$2" && pwd)"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --no-prometheus) prometheus=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
for b in signal credentials; do
  [ -x "$bin/$b" ] || { echo "$bin/$b not found: cargo build --release -p signal -p credentials" >&2; exit 66; }
done
for tool in redis-server turnserver haproxy; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install redis-server coturn haproxy)" >&2; exit 69; }
done
[ -n "$dir" ] || dir="$(mktemp -d)"
mkdir -p "$dir"
compose="$root/deploy/compose"
redis_port=$base
lb_port=$((base + 6))
prom_port=$((base + 7))
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

wait_for() { # url, what
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "$2 did not come up ($1); logs in $dir" >&2
  exit 70
}

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$dir" --logfile "$dir/redis.log" &
pids+=($!)
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# S4's anonymous sign-in signs with a secret the nodes share: ANON_TOKEN_SECRET when
# set, else a development secret generated for this run.
anon_secret="${ANON_TOKEN_SECRET:-}"
if [ -z "$anon_secret" ]; then
  anon_secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  echo "generated a development ANON_TOKEN_SECRET for this run; set ANON_TOKEN_SECRET for anything real" >&2
fi
for i in 1 2 3; do
  HOST=127.0.0.1 PORT=$((base + i)) NODE_ID="signal-$i" REDIS_URL="redis://127.0.0.1:$redis_port" \
    ANON_TOKEN_SECRET="$anon_secret" \
    TRUSTED_PROXY_HOPS=1 RUST_LOG="${RUST_LOG:-info}" "$bin/signal" >"$dir/signal-$i.log" 2>&1 &
  pids+=($!)
done
HOST=127.0.0.1 PORT=$((base + 4)) REDIS_URL="redis://127.0.0.1:$redis_port" TURN_SOURCE=rest \
  TURN_REALM=signal.local TURN_HOST=127.0.0.1 TURN_PORT=$((base + 5)) TURN_TRANSPORTS=udp,tcp \
  TRUSTED_PROXY_HOPS=1 RUST_LOG="${RUST_LOG:-info}" "$bin/credentials" >"$dir/credentials.log" 2>&1 &
pids+=($!)
for port in $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)); do
  wait_for "http://127.0.0.1:$port/readyz" "the service on $port"
done

# Everything is on loopback here, so coturn must relay between loopback addresses (in
# the compose stack its peers are container addresses and the default refusal stands).
turnserver -c "$compose/turnserver.conf" --listening-port $((base + 5)) --listening-ip 127.0.0.1 \
  --min-port $((base + 10)) --max-port $((base + 40)) --allow-loopback-peers \
  --redis-userdb "ip=127.0.0.1 dbname=0 port=$redis_port connect_timeout=30" \
  --redis-statsdb "ip=127.0.0.1 dbname=0 port=$redis_port connect_timeout=30" \
  --pidfile "$dir/turnserver.pid" >"$dir/turnserver.log" 2>&1 &
pids+=($!)

LB_BIND="127.0.0.1:$lb_port" SIGNAL_1="127.0.0.1:$((base + 1))" SIGNAL_2="127.0.0.1:$((base + 2))" \
  SIGNAL_3="127.0.0.1:$((base + 3))" CREDENTIALS="127.0.0.1:$((base + 4))" \
  haproxy -db -f "$compose/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$lb_port/readyz" "the load balancer"

if [ "$prometheus" = 1 ] && command -v prometheus >/dev/null; then
  # The same prometheus.yml, with this run's targets and the repository's rules beside it.
  mkdir -p "$dir/prometheus/targets" "$dir/prometheus/rules"
  cp "$compose/prometheus.yml" "$dir/prometheus/prometheus.yml"
  cp "$root/deploy/prometheus/rules.yml" "$dir/prometheus/rules/rules.yml"
  printf '[{"targets": ["127.0.0.1:%s", "127.0.0.1:%s", "127.0.0.1:%s"], "labels": {"namespace": "local"}}]\n' \
    $((base + 1)) $((base + 2)) $((base + 3)) >"$dir/prometheus/targets/signal.json"
  printf '[{"targets": ["127.0.0.1:%s"], "labels": {"namespace": "local"}}]\n' $((base + 4)) \
    >"$dir/prometheus/targets/credentials.json"
  # Debian's coturn is built without its Prometheus exporter: no coturn target here.
  echo '[]' >"$dir/prometheus/targets/coturn.json"
  prometheus --config.file="$dir/prometheus/prometheus.yml" --storage.tsdb.path="$dir/prometheus/data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$dir/prometheus.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$prom_port/-/ready" "prometheus"
fi

echo "ready lb=http://127.0.0.1:$lb_port prometheus=http://127.0.0.1:$prom_port logs=$dir"
wait -n "${pids[@]}" || true
echo "a process of the stack exited; stopping (logs in $dir)" >&2
