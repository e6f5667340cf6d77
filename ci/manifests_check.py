"""Checks the rendered deploy/kubernetes base for what SPEC §9 and the README promise of it.

Usage: python3 ci/manifests_check.py RENDERED.yaml BOT_TOML_OUT
Reads the output of `kubectl kustomize deploy/kubernetes`, exits 1 naming every broken promise,
else writes the generated ConfigMap's bot.toml to BOT_TOML_OUT and prints the names of the
environment variables the container gets (one a line), for `shipmate check-config`.
Schema validity is checked elsewhere (kubernetes-validate --strict); this checks intent.
"""

import re
import sys
import tomllib

import yaml

EXPECTED_KINDS = {"ServiceAccount", "ClusterRole", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}
WRITABLE_PATHS = {"/app/data", "/tmp"}

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)
    return ok


def seconds(duration):
    """`45s`, `2m` or `1h` as seconds (the forms bot.toml's shutdown_grace takes here)."""
    match = re.fullmatch(r"(\d+)(s|m|h)", duration)
    if not match:
        raise SystemExit(f"cannot read the duration {duration!r}; write it like 45s or 1m")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, found {len(found)}")
    return found[0]


def subset(small, big):
    return all(big.get(key) == value for key, value in small.items())


def check_deployment(deployment, pod_labels, config_map_name):
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    check(spec.get("replicas") == 2, f"Deployment replicas is {spec.get('replicas')}, not 2")
    check(subset(spec["selector"]["matchLabels"], pod_labels), "Deployment selector does not match its pods")
    containers = pod["containers"]
    check(len(containers) == 1, f"{len(containers)} containers; the bot runs alone in its pod")
    container = containers[0]
    check(":" in container["image"], f"image {container['image']!r} has no tag")

    pod_security = pod.get("securityContext", {})
    check(pod_security.get("runAsNonRoot") is True, "pod securityContext lacks runAsNonRoot: true")
    check(pod_security.get("runAsUser", 0) != 0, "pod runs as uid 0")
    security = container.get("securityContext", {})
    check(security.get("readOnlyRootFilesystem") is True, "container root file system is not read-only")
    check(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    check("ALL" in security.get("capabilities", {}).get("drop", []), "capabilities are not all dropped")

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        check(got == path, f"{probe} checks {got!r}, not {path}")
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            check(resource in container.get("resources", {}).get(kind, {}), f"no {resource} {kind}")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    for path, mount in mounts.items():
        if not mount.get("readOnly"):
            check("emptyDir" in volumes[mount["name"]], f"{path} is writable but not an emptyDir")
    check(WRITABLE_PATHS <= set(mounts), f"writable mounts {sorted(WRITABLE_PATHS - set(mounts))} missing")
    config_mounts = [p for p, m in mounts.items() if volumes[m["name"]].get("configMap", {}).get("name") == config_map_name]
    check(len(config_mounts) == 1, f"the ConfigMap {config_map_name} is not mounted once")
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else "/app/bot.toml"
    check(config_mounts and config_path == f"{config_mounts[0]}/bot.toml", f"--config {config_path} is not the mounted bot.toml")

    env = container.get("env", [])
    for variable in env:
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        check(reference is not None and reference.get("name"), f"env {variable['name']} does not come from a Secret")
    return container, pod


def variables_read(value):
    """The ${NAME}s in every string value of the parsed bot.toml (comments don't count)."""
    if isinstance(value, str):
        return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value))
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*map(variables_read, value))
    return set()


def check_bot_toml(text, container, pod):
    config = tomllib.loads(text)
    check(config["database"]["url"] == "${DATABASE_URL}", "database.url is not ${DATABASE_URL} (replicas need PostgreSQL from the Secret)")
    port = int(config["server"]["listen"].rsplit(":", 1)[1])
    check(config["server"]["listen"].startswith("0.0.0.0:"), "server.listen does not accept connections from outside the pod")
    check(any(p["containerPort"] == port and p.get("name") == "http" for p in container["ports"]), f"listen port {port} is not the container port named http")
    grace = seconds(config["server"].get("shutdown_grace", "30s"))
    check(pod.get("terminationGracePeriodSeconds", 30) > grace, "terminationGracePeriodSeconds does not exceed server.shutdown_grace")
    provided = {v["name"] for v in container.get("env", [])}
    for name in sorted(variables_read(config) - provided):
        problems.append(f"bot.toml reads ${{{name}}} but the container's env does not set it")
    return port


def main():
    rendered, bot_toml_out = sys.argv[1], sys.argv[2]
    with open(rendered) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    kinds = {o["kind"] for o in objects}
    check(kinds == EXPECTED_KINDS, f"kinds {sorted(kinds)}, expected {sorted(EXPECTED_KINDS)} (no Secret: it is created by hand)")

    config_map = one(objects, "ConfigMap")
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container, pod = check_deployment(deployment, pod_labels, config_map["metadata"]["name"])
    check(pod.get("serviceAccountName") == one(objects, "ServiceAccount")["metadata"]["name"], "pods do not run as the ServiceAccount")

    text = config_map["data"]["bot.toml"]
    check_bot_toml(text, container, pod)

    service = one(objects, "Service")
    check(subset(service["spec"]["selector"], pod_labels), "Service selector does not match the pods")
    check(all(p["targetPort"] == "http" for p in service["spec"]["ports"]), "Service does not target the port named http")

    budget = one(objects, "PodDisruptionBudget")["spec"]
    check(budget.get("minAvailable") == 1, f"PodDisruptionBudget minAvailable is {budget.get('minAvailable')}, not 1")
    check(budget["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"], "PodDisruptionBudget selects other pods than the Deployment")

    if problems:
        print("deploy/kubernetes:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        sys.exit(1)
    with open(bot_toml_out, "w") as f:
        f.write(text)
    for variable in container.get("env", []):
        print(variable["name"])


main()
