#!/usr/bin/env bash
# Throughput, ack latency and CPU per request of signed Slack slash commands.
#
# Builds the release binary, copies bot.toml (fresh SQLite file, free port, a [slack] table) and
# deploy/ into a fresh temp directory, starts `shipmate serve` pinned to core 0 and, for 1, 16 and
# 64 connections, loads `POST /slack/commands` with a signed `/release status` from `oha` pinned to
# core 1 for DURATION. The signature is computed at the start of each run (fresh timestamp). The
# bot's CPU time is read from /proc/<pid>/stat (utime + stime) before and after each run.
# Prints one line per run. Targets (reported, not asserted): ≥ 25,000 req/s and p99 < 2 ms at
# 16 connections, ≤ 40 µs CPU per request. Fails if any response is not a 200.
#
# Usage: bash bench/slack.sh        (DURATION=10s CONNECTIONS="1 16 64" by default)
# Needs: taskset (util-linux), openssl, curl, jq; installs oha with `cargo install` if missing.
set -euo pipefail

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-1 16 64}"
SECRET="bench-signing-secret"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { echo "slack.sh: $*" >&2; exit 1; }

for tool in taskset openssl curl jq python3 getconf; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
(( $(nproc) >= 2 )) || die "needs 2 cores (bot on core 0, load on core 1); nproc says $(nproc)"

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
  echo "installing oha: cargo install oha --locked" >&2
  cargo install oha --locked >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shipmate-slack-bench.XXXXXX")"
BOT_PID=""

# Stops the bot (SIGTERM, then SIGKILL after 5 s) and removes the temp directory, on any exit.
# On failure the bot's log is shown first.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$BOT_PID" ]] && kill -0 "$BOT_PID" 2>/dev/null; then
    kill -TERM "$BOT_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$BOT_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$BOT_PID" 2>/dev/null || true
    wait "$BOT_PID" 2>/dev/null || true
  fi
  if (( status != 0 )) && [[ -s "$WORK/shipmate.log" ]]; then
    echo "--- last lines of the bot's log ---" >&2
    tail -n 20 "$WORK/shipmate.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "building: cargo build --release --locked" >&2
cargo build --release --locked >&2
BIN="$ROOT/target/release/shipmate"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
cp -R deploy "$WORK/deploy"
sed -e "s|^listen = .*|listen = \"127.0.0.1:$PORT\"|" \
    -e "s|^public_url = .*|public_url = \"http://127.0.0.1:$PORT\"|" \
    -e "s|^url = \"sqlite://[^\"]*\"|url = \"sqlite://$WORK/shipmate.db\"|" \
    bot.toml > "$WORK/bot.toml"
grep -q "^listen = \"127.0.0.1:$PORT\"" "$WORK/bot.toml" || die "could not set the port in bot.toml"
grep -q "sqlite://$WORK/shipmate.db" "$WORK/bot.toml" || die "could not set the database in bot.toml"
grep -q '^\[slack\]' "$WORK/bot.toml" && die "bot.toml already has a [slack] table"
cat >> "$WORK/bot.toml" <<EOF

[slack]
bot_token = "xoxb-bench"
signing_secret = "$SECRET"
api_url = "http://127.0.0.1:9/api"   # nothing listens; /release status posts nothing
EOF

URL="http://127.0.0.1:$PORT/slack/commands"
BODY='token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example&channel_id=C2147483705&channel_name=releases&user_id=U2147483697&user_name=Steve&command=%2Frelease&text=status&api_app_id=A0RELEASE1&is_enterprise_install=false&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0001%2F1234%2F5678&trigger_id=13345224609.738474920.8088930838d88f008e0'

# Sets TS and SIG for BODY, signed now.
sign() {
  TS="$(date +%s)"
  SIG="v0=$(printf '%s' "v0:$TS:$BODY" | openssl dgst -sha256 -hmac "$SECRET" | awk '{print $NF}')"
}

# utime + stime of the bot, in clock ticks.
cpu_ticks() {
  # The command name (field 2) may contain spaces; count fields after its closing parenthesis.
  local stat rest
  stat="$(cat "/proc/$BOT_PID/stat")" || die "the bot (pid $BOT_PID) is gone"
  rest="${stat##*) }"
  # rest starts at field 3 (state): utime is field 14 → index 11, stime field 15 → index 12.
  read -r -a f <<< "$rest"
  echo $(( f[11] + f[12] ))
}

