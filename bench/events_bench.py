#!/usr/bin/env python3
"""The notification system's cost on push throughput: wharf with one webhook endpoint
(registry:2's notifications.endpoints; the receiver is nginx answering 200, or with
--receiver python a Python http.server) against the same wharf with none, measured in the
same run, alternating, on fresh storage roots each time. Every event must arrive.

One push is an image push over HTTP: a distinct 4 KiB blob (monolithic POST ?digest=),
then an OCI manifest naming it, PUT by tag. That is two events (blob push, manifest push),
so this is the worst case for the events' share of the work. 8 threads on kept-alive
connections push for PUSH_SECS. With the endpoint, delivery runs during the pushes and
competes for the same 2 CPUs; after the pushes, the time until the receiver has every
event is reported too.

The same binary also runs with the event log off (`notifications.eventlog: false`, no
`/v2/_events`, no webhooks): "log on / log off" prices the durable event log itself, which
group commit (one fsync for every event waiting) keeps near 1 (target >= 0.95).

--base BIN also measures a wharf without the event system at all (e.g. built from the
commit before it).

Usage: events_bench.py --wharf BIN [--base BIN] [--work DIR] [--rounds N] [--pids FILE]
"""

import argparse
import getpass
import hashlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

THREADS = 8
PUSH_SECS = 5.0
SMALL = 4096
TARGET_COST = 0.05
TARGET_LOG = 0.95

# The receiver is nginx answering 200 to each POST and logging it: on 2 shared cores a
# receiver's own CPU slows the pushes too, and nginx's is smallest, so what is measured is
# wharf's cost. (`--receiver python` uses the Python one below, a heavier receiver.)
NGINX = """
user {user};
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200; }}
    }}
}}
"""

RECEIVER = r"""
import http.server, json, sys, threading
count = [0]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        with lock:
            count[0] += len(json.loads(body)["events"])
        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
    def do_GET(self):
        body = str(count[0]).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"""


class BenchFailure(Exception):
    pass


POSTS = []  # (requests the receiver got, events in them) per endpoint run
PIDS = [None]  # a file bench/run reads to stop what a killed bench left running


