#!/usr/bin/env bash
# Render time of the web pages over a long history: a SQLite database filled (directly, by SQL)
# with PROMOTIONS promotions (default 100,000) spread over 120 days across 4 services × 3
# environments, with their releases, audit events, approvals and deploy output; then the bot is
# started on it, signs in with an API token, and sends N sequential requests (after a warm-up)
# to each of /ui, /ui/dora, /ui/audit and one /ui/promotions/{id}, printing p50/p99/max per page
# and the first request's time (for /ui/dora the uncached read of 90 days).
# Target: /ui and /ui/dora p99 < 50 ms at 100,000 promotions.
#
# Usage: bash bench/web.sh                  (PROMOTIONS=100000 N=200 PROFILE=release)
#        SHIPMATE_BIN=path/to/shipmate bash bench/web.sh   (measure that binary, build nothing)
#        PROFILE=debug bash bench/web.sh    (the dev build: no release build needed)
set -euo pipefail

PROMOTIONS="${PROMOTIONS:-100000}"
N="${N:-200}"
PROFILE="${PROFILE:-release}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shipmate-web-bench.XXXXXX")"
PIDFILE="$WORK/bot.pid"

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -f "$PIDFILE" ]]; then
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && grep -qs shipmate "/proc/$pid/cmdline"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${SHIPMATE_BIN:-}" ]]; then
  BIN="$SHIPMATE_BIN"   # a binary built already (e.g. to measure one without rebuilding)
elif [[ "$PROFILE" == "release" ]]; then
  echo "building: cargo build --release --locked --bin shipmate" >&2
  cargo build --release --locked --bin shipmate >&2
  BIN="$ROOT/target/release/shipmate"
else
  echo "building: cargo build --locked --bin shipmate" >&2
  cargo build --locked --bin shipmate >&2
  BIN="$ROOT/target/debug/shipmate"
fi

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="bench-token-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
DIGEST="$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"

cat > "$WORK/bot.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[database]
url = "sqlite://bench.db"

[roles]
leads = ["api:bench"]
deployers = ["api:bench"]

[[api_tokens]]
name = "bench"
sha256 = "$DIGEST"
TOML
for service in api web worker billing; do
  cat >> "$WORK/bot.toml" <<TOML

[[service]]
name = "$service"
  [[service.environment]]
  name = "dev"
  backend = { kind = "command", run = ["true"] }
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["true"] }
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["true"] }
  approvals = { required = 1, from = "leads" }
TOML
done

"$BIN" migrate --config "$WORK/bot.toml" >&2

echo "filling $WORK/bench.db with $PROMOTIONS promotions" >&2
python3 - "$WORK/bench.db" "$PROMOTIONS" <<'PY'
import random, sqlite3, sys, time

path, total = sys.argv[1], int(sys.argv[2])
random.seed(7)
db = sqlite3.connect(path)
now = int(time.time() * 1000)
span = 120 * 86_400_000
services = ["api", "web", "worker", "billing"]
envs = ["dev", "staging", "production"]
releases, promotions, events, approvals, logs = [], [], [], [], []
current = {}
for n in range(total):
    pid = n + 1
    service = services[n % 4]
    env = envs[(n // 4) % 3]
    version = f"{n // 12 // 1000}.{(n // 12) % 1000}.{n % 12}"
    created = now - span + span * n // total
    if env == "dev":
        releases.append((service, version, f"{n:040x}", None, "api:bench", created - 3_600_000))
    roll = random.random()
    state, reason = "succeeded", None
    if roll < 0.06:
        state, reason = "failed", "deploy.sh exited with 1"
    elif roll < 0.08:
        state, reason = "rolled_back", "replaced by a rollback"
    started = created + 60_000
    finished = started + random.randint(30_000, 600_000)
    promotions.append((pid, service, version, env, state, "api:bench", 0, None,
                       1 if env == "production" else 0, None, None, reason,
                       created, finished, started, finished, None))
    events.append((pid, created, "api:bench", "api", "requested", f"#{pid} {service} {version} → {env}"))
    if env == "production":
        approvals.append((pid, "api:bench", created + 30_000))
        events.append((pid, created + 30_000, "api:bench", "api", "approval", "approved"))
    events.append((pid, started, "shipmate:bot", "shipmate", "deploying", "deploying"))
    events.append((pid, finished, "shipmate:bot", "shipmate", state if state != "rolled_back" else "failed", reason or "ok"))
    logs.append((pid, finished, f"deployed {service} {version} to {env}"))
    if state == "succeeded":
        current[(service, env)] = pid
db.executemany("INSERT OR IGNORE INTO releases (service, version, commit_sha, notes, created_by, created_at) VALUES (?,?,?,?,?,?)", releases)
db.executemany("INSERT INTO promotions (id, service, version, environment, state, requested_by, is_rollback, previous_version, required_approvals, force_reason, retry_of, reason, created_at, updated_at, started_at, finished_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", promotions)
db.executemany("INSERT INTO audit_events (promotion_id, at, actor, platform, kind, detail) VALUES (?,?,?,?,?,?)", events)
db.executemany("INSERT INTO approvals (promotion_id, voter, at) VALUES (?,?,?)", approvals)
db.executemany("INSERT INTO deploy_log (promotion_id, at, line) VALUES (?,?,?)", logs)
db.executemany("INSERT INTO current_deployments (service, environment, promotion_id) VALUES (?,?,?)",
               [(s, e, p) for (s, e), p in current.items()])
db.commit()
db.execute("ANALYZE")
db.commit()
print(f"{total} promotions, {len(events)} audit events", file=sys.stderr)
PY

(cd "$WORK" && exec "$BIN" serve --config bot.toml >"$WORK/bot.log" 2>&1) &
echo $! > "$PIDFILE"

python3 - "$PORT" "$TOKEN" "$N" "$PROMOTIONS" <<'PY'
import http.client, statistics, sys, time, urllib.parse

port, token, n, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
deadline = time.time() + 60
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/readyz")
        if conn.getresponse().status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the bot did not become ready in 60 s; see its log")
    time.sleep(0.05)

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
body = urllib.parse.urlencode({"token": token, "next": "/ui"})
conn.request("POST", "/ui/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
response = conn.getresponse()
response.read()
cookie = (response.getheader("Set-Cookie") or "").split(";")[0]
if response.status != 303 or not cookie:
    sys.exit(f"sign-in failed: {response.status}")

def measure(path):
    times, status, first = [], None, None
    for i in range(n + 10):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        response.read()
        elapsed = (time.perf_counter() - start) * 1000
        status = response.status
        if first is None:
            first = elapsed
        if i >= 10:
            times.append(elapsed)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return status, p(0.50), p(0.99), times[-1], first

print(f"{total} promotions, {n} requests per page (after 10 warm-up), one connection")
print(f"{'page':32} {'status':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'first ms':>9}")
for path in ["/ui", "/ui/dora", "/ui/audit", "/ui/audit?service=billing&environment=production", f"/ui/promotions/{total // 2}"]:
    status, p50, p99, worst, first = measure(path)
    print(f"{path:32} {status:>6} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f} {first:>9.2f}")
PY