echo "starting the bot on core 0: $BIN serve --config $WORK/bot.toml" >&2
(cd "$WORK" && RUST_LOG=warn exec taskset -c 0 "$BIN" serve --config "$WORK/bot.toml" \
  </dev/null >"$WORK/shipmate.log" 2>&1) &
BOT_PID=$!

deadline=$(( $(date +%s) + 15 ))
until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; do
  kill -0 "$BOT_PID" 2>/dev/null || die "the bot exited before it was ready"
  (( $(date +%s) < deadline )) || die "the bot was not ready within 15 s"
  sleep 0.05
done
# The subshell execs taskset, which execs the bot: BOT_PID is the bot itself.
grep -qs shipmate "/proc/$BOT_PID/cmdline" || die "pid $BOT_PID is not the bot"
echo "bot ready on port $PORT, affinity: $(taskset -cp "$BOT_PID" | awk '{print $NF}'), threads: $(ls "/proc/$BOT_PID/task" | wc -l)" >&2

# One signed request first: it must be a 200 with the status reply.
sign
reply="$(curl -sS -o "$WORK/reply.json" -w '%{http_code}' -X POST \
  -H 'content-type: application/x-www-form-urlencoded' \
  -H "x-slack-signature: $SIG" -H "x-slack-request-timestamp: $TS" \
  --data-binary "$BODY" "$URL")" || die "curl to $URL failed"
[[ "$reply" == 200 ]] || die "a signed /release status got HTTP $reply (401: bad signature): $(cat "$WORK/reply.json")"
jq -e '.response_type == "ephemeral" and (.text | startswith("api:"))' "$WORK/reply.json" >/dev/null \
  || die "unexpected reply to /release status: $(cat "$WORK/reply.json")"
echo "check: HTTP 200 $(jq -c . "$WORK/reply.json")" >&2

HZ="$(getconf CLK_TCK)"
echo "oha $(oha --version | awk '{print $NF}'), $DURATION per run, bot on core 0, oha on core 1, CLK_TCK $HZ" >&2
for c in $CONNECTIONS; do
  sign
  before="$(cpu_ticks)"
  taskset -c 1 oha -z "$DURATION" -c "$c" --no-tui --output-format json \
    -m POST -T application/x-www-form-urlencoded \
    -H "x-slack-signature: $SIG" -H "x-slack-request-timestamp: $TS" \
    -d "$BODY" "$URL" > "$WORK/oha-$c.json" || die "oha failed at $c connections"
  after="$(cpu_ticks)"
  jq -r --argjson c "$c" --argjson ticks "$(( after - before ))" --argjson hz "$HZ" '
    (.statusCodeDistribution | to_entries | map(.value) | add // 0) as $n
    | (.errorDistribution | to_entries
        | map(select(.key | test("deadline") | not)) | map(.value) | add // 0) as $errors
    | [ $c,
        .summary.requestsPerSec,
        .latencyPercentiles.p50 * 1000,
        .latencyPercentiles.p99 * 1000,
        (if $n > 0 then $ticks / $hz * 1e6 / $n else 0 end),
        $n,
        (.statusCodeDistribution | tojson),
        $errors,
        (.errorDistribution | tojson),
        ((.statusCodeDistribution | keys) == ["200"] and $errors == 0 and $n > 0)
      ] | @tsv' "$WORK/oha-$c.json" > "$WORK/line-$c.tsv"
  IFS=$'\t' read -r conns rps p50 p99 cpu n codes errors errdist ok < "$WORK/line-$c.tsv"
  printf 'connections %3d: %9.0f req/s, p50 %6.3f ms, p99 %6.3f ms, CPU %6.1f µs/request, %d requests, status %s\n' \
    "$conns" "$rps" "$p50" "$p99" "$cpu" "$n" "$codes"
  [[ "$ok" == true ]] || die "not every response was a 200 at $c connections: status $codes, errors $errdist"
done
echo "targets: ≥ 25,000 req/s and p99 < 2 ms at 16 connections, ≤ 40 µs CPU per request (Bolt: ~4,900 JS / ~4,500 Python req/s, ~210 µs CPU per request)"
