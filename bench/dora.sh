#!/usr/bin/env bash
# Delivery metrics (GET /api/v1/dora, /ui/dora) over 100,000 promotions.
#
# Runs `cargo bench --bench dora` (benches/dora.rs): seeds two years of api and web history (about
# 12,000 promotions in the 90-day window) straight into the database, then times 200 calls each of
# Engine::dora_all(&[7, 30, 90]) (what /ui/dora asks for), of the read alone and of single
# reports, printing wall-clock p50/p99/max and the CPU time per call (the bot's idle background
# CPU taken off). SQLite always; PostgreSQL when it answers at SHIPMATE_TEST_POSTGRES_URL.
# Target: /ui/dora under 50 ms p99.
#
# Usage: bash bench/dora.sh
#        DORA_BENCH_PROMOTIONS=200000 bash bench/dora.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export SHIPMATE_TEST_POSTGRES_URL="${SHIPMATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
if ! { command -v pg_isready >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q; }; then
  echo "PostgreSQL is not reachable at 127.0.0.1:5432: measuring SQLite only"
  unset SHIPMATE_TEST_POSTGRES_URL
fi
cargo bench --locked --bench dora 2>&1 | grep -E "^(Sqlite|Postgres)|panicked|error"