def track(proc):
    if PIDS[0]:
        with open(PIDS[0], "a") as f:
            f.write(f"{proc.pid}\n")
    return proc


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchFailure(f"{what} exited with {proc.returncode} during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchFailure(f"{what} did not listen on {port} within {timeout}s")


def delivered(debug_port):
    """registry_notifications_delivered_total of the bench endpoint, from wharf's metrics."""
    c = http.client.HTTPConnection("127.0.0.1", debug_port, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    for line in text.splitlines():
        if line.startswith("registry_notifications_delivered_total") and 'endpoint="bench"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def start_wharf(binary, root, endpoint_url, log=True):
    port = free_port()
    debug = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["WHARF_LOG"] = "warn"
    env["REGISTRY_LOG_ACCESSLOG_DISABLED"] = "true"
    env["REGISTRY_HTTP_DEBUG_ADDR"] = f"127.0.0.1:{debug}"
    env["REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED"] = "true"
    if not log:
        env["REGISTRY_NOTIFICATIONS_EVENTLOG"] = "false"
    if endpoint_url:
        env["REGISTRY_NOTIFICATIONS_ENDPOINTS"] = f"- name: bench\n  url: {endpoint_url}\n"
    proc = track(subprocess.Popen(
        [binary, "serve", "--addr", f"127.0.0.1:{port}", "--root", root],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(port, proc, binary)
    return proc, port, debug


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU of `pid` and its children (nginx's worker does nginx's work)."""
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / TICK


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Receiver:
    def __init__(self, kind, work):
        self.kind, self.port = kind, free_port()
        if kind == "nginx":
            self.dir = tempfile.mkdtemp(prefix="nginx.", dir=work)
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX.format(user=getpass.getuser(), dir=self.dir, port=self.port))
            argv = ["nginx", "-p", self.dir, "-e", os.path.join(self.dir, "error.log"), "-c", conf]
        else:
            argv = [sys.executable, "-c", RECEIVER, str(self.port)]
        self.proc = track(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        wait_port(self.port, self.proc, f"the {kind} receiver")

    def posts(self):
        """POSTs received so far (nginx): an envelope holds several events when delivery lags."""
        with open(os.path.join(self.dir, "access.log"), "rb") as f:
            return sum(1 for line in f if b'"POST ' in line)

    def count(self, debug_port):
        """Events received so far: the Python receiver counts them in the envelopes; with
        nginx (which does not read bodies), wharf's count of events the receiver accepted."""
        if self.kind == "nginx":
            return delivered(debug_port)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("GET", "/count")
        n = int(c.getresponse().read())
        c.close()
        return n


def request(conn, method, path, body, headers, expect):
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != expect:
        raise BenchFailure(f"{method} {path} -> {r.status}: {data[:300]!r}")


def push_image(conn, i, t):
    blob = f"{t}-{i}-".encode().ljust(SMALL, b"x")
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    request(conn, "POST", f"/v2/bench/app/blobs/uploads/?digest={digest}", blob,
            {"Content-Type": "application/octet-stream"}, 201)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest, "size": len(blob)},
        "layers": [],
    }).encode()
    request(conn, "PUT", f"/v2/bench/app/manifests/t{t}-{i}", manifest,
            {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, 201)


def pushes(port):
    """Image pushes per second with THREADS threads for PUSH_SECS."""
    done = [0] * THREADS
    errors = []
    barrier = threading.Barrier(THREADS + 1)
    stop_at = [0.0]

    def worker(t):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            barrier.wait()
            i = 0
            while time.perf_counter() < stop_at[0] and not errors:
                push_image(conn, i, t)
                i += 1
            done[t] = i
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    stop_at[0] = time.perf_counter() + PUSH_SECS
    t0 = time.perf_counter()
    barrier.wait()
    for th in threads:
        th.join()
    secs = time.perf_counter() - t0
    if errors:
        raise BenchFailure(f"push failed: {errors[0]!r}")
    return sum(done), secs


def one_run(binary, work, label, receiver, log=True):
    root = tempfile.mkdtemp(prefix=f"{label}.", dir=work)
    rx = None
    url = None
    if receiver:
        rx = Receiver(receiver, work)
        url = f"http://127.0.0.1:{rx.port}/events"
    proc, port, debug = start_wharf(binary, root, url, log)
    try:
        cpu0 = cpu_seconds(proc.pid) + (cpu_seconds(rx.proc.pid) if rx else 0)
        n, secs = pushes(port)
        lag = None
        if rx:
            t0 = time.perf_counter()
            deadline = t0 + 120
            while rx.count(debug) < 2 * n:
                if time.perf_counter() > deadline:
                    raise BenchFailure(f"only {rx.count(debug)} of {2 * n} events arrived")
                time.sleep(0.02)
            lag = time.perf_counter() - t0
            time.sleep(0.5)
            if rx.count(debug) != 2 * n:
                raise BenchFailure(f"{rx.count(debug)} events for {n} pushes, want {2 * n}")
            if rx.kind == "nginx":
                POSTS.append((rx.posts(), 2 * n))
        # Server (and receiver) CPU per push, delivery included: less swayed than the
        # rate by other work on the machine.
        cpu = cpu_seconds(proc.pid) + (cpu_seconds(rx.proc.pid) if rx else 0) - cpu0
        return n / secs, lag, cpu * 1000 / n
    finally:
        stop(proc)
        if rx:
            stop(rx.proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--base", help="a wharf without the event system, for the log's own cost")
    ap.add_argument("--work", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pids", help="append started pids here")
    ap.add_argument("--receiver", choices=["nginx", "python"], default="nginx")
    a = ap.parse_args()
    PIDS[0] = a.pids
    work = a.work or tempfile.mkdtemp(prefix="wharf-events-bench.")
    os.makedirs(work, exist_ok=True)
    results = {"none": [], "endpoint": [], "off": [], "base": []}
    cpu = {"none": [], "endpoint": [], "off": [], "base": []}
    lags = []
    for r in range(a.rounds):
        # Alternate, so drift on this noisy machine falls on both alike.
        runs = [("none", a.wharf, None, True), ("endpoint", a.wharf, a.receiver, True),
                ("off", a.wharf, None, False)]
        if a.base:
            runs.append(("base", a.base, None, True))
        for label, binary, receiver, log in runs:
            rate, lag, ms = one_run(binary, work, label, receiver, log)
            results[label].append(rate)
            cpu[label].append(ms)
            if lag is not None:
                lags.append(lag)
        print(f"round {r + 1}: " + ", ".join(
            f"{k} {v[-1]:.0f}/s {cpu[k][-1]:.2f} ms CPU" for k, v in results.items() if v),
            file=sys.stderr)
    none = statistics.median(results["none"])
    endpoint = statistics.median(results["endpoint"])
    cost = 1 - endpoint / none
    print(f"image pushes/s (4 KiB blob + manifest, {THREADS} threads, median of {a.rounds}; "
          f"{a.receiver} receiver):")
    print(f"  no endpoint  {none:8.0f}   runs {', '.join(f'{x:.0f}' for x in results['none'])}")
    print(f"  1 endpoint   {endpoint:8.0f}   runs {', '.join(f'{x:.0f}' for x in results['endpoint'])}")
    print(f"  ratio 1 endpoint / none = {endpoint / none:.3f} (cost {cost * 100:.1f}%, "
          f"target <= {TARGET_COST * 100:.0f}%: {'PASS' if cost <= TARGET_COST else 'MISS'})")
    off = statistics.median(results["off"])
    print(f"  event log off {off:7.0f}   runs {', '.join(f'{x:.0f}' for x in results['off'])}")
    print(f"  ratio log on / log off = {none / off:.3f} (target >= {TARGET_LOG}: "
          f"{'PASS' if none / off >= TARGET_LOG else 'MISS'})")
    if POSTS:
        p, e = sum(x[0] for x in POSTS), sum(x[1] for x in POSTS)
        print(f"  envelopes: {p} POSTs carried {e} events ({e / p:.1f} per envelope)")
    print(f"  every event delivered {statistics.median(lags):.2f} s (median) after the last push")
    c_none, c_end = statistics.median(cpu["none"]), statistics.median(cpu["endpoint"])
    print(f"  CPU per push (server + receiver, delivery included): none {c_none:.2f} ms, "
          f"1 endpoint {c_end:.2f} ms, ratio {c_end / c_none:.3f}")
    if a.base:
        base = statistics.median(results["base"])
        print(f"  without events {base:6.0f}   runs {', '.join(f'{x:.0f}' for x in results['base'])}")
        print(f"  ratio no endpoint / without events = {none / base:.3f} (the event log's cost)")
        c_base = statistics.median(cpu["base"])
        print(f"  CPU per push without events {c_base:.2f} ms, ratio no endpoint / without "
              f"events {c_none / c_base:.3f}")


if __name__ == "__main__":
    try:
        main()
    except BenchFailure as e:
        print(f"events bench: {e}", file=sys.stderr)
        sys.exit(1)
