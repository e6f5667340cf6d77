#!/usr/bin/env bash
# Time from the probe that fails a verification gate to the rollback's backend call (issue 12's
# target: under 1 s of real time). Runs the `rollback_latency` test of tests/rollouts.rs N times
# (default 20) and prints min / median / max in milliseconds.
#   bench/rollback_latency.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
cargo test --locked --test rollouts --no-run >/dev/null 2>&1
samples=()
for _ in $(seq "$runs"); do
  ms=$(cargo test --locked --test rollouts rollback_latency -- --nocapture 2>&1 \
    | sed -n 's/.*rollback backend call: \([0-9.]*\) ms.*/\1/p')
  [ -n "$ms" ] || { echo "a run printed no latency" >&2; exit 1; }
  samples+=("$ms")
done
printf '%s\n' "${samples[@]}" | sort -n | awk -v runs="$runs" '
  { v[NR] = $1 }
  END { printf "rollback latency over %d runs: min %.1f ms, median %.1f ms, max %.1f ms\n", runs, v[1], v[int((NR + 1) / 2)], v[NR] }'
