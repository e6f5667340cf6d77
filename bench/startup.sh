#!/usr/bin/env bash
# Start-up time and idle memory of `shipmate serve` with the demo bot.toml.
#
# Builds the release binary, then RUNS times: copies bot.toml (fresh SQLite file, free port) and
# deploy/ into a fresh temp directory, starts the bot, measures the time from process start to
# the first 200 from /readyz, reads VmRSS after IDLE seconds of idling, and stops it with SIGTERM.
# Prints min/median/max of both. Targets: start-up ≤ 50 ms, idle RSS ≤ 20 MB.
#
# Usage: bash bench/startup.sh        (RUNS=10 IDLE=2 by default)
set -euo pipefail

RUNS="${RUNS:-10}"
IDLE="${IDLE:-2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shipmate-startup.XXXXXX")"
PIDFILE="$WORK/bot.pid"

# Stops a bot the measurement left running (interrupted run), then removes the temp directory.
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

echo "building: cargo build --release --locked" >&2
cargo build --release --locked >&2
BIN="$ROOT/target/release/shipmate"

# One measurement: starts the bot, polls /readyz tightly, idles, reads VmRSS, SIGTERMs it.
# Prints "<startup ms> <idle RSS KiB>". The child never outlives this script: its pid is in
# PIDFILE until it has been reaped, and it is killed on any error.
cat > "$WORK/measure.py" <<'PY'
import http.client, os, signal, subprocess, sys, time

binary, config, directory, port, pidfile, idle = sys.argv[1:7]
port, idle = int(port), float(idle)

def ready():
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status == 200
    except OSError:
        return False

with open(os.path.join(directory, "shipmate.log"), "wb") as log:
    start = time.monotonic()
    bot = subprocess.Popen([binary, "serve", "--config", config], cwd=directory,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        with open(pidfile, "w") as f:
            f.write(str(bot.pid))
        deadline = start + 10
        while not ready():
            if bot.poll() is not None:
                sys.exit(f"shipmate exited with {bot.returncode} before it was ready; see {directory}/shipmate.log")
            if time.monotonic() > deadline:
                sys.exit("shipmate was not ready within 10 s")
            time.sleep(0.0002)
        startup_ms = (time.monotonic() - start) * 1000
        time.sleep(idle)
        if bot.poll() is not None:
            sys.exit(f"shipmate exited with {bot.returncode} while idle; see {directory}/shipmate.log")
        rss_kib = None
        with open(f"/proc/{bot.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        if rss_kib is None:
            sys.exit(f"no VmRSS in /proc/{bot.pid}/status")
        bot.send_signal(signal.SIGTERM)
        try:
            code = bot.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sys.exit("shipmate did not stop within 10 s of SIGTERM")
        if code != 0:
            sys.exit(f"shipmate exited with {code} after SIGTERM")
        print(f"{startup_ms:.2f} {rss_kib}")
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
        if os.path.exists(pidfile):
            os.remove(pidfile)
PY

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

RESULTS="$WORK/results"
: > "$RESULTS"
for run in $(seq "$RUNS"); do
  dir="$WORK/run-$run"
  mkdir -p "$dir"
  port="$(free_port)"
  cp -R deploy "$dir/deploy"
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
      -e "s|^public_url = .*|public_url = \"http://127.0.0.1:$port\"|" \
      -e "s|^url = \"sqlite://[^\"]*\"|url = \"sqlite://$dir/shipmate.db\"|" \
      bot.toml > "$dir/bot.toml"
  grep -q "127.0.0.1:$port" "$dir/bot.toml" || { echo "could not set the port in bot.toml" >&2; exit 1; }
  grep -q "sqlite://$dir/shipmate.db" "$dir/bot.toml" || { echo "could not set the database in bot.toml" >&2; exit 1; }
  result="$(python3 "$WORK/measure.py" "$BIN" "$dir/bot.toml" "$dir" "$port" "$PIDFILE" "$IDLE")"
  read -r ms kib <<< "$result"
  printf 'run %2d: ready in %7.2f ms, idle RSS %6.2f MiB\n' "$run" "$ms" "$(awk "BEGIN { print $kib / 1024 }")"
  echo "$result" >> "$RESULTS"
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
ms = [float(r[0]) for r in rows]
mib = [int(r[1]) / 1024 for r in rows]
print(f"startup to first /readyz 200 ({len(rows)} runs): min {min(ms):.1f} ms, median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms (target ≤ 50 ms)")
print(f"idle RSS after start-up    ({len(rows)} runs): min {min(mib):.1f} MiB, median {statistics.median(mib):.1f} MiB, max {max(mib):.1f} MiB (target ≤ 20 MB)")
PY
