"""Throughput and approval-to-deploy latency of 1, 2 and 3 `shipmate serve` replicas on one
PostgreSQL database (SPEC §8). Driven by bench/replicas.sh; standard library only.

For each replica count: a fresh database, one bot.toml shared by every replica (the listen port
comes from each replica's REPLICA_PORT), the replicas started one after the other, then
  1. throughput: PROMOTIONS promotions of as many services (backend `command` = `true`, no
     approvals), requested concurrently round robin over the replicas, timed until every one
     succeeded (as GET /api/v1/services shows);
  2. latency: SAMPLES promotions of an environment needing one approval, one at a time, each
     approved on replica A; the time from sending the approval to the deploy script's first
     line (it writes a nanosecond timestamp; the script runs on whichever replica claims it).
Prints one table row per replica count. Replicas are SIGTERMed and the databases dropped at exit.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

BINARY = sys.argv[1]
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
PROMOTIONS = int(os.environ.get("PROMOTIONS", "200"))
SAMPLES = int(os.environ.get("SAMPLES", "50"))
REPLICAS = [int(n) for n in os.environ.get("REPLICAS", "1 2 3").split()]
CI_TOKEN = "bench-ci-token"
LEAD_TOKEN = "bench-lead-token"
PATIENCE = 300.0

STAMP_SCRIPT = """#!/bin/sh
echo "$SHIPMATE_PROMOTION_ID $(date +%s%N)" >> stamps.txt
"""


def sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


def config(database_url):
    services = "".join(
        f"""
[[service]]
name = "svc{n:04}"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["true"], timeout = "60s" }}
"""
        for n in range(PROMOTIONS)
    )
    gated = "".join(
        f"""
[[service]]
name = "gated{n:04}"
  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["./stamp.sh"], timeout = "60s" }}
  approvals = {{ required = 1, from = "leads", expires = "24h" }}
"""
        for n in range(SAMPLES)
    )
    return f"""
[server]
listen = "127.0.0.1:${{REPLICA_PORT}}"
shutdown_grace = "5s"

[database]
url = "{database_url}"

[roles]
leads = ["api:lead"]
deployers = ["api:ci", "api:lead"]
admins = []

[[api_tokens]]
name = "ci"
sha256 = "{sha(CI_TOKEN)}"

[[api_tokens]]
name = "lead"
sha256 = "{sha(LEAD_TOKEN)}"
{services}{gated}"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, token=CI_TOKEN, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["content-type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, (json.loads(text) if text else None)


def psql(sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", ADMIN_URL, "-c", sql],
                   check=True, stdout=subprocess.DEVNULL)


class Cluster:
    def __init__(self, count):
        self.name = f"shipmate_bench_{uuid.uuid4().hex}"
        psql(f"CREATE DATABASE {self.name}")
        base = ADMIN_URL.rsplit("/", 1)[0]
        self.dir = tempfile.mkdtemp(prefix="shipmate-replicas.")
        with open(os.path.join(self.dir, "bot.toml"), "w") as f:
            f.write(config(f"{base}/{self.name}"))
        stamp = os.path.join(self.dir, "stamp.sh")
        with open(stamp, "w") as f:
            f.write(STAMP_SCRIPT)
        os.chmod(stamp, 0o755)
        self.processes, self.ports = [], []
        for index in range(count):
            self.start(index)

    def start(self, index):
        port = free_port()
        log = open(os.path.join(self.dir, f"replica-{index}.log"), "w")
        process = subprocess.Popen(
            [BINARY, "serve", "--config", os.path.join(self.dir, "bot.toml")],
            env={**os.environ, "REPLICA_PORT": str(port), "RUST_LOG": "warn"},
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.processes.append(process)
        self.ports.append(port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"replica {index} exited with {process.returncode}; see {log.name}")
            try:
                if request(port, "GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"replica {index} never became ready; see {log.name}")

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def promote(cluster, n, service):
    port = cluster.ports[n % len(cluster.ports)]
    body = {"service": service, "version": "1.0.0", "environment": "production"}
    status, answer = request(port, "POST", "/api/v1/promotions", body=body)
    if status != 202:
        raise SystemExit(f"promote {service}: {status} {answer}")
    return answer["id"]


def deployed_services(cluster):
    status, services = request(cluster.ports[0], "GET", "/api/v1/services")
    if status != 200:
        raise SystemExit(f"GET /api/v1/services: {status} {services}")
    return sum(1 for s in services if s["service"].startswith("svc")
               and any(e["version"] == "1.0.0" for e in s["environments"]))


def throughput(cluster):
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: promote(cluster, n, f"svc{n:04}"), range(PROMOTIONS)))
    while deployed_services(cluster) < PROMOTIONS:
        if time.monotonic() - started > PATIENCE:
            raise SystemExit("the promotions did not all succeed in time")
        time.sleep(0.05)
    return time.monotonic() - started


def stamp_of(cluster, promotion):
    try:
        with open(os.path.join(cluster.dir, "stamps.txt")) as f:
            for line in f:
                id_, ns = line.split()
                if int(id_) == promotion:
                    return int(ns)
    except FileNotFoundError:
        pass
    return None


def approval_latencies(cluster):
    latencies = []
    for n in range(SAMPLES):
        promotion = promote(cluster, n, f"gated{n:04}")
        sent = time.time_ns()
        status, answer = request(cluster.ports[0], "POST",
                                 f"/api/v1/promotions/{promotion}/approve",
                                 token=LEAD_TOKEN, body={})
        if status != 200:
            raise SystemExit(f"approve #{promotion}: {status} {answer}")
        deadline = time.monotonic() + 30
        while (stamp := stamp_of(cluster, promotion)) is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"#{promotion} never started its deploy")
            time.sleep(0.002)
        latencies.append((stamp - sent) / 1e6)
    return latencies


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main():
    print(f"{'replicas':>8} | {'promotions':>10} | {'seconds':>7} | {'promotions/s':>12} | "
          f"{'approval→deploy-start p50 (ms)':>31} | {'p99 (ms)':>8}")
    print("-" * 94)
    for count in REPLICAS:
        cluster = Cluster(count)
        try:
            seconds = throughput(cluster)
            latencies = approval_latencies(cluster)
        finally:
            cluster.stop()
        print(f"{count:>8} | {PROMOTIONS:>10} | {seconds:>7.2f} | {PROMOTIONS / seconds:>12.1f} | "
              f"{statistics.median(latencies):>31.1f} | {percentile(latencies, 99):>8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
