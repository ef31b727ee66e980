#!/usr/bin/env bash
# Runs every fuzz target (shared/fuzz, cargo fuzz with libFuzzer) for a bounded time,
# starting from the committed seed corpora; fails on any crash, which cargo fuzz
# reports with the input that caused it (shared/fuzz/artifacts/<target>/). New inputs go
# to a temporary folder, not into the repository.
#   FUZZ_SECONDS (default 30): time per target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing: cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked --quiet
fi
# cargo fuzz needs nightly's -Z flags: the nightly toolchain when there is one, else the
# stable compiler allowed them (libFuzzer's coverage instrumentation itself is stable).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
targets=$("${fuzz[@]}" list --fuzz-dir shared/fuzz)
"${fuzz[@]}" build --fuzz-dir shared/fuzz --sanitizer none --release
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $targets; do
  echo "fuzzing $target for ${seconds}s"
  mkdir -p "$work/$target"
  if ! "${fuzz[@]}" run --fuzz-dir shared/fuzz --sanitizer none --release "$target" \
    "$work/$target" "shared/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$work/$target.log" 2>&1; then
    tail -60 "$work/$target.log"
    echo "fuzz target $target failed: the input is in shared/fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E "^stat::number_of_executed_units" "$work/$target.log" || true
done
echo "fuzzing: every target ran ${seconds}s without a crash"
