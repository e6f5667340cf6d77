#!/usr/bin/env bash
# Crash test (issue 11): SIGKILLs `shipmate serve` at RUNS random moments of the
# request → approve → deploy path and restarts it, then counts
#   stuck   — an accepted promotion that does not reach a resting state (succeeded, failed,
#             interrupted, cancelled, … or awaiting approval when no approval was accepted)
#             within BOUND seconds of the restart;
#   doubled — a promotion whose deploy script started more than once (the script appends to a
#             ledger file), or a script (or its backgrounded child) from before the kill still
#             running once the restarted bot is ready (it could run beside a retry);
#   lost    — an accepted request (HTTP 202 with an id) with no promotion or no audit event, or
#             an accepted approval (HTTP 2xx) the promotion does not show.
# Goal: 0 / 0 / 0. Uses the HTTP API and the `command` backend on SQLite; no chat platform.
#
# Usage: bash bench/crash.sh     (RUNS=100 BOUND=20 MAX_KILL_MS=1200 LIMIT=900 by default;
#        the deploy script takes ~0.8 s, so kills land before, during and after it)
#        BIN=target/release/shipmate bash bench/crash.sh   (default: target/debug/shipmate)
set -euo pipefail

RUNS="${RUNS:-100}"
BOUND="${BOUND:-20}"
MAX_KILL_MS="${MAX_KILL_MS:-1200}"
LIMIT="${LIMIT:-900}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/debug/shipmate}"
[[ -x "$BIN" ]] || (cd "$ROOT" && cargo build --quiet)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shipmate-crash.XXXXXX")"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT/api/v1"
CI="Authorization: Bearer demo-ci-token"
LEAD="Authorization: Bearer demo-lead-token"
BOT_PID=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [[ -n "$BOT_PID" ]] && kill -KILL "$BOT_PID" 2>/dev/null || true
  # Scripts are in their own groups; anything left working in WORK is ours.
  for proc in /proc/[0-9]*; do
    if [[ "$(readlink "$proc/cwd" 2>/dev/null)" == "$WORK"* ]]; then
      kill -KILL "${proc#/proc/}" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$WORK/bot.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
shutdown_grace = "5s"
[database]
url = "sqlite://$WORK/bot.db"
[roles]
leads = ["api:lead"]
deployers = ["*"]
admins = ["api:lead"]
[[api_tokens]]
name = "ci"
sha256 = "c53c50f5e5446d3545f4e1c5f07c6fba526314f62536bb313744766445f8dc06"
[[api_tokens]]
name = "lead"
sha256 = "e961c11f0a7410ee88f34e75662b983b64cf135d79f32d2d52c3c3e083daa11c"
[[service]]
name = "api"
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "1m" }
  approvals = { required = 1, from = "leads", expires = "24h" }
EOF
cat > "$WORK/deploy.sh" <<'EOF'
#!/bin/sh
echo "start $SHIPMATE_PROMOTION_ID $$" >> ledger.txt
sleep 30 &
echo "child $SHIPMATE_PROMOTION_ID $!" >> ledger.txt
for step in 1 2 3 4; do echo "step $step"; sleep 0.2; done
kill $! 2>/dev/null
echo "end $SHIPMATE_PROMOTION_ID" >> ledger.txt
EOF
chmod +x "$WORK/deploy.sh"
: > "$WORK/ledger.txt"

start_bot() {
  (cd "$WORK" && exec "$BIN" serve --config "$WORK/bot.toml" >> "$WORK/bot.log" 2>&1) &
  BOT_PID=$!
  for _ in $(seq 300); do
    curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/readyz" && return 0
    sleep 0.05
  done
  echo "the bot did not become ready; see $WORK/bot.log" >&2
  tail -20 "$WORK/bot.log" >&2
  exit 1
}

# post PATH TOKEN-HEADER BODY → prints "STATUS BODY" (STATUS 000 when the call failed).
post() {
  curl -s --max-time 5 -o "$WORK/out.json" -w '%{http_code}' -X POST -H "$2" \
    -H 'Content-Type: application/json' -d "$3" "$BASE$1" 2>/dev/null || true
}

