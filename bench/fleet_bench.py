#!/usr/bin/env python3
"""Push-to-running on two Docker hosts: one `wharf watch --host A --host B` following a
wharf registry's event stream (`--events-from`), timing from `docker push` returning until
the watched container runs the new image on BOTH engines (the machine's, and a second
dockerd this script starts with its own socket, data root, exec root, pid file and bridge,
`--iptables=false`). The peer, measured in the same run: the same watcher with one host.

Prints p50 and p99 over N pushes (default 20) for each, and the ratio two hosts / one.

Usage: fleet_bench.py --wharf BIN --work DIR [--runs N]
Needs root, docker (a running engine), dockerd, iproute2 and busybox-static. Standard
library only. Exit 0 when everything ran, 1 when something failed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auth import free_port, log  # noqa: E402
from watch_bench import (Failure, Procs, busybox_image, need, sh, watcher,  # noqa: E402
                         wharf_serve)

LIMIT = 60


class SecondEngine:
    """dockerd beside the machine's, as test-servers.md section 7 says (never --bridge none)."""

    def __init__(self, work):
        self.dir = os.path.join(work, "dockerd2")
        os.makedirs(self.dir, exist_ok=True)
        self.bridge = f"wharfbb{os.getpid() % 10000}"
        self.host = f"unix://{self.dir}/docker.sock"
        with open(os.path.join(self.dir, "daemon.json"), "w") as f:
            f.write("{}")
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", "172.30.253.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        self.proc = subprocess.Popen(
            ["dockerd", "--config-file", f"{self.dir}/daemon.json", "--host", self.host,
             "--data-root", f"{self.dir}/data", "--exec-root", f"{self.dir}/exec",
             "--pidfile", f"{self.dir}/docker.pid", "--bridge", self.bridge,
             "--iptables=false", "--ip-masq=false"],
            stdout=open(f"{self.dir}/log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while subprocess.run(["docker", "-H", self.host, "info"], capture_output=True).returncode:
            if self.proc.poll() is not None or time.time() > deadline:
                raise Failure(f"the second dockerd did not start: see {self.dir}/log")
            time.sleep(0.25)

    def docker(self, *args, check=True):
        return sh("docker", "-H", self.host, *args, check=check)

    def stop(self):
        ids = self.docker("ps", "-aq", check=False).split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def running(docker, name):
    out = docker("inspect", "-f", "{{.Image}} {{.State.Running}}", name, check=False)
    return out.split(" ")[0] if out.endswith(" true") else None


def measure(work, host, name, engines, runs, tag):
    image = f"{host}/bench/fleet:latest"
    took = []
    for i in range(runs):
        local = f"wharf-fleet-bench-{tag}:{i}"
        image_id = busybox_image(work, local, f"{tag}-{i}-{time.time()}")
        sh("docker", "tag", local, image)
        sh("docker", "push", image)
        pushed = time.monotonic()
        pending = list(engines)
        while pending:
            pending = [d for d in pending if running(d, name) != image_id]
            if time.monotonic() - pushed > LIMIT:
                raise Failure(f"{tag}: not running the new image on every host within {LIMIT} s")
            time.sleep(0.02)
        took.append(time.monotonic() - pushed)
        log(f"{tag} push {i + 1}: {took[-1]:.2f} s")
        time.sleep(1.5)  # the rollback grace of this update ends before the next push
        sh("docker", "rmi", local, check=False)
    return took


def setup(procs, wharf, work, engine2, hosts, runs, tag):
    os.makedirs(work, exist_ok=True)
    host = wharf_serve(procs, wharf, work)
    image = f"{host}/bench/fleet:latest"
    busybox_image(work, f"wharf-fleet-bench-{tag}:base", f"{tag}-base")
    sh("docker", "tag", f"wharf-fleet-bench-{tag}:base", image)
    sh("docker", "push", image)
    name = f"wharf-fleet-bench-{os.getpid()}"
    engines = [lambda *a, check=True: sh("docker", *a, check=check)]
    sh("docker", "rm", "-f", name, check=False)
    sh("docker", "run", "-d", "--name", name, image)
    if hosts == 2:
        engine2.docker("rm", "-f", name, check=False)
        engine2.docker("run", "-d", "--name", name, image)
        engines.append(engine2.docker)
    args = ["--interval", "24h", "--events-from", host, "--host",
            "one=unix:///var/run/docker.sock"]
    if hosts == 2:
        args += ["--host", f"two={engine2.host}"]
    watcher(procs, wharf, work, args + [name], free_port())
    time.sleep(1)
    try:
        return measure(work, host, name, engines, runs, tag)
    finally:
        sh("docker", "rm", "-f", name, check=False)
        engine2.docker("rm", "-f", name, check=False)
        sh("docker", "rmi", "-f", image, f"wharf-fleet-bench-{tag}:base", check=False)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_FLEET_RUNS", "20")))
    a = ap.parse_args()
    for tool, package in (("docker", "docker.io"), ("dockerd", "docker.io"),
                          ("ip", "iproute2"), ("busybox", "busybox-static")):
        need(tool, package)
    procs = Procs()
    engine2 = None
    results = {}
    try:
        engine2 = SecondEngine(a.work)
        results["one host (peer)"] = setup(procs, a.wharf, os.path.join(a.work, "one"), engine2, 1, a.runs, "one")
        procs.stop_all()
        results["two hosts"] = setup(procs, a.wharf, os.path.join(a.work, "two"), engine2, 2, a.runs, "two")
    except Failure as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        procs.stop_all()
        if engine2:
            engine2.stop()
    one = statistics.median(results["one host (peer)"])
    print()
    print(f"push-to-running over the event stream, {a.runs} pushes each "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs)")
    print()
    print("| setup | p50 (s) | p99 (s) | worst (s) | p50 / one host p50 |")
    print("|---|---|---|---|---|")
    for name, took in results.items():
        p50 = statistics.median(took)
        print(f"| {name} | {p50:.2f} | {pct(took, 99):.2f} | {max(took):.2f} | {p50 / one:.2f}x |")
    print(json.dumps({k: [round(x, 3) for x in v] for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
