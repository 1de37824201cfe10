#!/usr/bin/env python3
"""Web UI benchmark: the first page of a repository with 10,000 tags and of a catalog with
10,000 repositories, served by `wharf serve`, against the registry API's own first page of
the same listing (`/v2/<repo>/tags/list?n=50`, `/v2/_catalog?n=50`) in the same run.

Content goes in over the registry API: one image (a config and a layer blob, a docker
schema2 manifest) pushed to `big`, tagged 10,000 times (each tag a distinct manifest, so
every row resolves its own manifest); `small` gets 60 tags. Then 10,000 repositories each
get the blobs by cross-repository mount and one manifest. The catalog page is measured at
2 repositories and again at 10,002.

Times are wall-clock on loopback for a whole GET (request, render, response), median and
p90 of 30 after 3 warm-ups: an upper bound of the server time. Page sizes are in bytes;
a page shows 50 rows whatever the listing's length.

Usage: ui_bench.py --wharf BIN [--work DIR]   (BENCH_QUICK=1: 1,000 of each)
Standard library only. Exit 0 when everything ran (target met or not), 1 on a failure.
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

N = 1000 if os.environ.get("BENCH_QUICK") else 10000
TARGET_MS = 50.0
SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary, work):
    port = free_port()
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write(
            "version: 0.1\nhttp:\n  addr: 127.0.0.1:%d\n  secret: bench\n"
            "storage:\n  filesystem:\n    rootdirectory: %s\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            % (port, os.path.join(work, "data"))
        )
    log = open(os.path.join(work, "wharf.log"), "w")
    proc = subprocess.Popen([binary, "serve", config], stdout=log, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("bench: wharf exited early; see %s" % log.name)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("bench: wharf did not start")


def call(conn, method, path, body=b"", headers=None, expect=(200, 201, 202)):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status not in expect:
        raise RuntimeError("%s %s: %d %s" % (method, path, r.status, data[:300]))
    return r, data


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push_blob(conn, repo, blob):
    call(conn, "POST", "/v2/%s/blobs/uploads/?digest=%s" % (repo, digest(blob)), blob,
         {"Content-Type": "application/octet-stream"})


def manifest(config, layer, n):
    return json.dumps({
        "schemaVersion": 2, "mediaType": SCHEMA2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": digest(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer), "digest": digest(layer)}],
        # Distinct manifests: each tag's row reads its own.
        "annotations": {"n": str(n)},
    }).encode()


def parallel(port, items, work_fn, threads=4):
    errors = []

    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for i in chunk:
                work_fn(conn, i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(items[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def fill(port):
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["A=b"], "Labels": {"x": "y"}}}).encode()
    layer = os.urandom(4096)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for repo in ("big", "small"):
        push_blob(conn, repo, config)
        push_blob(conn, repo, layer)
    put = lambda repo, tag, n: lambda c: call(  # noqa: E731
        c, "PUT", "/v2/%s/manifests/%s" % (repo, tag), manifest(config, layer, n),
        {"Content-Type": SCHEMA2})
    started = time.time()
    parallel(port, list(range(60)), lambda c, i: put("small", "t%05d" % i, i)(c))
    parallel(port, list(range(N)), lambda c, i: put("big", "t%05d" % i, i)(c))
    print("bench: %d tags pushed in %.1f s" % (N, time.time() - started), file=sys.stderr)
    return config, layer


def fill_repos(port, config, layer):
    def one(c, i):
        repo = "many/r%05d" % i
        for b in (config, layer):
            call(c, "POST", "/v2/%s/blobs/uploads/?mount=%s&from=big" % (repo, digest(b)),
                 expect=(201,))
        call(c, "PUT", "/v2/%s/manifests/latest" % repo, manifest(config, layer, i),
             {"Content-Type": SCHEMA2})
    started = time.time()
    parallel(port, list(range(N)), one)
    print("bench: %d repositories pushed in %.1f s" % (N, time.time() - started), file=sys.stderr)


def timed(port, path, runs=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(3):
        call(conn, "GET", path)
    times, size = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        _, body = call(conn, "GET", path)
        times.append((time.perf_counter() - t) * 1000)
        size = len(body)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1], size


def row(label, ui, api):
    ratio = ui[0] / api[0] if api[0] else float("inf")
    verdict = "PASS" if ui[0] <= TARGET_MS else "MISS"
    print("| %-44s | %7.1f | %7.1f | %9d | %7.1f | %6.1fx | <= %.0f ms | %s |" % (
        label, ui[0], ui[1], ui[2], api[0], ratio, TARGET_MS, verdict))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wharf-ui-bench.", dir=args.work)
    proc, port = start(args.wharf, work)
    try:
        config, layer = fill(port)
        cat_small = timed(port, "/ui/"), timed(port, "/v2/_catalog?n=50")
        fill_repos(port, config, layer)
        print("| %-44s | %7s | %7s | %9s | %7s | %7s | %-9s | %s |" % (
            "first page (%d rows)" % 50, "UI p50 ms", "UI p90", "UI bytes", "API ms", "UI/API",
            "target", "result"))
        print("|" + "|".join("-" * w for w in (46, 9, 9, 11, 9, 8, 11, 8)) + "|")
        row("tags, 60 tags", timed(port, "/ui/repo?name=small"),
            timed(port, "/v2/small/tags/list?n=50"))
        row("tags, %d tags" % N, timed(port, "/ui/repo?name=big"),
            timed(port, "/v2/big/tags/list?n=50"))
        row("repositories, 2 repositories", *cat_small)
        row("repositories, %d repositories" % (N + 2), timed(port, "/ui/"),
            timed(port, "/v2/_catalog?n=50"))
        row("repositories, %d, search 'r0999'" % (N + 2), timed(port, "/ui/?q=r0999"),
            timed(port, "/v2/_catalog?n=50"))
        row("manifest page", timed(port, "/ui/manifest?name=big&ref=t00042"),
            timed(port, "/v2/big/manifests/t00042"))
    finally:
        proc.terminate()
        proc.wait()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
