#!/usr/bin/env python3
"""Push-to-running latency: how long after `docker push` returns a watched container runs
the new image, with `wharf watch` driven by registry events against `wharf watch` polling
on an interval (what watchtower does; its default interval is 24 h, here 10 s so the runs
end).

Setups, each measured in this run on this machine:
- webhook: Distribution 2.8.2 (`docker-registry`) with `notifications.endpoints` posting
  to `wharf watch --http-api-events`, interval 24 h;
- stream: `wharf serve` and `wharf watch --events-from` (its `/v2/_events`), interval 24 h;
  reported as n/a when this wharf's registry does not serve the stream;
- poll: Distribution 2.8.2 and `wharf watch --interval 10s` (no events).

A poll finds a push after half its interval on average, plus the update itself; each
poll-setup push is made at a random point of the interval so the median shows that.
Each run builds a new busybox image, pushes it as `bench/app:latest` and polls
`docker inspect` every 20 ms until the container (same name) runs that image id.
Prints median and worst per setup, and the ratio of the poll median to each event median.

Usage: watch_bench.py --wharf BIN --work DIR [--runs N] [--interval S]
Needs docker (a running engine), docker-registry and busybox-static. Standard library only.
Exit 0 when everything ran, 1 when something failed.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request

from auth import free_port, log  # noqa: E402  shared with the authenticated bench

TOKEN = "bench-token"
LIMIT = 120  # seconds: no setup may take longer than this to update a container


class Failure(Exception):
    pass


def need(tool, package):
    if shutil.which(tool) is None:
        raise Failure(f"'{tool}' not found: install the Debian package '{package}'")


def sh(*args, check=True, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise Failure(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def wait_up(url, proc, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise Failure(f"{what} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise Failure(f"{what} did not answer {url} within 20 s")


def busybox_image(work, name, marker):
    """A busybox image that runs until stopped; `marker` makes its digest unique."""
    root = os.path.join(work, "rootfs-" + marker)
    os.makedirs(os.path.join(root, "bin"))
    shutil.copy(shutil.which("busybox"), os.path.join(root, "bin", "busybox"))
    for applet in ("sh", "sleep"):
        os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "marker"), "w") as f:
        f.write(marker)
    tar = root + ".tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    cmd = 'CMD ["/bin/sh", "-c", "trap \'exit 0\' TERM; while true; do sleep 1; done"]'
    sh("docker", "import", "--change", cmd, tar, name)
    shutil.rmtree(root)
    os.remove(tar)
    return sh("docker", "image", "inspect", "-f", "{{.Id}}", name)


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, log_path, **kw):
        p = subprocess.Popen(args, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def distribution(procs, work, webhook):
    port = free_port()
    notify = ""
    if webhook:
        notify = (
            "notifications:\n  endpoints:\n    - name: watch\n"
            f"      url: {webhook}\n"
            f"      headers:\n        Authorization: [\"Bearer {TOKEN}\"]\n"
            "      timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
        )
    config = os.path.join(work, "dist.yml")
    with open(config, "w") as f:
        f.write(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {work}/dist-data\n"
            f"http:\n  addr: 127.0.0.1:{port}\n{notify}"
        )
    p = procs.start(["docker-registry", "serve", config], os.path.join(work, "dist.log"))
    wait_up(f"http://127.0.0.1:{port}/v2/", p, "docker-registry")
    return f"127.0.0.1:{port}"


def wharf_serve(procs, wharf, work):
    port = free_port()
    config = os.path.join(work, "wharf.yml")
    with open(config, "w") as f:
        f.write(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {work}/wharf-data\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
    p = procs.start([wharf, "serve", config], os.path.join(work, "wharf.log"))
    wait_up(f"http://127.0.0.1:{port}/v2/", p, "wharf serve")
    return f"127.0.0.1:{port}"


def serves_events(host):
    try:
        r = urllib.request.urlopen(f"http://{host}/v2/_events", timeout=2)
        return r.headers.get("Content-Type", "").startswith("text/event-stream")
    except OSError:
        return False


def watcher(procs, wharf, work, args, port):
    env = dict(os.environ, WATCHTOWER_HTTP_API_TOKEN=TOKEN)
    env.pop("WATCHTOWER_POLL_INTERVAL", None)
    cmd = [wharf, "watch", "--http-api-metrics", "--http-api-addr", f"127.0.0.1:{port}",
           "--stop-timeout", "5s", "--rollback-grace", "1s"] + args
    p = procs.start(cmd, os.path.join(work, "watch.log"), env=env)
    wait_up(f"http://127.0.0.1:{port}/v1/metrics", p, "wharf watch")
    return port


def runs_image(name, image_id):
    out = sh("docker", "inspect", "-f", "{{.Image}} {{.State.Running}}", name, check=False)
    return out == f"{image_id} true"


def measure(work, host, name, runs, tag, settle, jitter):
    """Push a new image `runs` times; seconds from each push's return to it running.
    Each push waits `settle` s plus up to `jitter` s at random, so pushes land anywhere in
    a poll interval (pushed right after an update, each would wait a whole interval)."""
    image = f"{host}/bench/app:latest"
    took = []
    for i in range(runs):
        time.sleep(random.uniform(0, jitter))
        local = f"wharf-watch-bench-{tag}:{i}"
        image_id = busybox_image(work, local, f"{tag}-{i}-{time.time()}")
        sh("docker", "tag", local, image)
        sh("docker", "push", image)
        pushed = time.monotonic()
        while not runs_image(name, image_id):
            if time.monotonic() - pushed > LIMIT:
                raise Failure(f"{tag}: the container did not run the new image within {LIMIT} s")
            time.sleep(0.02)
        took.append(time.monotonic() - pushed)
        log(f"{tag} run {i + 1}: {took[-1]:.2f} s")
        time.sleep(settle)  # the session's rollback grace ends before the next push
        sh("docker", "rmi", local, check=False)
    return took


def setup(procs, wharf, work, name, tag, runs, registry, watch_args, settle, port=None,
          jitter=0):
    """Registry up, v0 pushed and running as `name`, watcher up; then the timed runs."""
    os.makedirs(work, exist_ok=True)
    host = registry()
    image = f"{host}/bench/app:latest"
    busybox_image(work, f"wharf-watch-bench-{tag}:base", f"{tag}-base")
    sh("docker", "tag", f"wharf-watch-bench-{tag}:base", image)
    sh("docker", "push", image)
    sh("docker", "rm", "-f", name, check=False)
    sh("docker", "run", "-d", "--name", name, image)
    # Only this container: other containers on a shared engine are not the bench's to update.
    watcher(procs, wharf, work, watch_args(host) + [name], port or free_port())
    time.sleep(1)
    try:
        return measure(work, host, name, runs, tag, settle, jitter)
    finally:
        sh("docker", "rm", "-f", name, f"{name}-wharf-prev", f"{name}-wharf-next", check=False)
        sh("docker", "rmi", "-f", image, f"wharf-watch-bench-{tag}:base", check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_WATCH_RUNS", "6")))
    ap.add_argument("--interval", type=int, default=10)
    a = ap.parse_args()
    for tool, package in (("docker", "docker.io"), ("docker-registry", "docker-registry"),
                          ("busybox", "busybox-static")):
        need(tool, package)
    results = {}
    procs = Procs()
    name = f"wharf-watch-bench-{os.getpid()}"
    try:
        # Webhook: the watcher's port must be known before Distribution starts.
        work = os.path.join(a.work, "webhook")
        hook_port = free_port()

        def hook_registry():
            return distribution(procs, work, f"http://127.0.0.1:{hook_port}/v1/events")

        def hook_args(_host):
            return ["--interval", "24h", "--http-api-events"]

        results["event webhook (Distribution 2.8.2 notifications)"] = setup(
            procs, a.wharf, work, name, "webhook", a.runs, hook_registry, hook_args, 2,
            port=hook_port)
        procs.stop_all()

        work = os.path.join(a.work, "stream")
        os.makedirs(work, exist_ok=True)
        if serves_events_probe(a.wharf, work):
            results["event stream (wharf serve /v2/_events)"] = setup(
                procs, a.wharf, work, name, "stream", a.runs,
                lambda: wharf_serve(procs, a.wharf, work),
                lambda host: ["--interval", "24h", "--events-from", host], 2)
        else:
            results["event stream (wharf serve /v2/_events)"] = None
        procs.stop_all()

        work = os.path.join(a.work, "poll")
        results[f"poll every {a.interval} s (no events)"] = setup(
            procs, a.wharf, work, name, "poll", a.runs,
            lambda: distribution(procs, work, None),
            lambda host: ["--interval", f"{a.interval}s"], 2, jitter=a.interval)
    except Failure as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        procs.stop_all()
    report(results, a)
    return 0


def serves_events_probe(wharf, work):
    """Whether this wharf's registry serves /v2/_events (it is a separate feature)."""
    probe = os.path.join(work, "probe")
    os.makedirs(probe, exist_ok=True)
    p = Procs()
    try:
        return serves_events(wharf_serve(p, wharf, probe))
    finally:
        p.stop_all()


def report(results, a):
    poll = results[f"poll every {a.interval} s (no events)"]
    poll_median = statistics.median(poll)
    print()
    print(f"push-to-running latency, {a.runs} pushes each "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs)")
    print()
    print("| setup | median (s) | worst (s) | poll median / this median |")
    print("|---|---|---|---|")
    for setup_name, took in results.items():
        if took is None:
            print(f"| {setup_name} | n/a (this registry serves no /v2/_events) | | |")
            continue
        median = statistics.median(took)
        print(f"| {setup_name} | {median:.2f} | {max(took):.2f} | {poll_median / median:.1f}x |")


if __name__ == "__main__":
    sys.exit(main())
