#!/usr/bin/env bash
# Several `shipmate serve` replicas on one PostgreSQL database (SPEC §8): promotions per second
# and approval→deploy-start latency with 1, 2 and 3 replicas sharing one bot.toml.
#
# Builds the release binary (or uses SHIPMATE_BIN), then runs bench/replicas.py, which for each
# replica count creates a fresh database on BENCH_POSTGRES_URL's server, starts the replicas,
# requests PROMOTIONS promotions (backend `command` = `true`, no approvals) round robin over
# them, times them until all succeeded, then approves SAMPLES promotions of an environment
# needing one approval on replica A, one at a time, and measures until the deploy script wrote
# its timestamp (on whichever replica ran it). Prints a table; drops its databases.
#
# Usage: bash bench/replicas.sh
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test PROMOTIONS=200 SAMPLES=50
#   REPLICAS="1 2 3" SHIPMATE_BIN=target/release/shipmate (skips the build)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export BENCH_POSTGRES_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
command -v psql >/dev/null || { echo "psql is needed to create the benchmark databases (apt-get install postgresql-client)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed to drive the benchmark" >&2; exit 2; }
psql -q "$BENCH_POSTGRES_URL" -c "SELECT 1" >/dev/null || { echo "cannot reach PostgreSQL at $BENCH_POSTGRES_URL; start it or set BENCH_POSTGRES_URL" >&2; exit 2; }

BIN="${SHIPMATE_BIN:-}"
if [[ -z "$BIN" ]]; then
  echo "building: cargo build --release --locked" >&2
  cargo build --release --locked >&2
  BIN="$ROOT/target/release/shipmate"
fi

exec python3 "$ROOT/bench/replicas.py" "$BIN"