state_of() {
  curl -s --max-time 5 -H "$CI" "$BASE/promotions/$1" | jq -r '.state // "missing"' 2>/dev/null || echo "unreadable"
}

events_of() {
  curl -s --max-time 5 -H "$CI" "$BASE/promotions/$1" | jq -r '.events | length' 2>/dev/null || echo 0
}

stuck=0 doubled=0 lost=0 runs=0 survivors=0
declare -A approved=() states=() survived=()
started_at=$SECONDS
start_bot
for i in $(seq "$RUNS"); do
  if (( SECONDS - started_at > LIMIT )); then
    echo "time limit reached after $runs runs" >&2
    break
  fi
  runs=$i
  delay_ms=$(( RANDOM % MAX_KILL_MS ))
  ( sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"; kill -KILL "$BOT_PID" 2>/dev/null ) &
  killer=$!
  id=""
  status="$(post /promotions "$CI" "{\"service\":\"api\",\"version\":\"1.0.$i\",\"environment\":\"production\"}")"
  if [[ "$status" == 202 ]]; then
    id="$(jq -r '.id' "$WORK/out.json")"
    status="$(post "/promotions/$id/approve" "$LEAD" '{}')"
    [[ "$status" == 2* ]] && approved[$id]=1
  fi
  wait "$killer" 2>/dev/null || true
  wait "$BOT_PID" 2>/dev/null || true
  before="$(awk '$1 == "start" || $1 == "child" { print $3 }' "$WORK/ledger.txt")"
  start_bot
  for pid in $before; do
    if [[ -r "/proc/$pid/stat" ]] && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] \
       && [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$WORK"* ]] && [[ -z "${survived[$pid]:-}" ]]; then
      echo "run $i: process $pid of a killed deploy still runs after the restart" >&2
      survived[$pid]=1
      survivors=$((survivors + 1))
    fi
  done

  [[ -z "$id" ]] && continue
  if [[ "$(events_of "$id")" == 0 ]]; then
    echo "run $i: promotion #$id accepted but missing or without audit events" >&2
    lost=$((lost + 1))
    continue
  fi
  state=""
  for _ in $(seq $((BOUND * 10))); do
    state="$(state_of "$id")"
    case "$state" in
      succeeded|failed|interrupted|cancelled|rejected|expired|rolled_back) break ;;
      awaiting_approval) [[ -z "${approved[$id]:-}" ]] && break ;;
    esac
    sleep 0.1
  done
  states[$state]=$(( ${states[$state]:-0} + 1 ))
  case "$state" in
    succeeded|failed|interrupted|cancelled|rejected|expired|rolled_back) ;;
    awaiting_approval)
      if [[ -n "${approved[$id]:-}" ]]; then
        echo "run $i: #$id approval accepted but the promotion still awaits approval" >&2
        lost=$((lost + 1))
      fi
      # Make room for the next request.
      post "/promotions/$id/cancel" "$LEAD" '{"reason":"crash test"}' > /dev/null ;;
    *)
      echo "run $i: #$id stuck in $state after ${BOUND}s" >&2
      stuck=$((stuck + 1))
      post "/promotions/$id/cancel" "$LEAD" '{"reason":"crash test"}' > /dev/null ;;
  esac
done

# Doubled: promotions whose script started twice, plus scripts that outlived a restart.
twice=$(awk '$1 == "start" { n[$2]++ } END { d = 0; for (id in n) if (n[id] > 1) d++; print d }' "$WORK/ledger.txt")
doubled=$((twice + survivors))

starts=$(grep -c '^start' "$WORK/ledger.txt" || true)
echo "runs: $runs in $((SECONDS - started_at))s, deploy scripts started: $starts"
printf 'after restart:'
for state in "${!states[@]}"; do printf ' %s=%s' "$state" "${states[$state]}"; done
echo
echo "stuck: $stuck  doubled: $doubled  lost: $lost"
