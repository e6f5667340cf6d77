#!/usr/bin/env bash
# Schemathesis (PyPI) against a running bot (issue 15): starts `shipmate serve` on a fresh SQLite
# database with an API token that may do everything, and lets schemathesis generate requests
# from GET /api/v1/openapi.json for every operation. It fails on any 5xx, and on any response
# whose status, content type, headers or body the document does not describe.
#
# Usage: bash ci/schemathesis.sh     (SHIPMATE_BIN= a built binary; EXAMPLES= per operation)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

export PATH="$HOME/.local/bin:$PATH"
if ! command -v st >/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends python3-pip
  fi
  # Debian's own Python refuses a system-wide install without the second form (PEP 668).
  python3 -m pip install --quiet --disable-pip-version-check schemathesis \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages schemathesis
fi
if ! command -v st >/dev/null; then
  echo "schemathesis: the st command is missing after pip install schemathesis" >&2
  exit 1
fi

BIN="${SHIPMATE_BIN:-}"
if [[ -z "$BIN" ]]; then
  cargo build --locked --bin shipmate
  BIN="$ROOT/target/debug/shipmate"
fi

WORK="$(mktemp -d)"
BOT_PID=""
cleanup() {
  [[ -n "$BOT_PID" ]] && kill "$BOT_PID" 2>/dev/null && wait "$BOT_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
DIGEST="$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
printf '#!/bin/sh\necho "deployed $SHIPMATE_SERVICE $SHIPMATE_VERSION to $SHIPMATE_ENVIRONMENT"\n' >"$WORK/deploy.sh"
chmod +x "$WORK/deploy.sh"
cat >"$WORK/bot.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[database]
url = "sqlite://shipmate.db"

[roles]
leads = ["api:fuzz"]
deployers = ["api:fuzz"]
admins = ["api:fuzz"]

[[api_tokens]]
name = "fuzz"
sha256 = "$DIGEST"
roles = ["deployers", "leads", "admins"]

[[service]]
name = "api"
  [[service.environment]]
  name = "dev"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "30s" }
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "30s" }
  approvals = { required = 1, from = "leads", self_approval = true }
  checklist = ["Changelog reviewed"]
TOML

"$BIN" serve --config "$WORK/bot.toml" >"$WORK/bot.log" 2>&1 &
BOT_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
  curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$BOT_PID" 2>/dev/null || { cat "$WORK/bot.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$BASE/readyz" >/dev/null

# Some history, so that reads find promotions, approvals and audit events.
auth=(-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")
curl -fsS "${auth[@]}" -d '{"service":"api","version":"1.0.0","changes":["feat: first"]}' "$BASE/api/v1/releases" >/dev/null
curl -fsS "${auth[@]}" -d '{"service":"api","version":"1.0.0"}' "$BASE/api/v1/promotions" >/dev/null

mkdir -p target/schemathesis
status=0
st run "$BASE/api/v1/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "${EXAMPLES:-50}" \
  --workers 2 \
  --seed 15 \
  --generation-allow-x00 true \
  --report junit --report-dir target/schemathesis \
  || status=$?
if [[ "$status" != 0 ]]; then
  echo "--- the bot's log ---" >&2
  tail -n 50 "$WORK/bot.log" >&2
fi
exit "$status"
