#!/usr/bin/env bash
# Headless Chromium tests of the web pages (tests/browser/): builds the bot, installs Debian's
# chromium and playwright-core (npm) when missing, and runs them with node's test runner.
# Under CI=true a Chromium that is still missing after the install fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ] && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends chromium fonts-dejavu-core
fi
if [ ! -x "$CHROMIUM" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "browser tests: no Chromium at $CHROMIUM after installing it" >&2
    exit 1
  fi
  echo "browser tests skipped: no Chromium at $CHROMIUM (apt-get install chromium)" >&2
  exit 0
fi
if ! command -v node >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    apt-get install -y --no-install-recommends nodejs npm
  else
    echo "browser tests need node and npm" >&2
    exit 1
  fi
fi

cargo build --locked --bin shipmate
(cd tests/browser && npm ci --no-audit --no-fund)
(cd tests/browser && node --test)
