#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine. Installs what the tests need
# when missing: redis-server, redis-cli, coturn (turnserver, turnutils_uclient),
# prometheus (promtool checks and unit-tests the alert rules; the dashboard tests run a
# private Prometheus), rabbitmq-server (the TURN event log's broker) and Node.js with
# npm with apt-get; socket.io-client (the official Socket.IO client the
# Socket.IO dialect is tested with) with `npm ci` from the lockfile in
# services/signal/tests/socketio; chromium (the browser test makes a real call through
# coturn) with apt-get and Playwright (playwright-core, driving it) with `npm ci` from
# the lockfile in services/signal/tests/browser; haproxy, nginx, openssl and curl (the deployment
# files are checked by their own tools, and deploy/local/run.sh runs the compose
# topology as local processes); kubernetes-validate (the load test's Job, the Helm
# chart's and k8s/'s objects) and helm-python-sdk (Helm's engine, no helm binary) with
# pip; cargo-fuzz (the fuzz targets in shared/fuzz, run by .ci/fuzz.sh) with cargo. The
# tests start their own servers on free loopback ports and never touch a Redis, coturn
# or RabbitMQ already running on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
{ command -v turnserver && command -v turnutils_uclient; } >/dev/null 2>&1 || need_apt+=(coturn)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing: ${need_apt[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The JavaScript test clients, from their lockfiles.
for js_tests in services/signal/tests/socketio services/signal/tests/browser; do
  if ! cmp -s "$js_tests/package-lock.json" "$js_tests/node_modules/.package-lock.json.installed" 2>/dev/null; then
    echo "installing: $js_tests (npm ci)"
    (cd "$js_tests" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$js_tests/package-lock.json" "$js_tests/node_modules/.package-lock.json.installed"
  fi
done

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing: kubernetes-validate (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
  hash -r
fi
if ! python3 -c "import helm_python, yaml" >/dev/null 2>&1; then
  echo "installing: helm-python-sdk and PyYAML (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check helm-python-sdk pyyaml
fi

# The alert rules: valid, and their unit tests pass.
promtool check rules deploy/prometheus/rules.yml
(cd deploy/prometheus && promtool test rules rules.test.yml)

cargo test --workspace --locked "$@"

# Every fuzz target for a bounded time (FUZZ_SECONDS each, default 30), unless the run
# was narrowed to some tests.
if [ $# -eq 0 ]; then
  bash .ci/fuzz.sh
fi
