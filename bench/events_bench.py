#!/usr/bin/env python3
"""The notification system's cost on push throughput: wharf with one webhook endpoint
(registry:2's notifications.endpoints, a receiver in a separate Python process answering
200) against the same wharf with none, measured in the same run, alternating, on fresh
storage roots each time.

One push is an image push over HTTP: a distinct 4 KiB blob (monolithic POST ?digest=),
then an OCI manifest naming it, PUT by tag. That is two events (blob push, manifest push),
so this is the worst case for the events' share of the work. 8 threads on kept-alive
connections push for PUSH_SECS. With the endpoint, delivery runs during the pushes and
competes for the same 2 CPUs; after the pushes, the time until the receiver has every
event is reported too.

--base BIN also measures a wharf without the event system at all (e.g. built from the
commit before it), which prices the event log that `/v2/_events` needs even with no
endpoint.

Usage: events_bench.py --wharf BIN [--base BIN] [--work DIR] [--rounds N] [--pids FILE]
"""

import argparse
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
PUSH_SECS = 8.0
SMALL = 4096
TARGET_COST = 0.03

RECEIVER = r"""
import http.server, sys, threading
count = [0]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        with lock:
            count[0] += 1
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


def start_wharf(binary, root, endpoint_url):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["WHARF_LOG"] = "warn"
    env["REGISTRY_LOG_ACCESSLOG_DISABLED"] = "true"
    if endpoint_url:
        env["REGISTRY_NOTIFICATIONS_ENDPOINTS"] = f"- name: bench\n  url: {endpoint_url}\n"
    proc = track(subprocess.Popen(
        [binary, "serve", "--addr", f"127.0.0.1:{port}", "--root", root],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(port, proc, binary)
    return proc, port


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def receiver_count(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
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


def one_run(binary, work, label, with_endpoint):
    root = tempfile.mkdtemp(prefix=f"{label}.", dir=work)
    rx = None
    url = None
    if with_endpoint:
        rport = free_port()
        rx = track(subprocess.Popen([sys.executable, "-c", RECEIVER, str(rport)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(rport, rx, "the receiver")
        url = f"http://127.0.0.1:{rport}/events"
    proc, port = start_wharf(binary, root, url)
    try:
        n, secs = pushes(port)
        lag = None
        if with_endpoint:
            t0 = time.perf_counter()
            deadline = t0 + 120
            while receiver_count(rport) < 2 * n:
                if time.perf_counter() > deadline:
                    raise BenchFailure(f"only {receiver_count(rport)} of {2 * n} events arrived")
                time.sleep(0.02)
            lag = time.perf_counter() - t0
            if receiver_count(rport) != 2 * n:
                raise BenchFailure(f"{receiver_count(rport)} events for {n} pushes, want {2 * n}")
        return n / secs, lag
    finally:
        stop(proc)
        if rx:
            stop(rx)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--base", help="a wharf without the event system, for the log's own cost")
    ap.add_argument("--work", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pids", help="append started pids here")
    a = ap.parse_args()
    PIDS[0] = a.pids
    work = a.work or tempfile.mkdtemp(prefix="wharf-events-bench.")
    os.makedirs(work, exist_ok=True)
    results = {"none": [], "endpoint": [], "base": []}
    lags = []
    for r in range(a.rounds):
        # Alternate, so drift on this noisy machine falls on both alike.
        rate, _ = one_run(a.wharf, work, "none", False)
        results["none"].append(rate)
        rate, lag = one_run(a.wharf, work, "endpoint", True)
        results["endpoint"].append(rate)
        lags.append(lag)
        if a.base:
            rate, _ = one_run(a.base, work, "base", False)
            results["base"].append(rate)
        print(f"round {r + 1}: " + ", ".join(
            f"{k} {v[-1]:.0f}/s" for k, v in results.items() if v), file=sys.stderr)
    none = statistics.median(results["none"])
    endpoint = statistics.median(results["endpoint"])
    cost = 1 - endpoint / none
    print(f"image pushes/s (4 KiB blob + manifest, {THREADS} threads, median of {a.rounds}):")
    print(f"  no endpoint  {none:8.0f}   runs {', '.join(f'{x:.0f}' for x in results['none'])}")
    print(f"  1 endpoint   {endpoint:8.0f}   runs {', '.join(f'{x:.0f}' for x in results['endpoint'])}")
    print(f"  ratio 1 endpoint / none = {endpoint / none:.3f} (cost {cost * 100:.1f}%, "
          f"target <= {TARGET_COST * 100:.0f}%: {'PASS' if cost <= TARGET_COST else 'MISS'})")
    print(f"  every event delivered {statistics.median(lags):.2f} s (median) after the last push")
    if a.base:
        base = statistics.median(results["base"])
        print(f"  without events {base:6.0f}   runs {', '.join(f'{x:.0f}' for x in results['base'])}")
        print(f"  ratio no endpoint / without events = {none / base:.3f} (the event log's cost)")


if __name__ == "__main__":
    try:
        main()
    except BenchFailure as e:
        print(f"events bench: {e}", file=sys.stderr)
        sys.exit(1)
