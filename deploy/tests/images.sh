#!/usr/bin/env bash
# Builds every target of deploy/docker/Dockerfile with podman on this machine, and runs
# the images the way the Helm chart runs them (read-only root filesystem, non-root
# user), all on loopback ports with host networking:
#   - signal and credentials answer /healthz and /readyz;
#   - two signal containers on one Redis container: a WebSocket join on each and a
#     signal from one node to the other (the loadtest image's relay, with an objective);
#   - the credential container mints a credential that a coturn on this machine accepts.
# Prints the image sizes at the end. Exit status 0 only if every check passed.
#
#   bash deploy/tests/images.sh [--keep]      (--keep leaves the images and containers)
#
# Public base images cannot be pulled here, so the images the Dockerfile's FROM lines
# name are made first, from Debian's packages (mmdebstrap), and given those names:
#   - rust:<this machine's rustc version>-slim-bookworm: Debian bookworm with gcc, this
#     machine's Rust toolchain copied in (no Rust release server is reachable), and the
#     certificate authorities this machine adds to Debian's (its egress re-signs TLS);
#   - the runtime image (RUNTIME): Debian bookworm's minimal base with CA certificates,
#     standing in for distroless (it has a shell; the real one has none);
#   - a Redis image for the test's own Redis.
# Then the Dockerfile itself is built, unchanged, with those as build arguments. Not
# run by .ci/run: it builds the whole workspace again inside a container (about 11 min
# here the first time, 5 after a change to our code).
#
# Needs (apt-get install): podman runc mmdebstrap coturn (turnserver, turnutils_uclient).
# podman runs with --runtime runc --cgroup-manager cgroupfs and explicit ulimits:
# crun refuses this machine's cgroups, and podman's default limits exceed the hard ones.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
keep=0
[ "${1:-}" = "--keep" ] && keep=1

for tool in podman runc mmdebstrap turnserver turnutils_uclient curl; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install podman runc mmdebstrap coturn curl)" >&2; exit 69; }
done

# The shell's hard limits, and at most 32768 processes: runc is refused a higher
# RLIMIT_NPROC on this machine ("error setting rlimit type 6"), and builds need far fewer.
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
podman() { command podman --runtime runc --cgroup-manager cgroupfs "$@"; }
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

