#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for RUNS executions, one target at a time, and prints one
# summary line per target (executions, executions per second, seconds, result).
#
# Builds once with optimisations, debug assertions (so integer overflow panics) and no sanitizer:
# the code under test is safe Rust, so what we look for is panics, and ASan would cost half the
# throughput. New inputs go to a scratch corpus, so the committed seeds in fuzz/corpus/ stay small;
# a crashing input is saved under fuzz/artifacts/<target>/ and the script exits non-zero.
#
# Usage: bash bench/fuzz.sh [RUNS] [TARGET...]     (RUNS defaults to 10,000,000; all targets)
#        MAX_TIME=1800 bash bench/fuzz.sh          (seconds per target at most; default 3600)
# Needs: a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`).
set -euo pipefail

RUNS="${1:-10000000}"
shift || true
MAX_TIME="${MAX_TIME:-3600}"
FLAGS=(-O --debug-assertions --sanitizer none)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

die() { echo "fuzz.sh: $*" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
cargo +nightly --version >/dev/null 2>&1 || die "needs a nightly toolchain: rustup toolchain install nightly"
cargo fuzz --version >/dev/null 2>&1 || die "needs cargo-fuzz: cargo install cargo-fuzz --locked"

if (( $# > 0 )); then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build "${FLAGS[@]}" >&2

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target" "corpus/$target"
  log="$scratch/$target.log"
  status=ok
  # The scratch directory comes first: libFuzzer writes new inputs to the first corpus only.
  cargo +nightly fuzz run "${FLAGS[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -runs="$RUNS" -max_total_time="$MAX_TIME" -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=CRASH
  stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
  runs="$(stat number_of_executed_units)"
  rate="$(stat average_exec_per_sec)"
  secs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | awk '{print $5}' || true)"
  if [[ "$status" == CRASH ]]; then
    failed=1
    artifact="$(grep -Eo 'artifacts/[^ ]+' "$log" | tail -1 || true)"
    status="CRASH ${artifact:-see the log below}"
    tail -40 "$log" >&2
  elif [[ "${runs:-0}" -lt "$RUNS" ]]; then
    status="stopped by MAX_TIME=${MAX_TIME}s"
  fi
  printf '%-22s executions=%-10s exec/s=%-7s seconds=%-5s %s\n' \
    "$target" "${runs:-?}" "${rate:-?}" "${secs:-?}" "$status"
done
exit "$failed"
