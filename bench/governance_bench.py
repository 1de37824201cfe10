#!/usr/bin/env python3
"""Quota cost: small pushes into a repository under a quota against pushes into one no
quota covers, on the same `wharf serve`, in one run.

A store is written straight to disk in registry:2's layout: REPOS repositories under
`team/` (the quota's glob `team/*`), each linking BLOBS distinct 4 KiB blobs. The quota is
far above their sum, so nothing is refused: what is measured is the check itself, which
reads the links of every repository the glob matches at each commit. Then 4 clients on
keep-alive connections push distinct 4 KiB blobs (monolithic `POST ?digest=` with a
Content-Length, so the check runs before the body is read), at most 2,000 pushes or
10 s, into `team/new` and into `free/new`, alternating which goes first, best of 2.

Usage: governance_bench.py --wharf BIN [--repos N] [--work DIR]
Standard library only. Exit 0 when everything ran; 1 when a push got an error status.
"""

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

BLOBS = 4
SIZE = 4096
CLIENTS = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_store(root, repos):
    v2 = os.path.join(root, "docker/registry/v2")
    total = 0
    for r in range(repos):
        for b in range(BLOBS):
            data = f"{r}-{b}-".encode().ljust(SIZE, b"x")
            hexd = hashlib.sha256(data).hexdigest()
            d = os.path.join(v2, "blobs/sha256", hexd[:2], hexd)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "data"), "wb") as f:
                f.write(data)
            link = os.path.join(v2, f"repositories/team/r{r}/_layers/sha256", hexd)
            os.makedirs(link, exist_ok=True)
            with open(os.path.join(link, "link"), "w") as f:
                f.write(f"sha256:{hexd}")
            total += SIZE
    return total


def push_many(port, repo, seed, limit=2000, seconds=10.0):
    """Pushes per second of distinct 4 KiB blobs by CLIENTS keep-alive clients."""
    count = [0]
    errors = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = 0
        while time.monotonic() < deadline:
            with lock:
                if count[0] >= limit:
                    return
                count[0] += 1
            data = f"{seed}-{n}-{i}-".encode().ljust(SIZE, b"y")
            i += 1
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            conn.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data,
                         headers={"Content-Length": str(len(data))})
            r = conn.getresponse()
            r.read()
            if r.status != 201:
                errors.append(f"{repo}: status {r.status}")
                return

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    if errors:
        raise SystemExit(f"governance bench: push failed: {errors[0]}")
    return count[0] / took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--repos", type=int, default=1000)
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wharf-gov-bench.", dir=args.work)
    proc = None
    try:
        root = os.path.join(work, "data")
        stored = write_store(root, args.repos)
        port = free_port()
        config = os.path.join(work, "config.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {root}\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n"
                    f"quotas:\n  - repositories: [\"team/*\"]\n    bytes: 1TiB\n")
        proc = subprocess.Popen([args.wharf, "serve", config], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(work, "wharf.log"), "w"))
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/v2/")
                break
            except OSError:
                time.sleep(0.05)
        best = {"team/new": 0.0, "free/new": 0.0}
        for run in range(2):
            order = ["team/new", "free/new"] if run == 0 else ["free/new", "team/new"]
            for repo in order:
                best[repo] = max(best[repo], push_many(port, repo, f"{run}"))
        q, f = best["team/new"], best["free/new"]
        print(f"quota check with {args.repos} repositories ({BLOBS * args.repos} blobs, "
              f"{stored // (1 << 20)} MiB) under the glob")
        print(f"| 4 KiB pushes/s | under quota {q:.0f} | no quota {f:.0f} | ratio {q / f:.2f}x |")
    finally:
        if proc:
            proc.terminate()
            proc.wait()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