work="$(mktemp -d)"
containers=()
cleanup() {
  for c in "${containers[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
  [ -n "${coturn_pid:-}" ] && kill "$coturn_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

rust_version=$(rustc --version | awk '{print $2}')
rust_image="docker.io/library/rust:${rust_version}-slim-bookworm"
runtime_image="localhost/webrtc-signal/runtime-stand-in:bookworm"
redis_image="localhost/webrtc-signal/redis-stand-in:bookworm"
mirror="http://deb.debian.org/debian"

# --- base images ------------------------------------------------------------------
step "base images from Debian's packages"
if ! podman image exists "$runtime_image"; then
  mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$work/runtime.tar" "$mirror"
  podman import --change 'USER 65532:65532' "$work/runtime.tar" "$runtime_image" >/dev/null
  rm -f "$work/runtime.tar"
fi
if ! podman image exists "$redis_image"; then
  mmdebstrap --quiet --variant=minbase --include=redis-server bookworm "$work/redis.tar" "$mirror"
  podman import "$work/redis.tar" "$redis_image" >/dev/null
  rm -f "$work/redis.tar"
fi
if ! podman image exists "$rust_image"; then
  mmdebstrap --quiet --variant=minbase --include=ca-certificates,gcc,libc6-dev,make,pkg-config bookworm \
    "$work/build.tar" "$mirror"
  podman import "$work/build.tar" localhost/webrtc-signal/build-base:bookworm >/dev/null
  rm -f "$work/build.tar"
  # This machine's toolchain: its compiler, cargo and standard library (no docs).
  sysroot=$(rustc --print sysroot)
  mkdir -p "$work/rust/toolchain"
  cp -a "$sysroot/bin" "$sysroot/lib" "$sysroot/libexec" "$work/rust/toolchain/"
  # The certificate authorities this machine adds to Debian's (an egress proxy that
  # re-signs TLS here): cargo inside the build reaches crates.io through it.
  mkdir -p "$work/rust/local-ca"
  cp /usr/local/share/ca-certificates/*.crt "$work/rust/local-ca/" 2>/dev/null || true
  cat >"$work/rust/Containerfile" <<'EOF'
FROM localhost/webrtc-signal/build-base:bookworm
COPY local-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
EOF
  podman build --quiet --network host -t "$rust_image" "$work/rust" >/dev/null
  rm -rf "$work/rust"
fi

# --- the Dockerfile, unchanged -------------------------------------------------------
sha=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
for target in signal credentials loadtest; do
  step "building target $target (deploy/docker/Dockerfile)"
  # Docker's image format, which keeps the Dockerfile's HEALTHCHECK (OCI's drops it).
  podman build --format docker --network host "${limits[@]}" -f "$root/deploy/docker/Dockerfile" --target "$target" \
    --build-arg "RUST_VERSION=$rust_version" --build-arg "RUNTIME=$runtime_image" \
    --build-arg "GIT_SHA=$sha" -t "localhost/webrtc-signal/$target:test" "$root"
done

# --- running them as the chart does --------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() { # name, then podman run arguments
  local name="images-test-$1-$$"; shift
  containers+=("$name")
  # --no-healthcheck: podman would schedule the image's HEALTHCHECK with systemd, which
  # this machine does not run; the checks below run it themselves (podman exec).
  podman run -d --name "$name" --network host "${limits[@]}" --read-only --user 65532:65532 \
    --cap-drop ALL --security-opt no-new-privileges --no-healthcheck "$@" >/dev/null
}
wait_http() { # url, what
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.2
  done
  fail "$2 did not answer $1"
}

step "a Redis container"
redis_port=$(free_port)
containers+=("images-test-redis-$$")
podman run -d --name "images-test-redis-$$" --network host "${limits[@]}" "$redis_image" \
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null
for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.2; done

step "two signal containers on it"
s1=$(free_port); s2=$(free_port)
for i in 1 2; do
  port_var="s$i"
  run "signal-$i" -e HOST=127.0.0.1 -e "PORT=${!port_var}" -e "NODE_ID=img-$i" \
    -e "REDIS_URL=redis://127.0.0.1:$redis_port" "localhost/webrtc-signal/signal:test"
done
for port in "$s1" "$s2"; do
  wait_http "http://127.0.0.1:$port/healthz" "signal on $port"
  wait_http "http://127.0.0.1:$port/readyz" "signal on $port (ready)"
  curl -sf "http://127.0.0.1:$port/healthz" | grep -q '"status":"ok"' || fail "signal /healthz is not JSON ok"
done
podman exec "images-test-signal-1-$$" /usr/local/bin/signal healthcheck || fail "the image's own healthcheck"
echo "signal: /healthz and /readyz answer on both nodes, as a non-root user on a read-only root"

step "the loadtest image: joins and a cross-node relay with an objective"
containers+=("images-test-loadtest-$$")
podman run --name "images-test-loadtest-$$" --network host "${limits[@]}" --read-only --user 65532:65532 \
  "localhost/webrtc-signal/loadtest:test" relay --url "ws://127.0.0.1:$s1/ws" --url "ws://127.0.0.1:$s2/ws" \
  --peers 40 --rate 200 --duration 5s --slo "loss=0,p99<250ms" --quiet \
  || fail "the relay between the two signal containers missed its objective"

step "the credential container mints for coturn"
turn_port=$(free_port); c1=$(free_port)
secret="images-test-secret-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Loopback peers allowed: the test's client relays to itself on 127.0.0.1.
turnserver --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$turn_port" \
  --use-auth-secret --static-auth-secret "$secret" --realm images.test --no-tls --no-dtls \
  --allow-loopback-peers --no-multicast-peers --min-port 49900 --max-port 49950 --no-cli \
  --userdb "$work/turndb" --pidfile "$work/turnserver.pid" --log-file stdout --simple-log \
  >"$work/coturn.log" 2>&1 &
coturn_pid=$!
for _ in $(seq 1 75); do (exec 3<>"/dev/tcp/127.0.0.1/$turn_port") 2>/dev/null && break; sleep 0.2; done
run credentials -e HOST=127.0.0.1 -e "PORT=$c1" -e TURN_REALM=images.test -e TURN_HOST=127.0.0.1 \
  -e "TURN_PORT=$turn_port" -e TURN_TRANSPORTS=udp,tcp -e "TURN_SECRET=$secret" \
  "localhost/webrtc-signal/credentials:test"
wait_http "http://127.0.0.1:$c1/healthz" "credentials"
wait_http "http://127.0.0.1:$c1/readyz" "credentials (ready)"
answer=$(curl -sf "http://127.0.0.1:$c1/turn-credentials")
user=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["username"])')
pass=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["credential"])')
timeout 60 turnutils_uclient -u "$user" -w "$pass" -p "$turn_port" -n 3 -m 1 -l 170 -y 127.0.0.1 >"$work/uclient.log" 2>&1 \
  && grep -q "Total lost packets 0" "$work/uclient.log" \
  || { cat "$work/uclient.log" "$work/coturn.log" >&2; fail "coturn refused the container's credential"; }
podman exec "images-test-credentials-$$" /usr/local/bin/credentials healthcheck || fail "the image's own healthcheck"
echo "credentials: /healthz, /readyz, its own healthcheck, and a credential coturn accepted (allocation over UDP)"

step "image sizes (the runtime stand-in is a Debian minimal base, far larger than distroless)"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -E 'webrtc-signal/(signal|credentials|loadtest):test|runtime-stand-in'

if [ "$keep" = 0 ]; then
  for target in signal credentials loadtest; do podman rmi -f "localhost/webrtc-signal/$target:test" >/dev/null 2>&1 || true; done
fi
echo
echo "images.sh: every check passed"
