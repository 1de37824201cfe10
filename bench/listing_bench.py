#!/usr/bin/env python3
"""Listings at scale, in one run:
- filesystem, 10,000 repositories written in registry:2's layout: the UI's search
  (`/ui/?q=r0999`) and `/v2/_catalog`, the first answer (a walk that builds the store's name
  index, `_wharf/repositories.json`) against later ones (from the index); target <= 50 ms;
- PostgreSQL, 100,000 repositories and one with 10,000 tags, rows written with psql: the
  UI's search (`/ui/?q=r09999`, trigram index) against the whole catalog read in one
  page, and the 10,000-tag list, first (read) against later (the version-checked cache);
  targets <= 5 ms and <= 1 ms.

Best of 20 after the first. Usage: listing_bench.py --wharf BIN [--work DIR]
Standard library only (and PostgreSQL 15's binaries). Exit 1 when a request fails.
"""

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s3_servers import Postgres  # noqa: E402


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    took = (time.perf_counter() - t) * 1000
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:300]!r}")
    return took


def first_and_best(port, path, n=20):
    first = timed(port, path)
    return first, min(timed(port, path) for _ in range(n))


def serve(wharf, work, root, port, env=None):
    config = os.path.join(work, f"config-{port}.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([wharf, "serve", config], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, f"wharf-{port}.log"), "w"),
                            env={**os.environ, **(env or {})})
    for _ in range(400):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v2/_catalog?n=1")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("wharf did not start")


def fs_listing(wharf, work):
    root = os.path.join(work, "fs")
    digest = "sha256:" + "0" * 64
    for r in range(10000):
        link = os.path.join(root, f"docker/registry/v2/repositories/r{r:04d}/_layers/sha256/{'0' * 64}")
        os.makedirs(link)
        with open(os.path.join(link, "link"), "w") as f:
            f.write(digest)
    port = free_port()
    proc = serve(wharf, work, root, port)
    try:
        # The start's probe listed the catalog once: drop the index it built, so that the
        # first answer below is the walk.
        os.remove(os.path.join(root, "docker/registry/v2/_wharf/repositories.json"))
        rows = []
        for what, path in [("_catalog, 10,000 repositories", "/v2/_catalog"),
                           ("UI search 'r0999', 10,000 repositories", "/ui/?q=r0999")]:
            first, best = first_and_best(port, path)
            rows.append((what, first, best, 50))
            os.remove(os.path.join(root, "docker/registry/v2/_wharf/repositories.json"))
        return rows
    finally:
        proc.terminate()
        proc.wait()


def pg_listing(wharf, work):
    pg = Postgres()
    try:
        env = {"REGISTRY_DATABASE_ENABLED": "true", "REGISTRY_DATABASE_HOST": "127.0.0.1",
               "REGISTRY_DATABASE_PORT": str(pg.port), "REGISTRY_DATABASE_USER": "test",
               "REGISTRY_DATABASE_DBNAME": "postgres", "REGISTRY_DATABASE_SSLMODE": "disable"}
        port = free_port()
        proc = serve(wharf, work, os.path.join(work, "pgroot"), port, env)
        try:
            sql = """
INSERT INTO repositories (name) SELECT 'r' || lpad(i::text, 6, '0') FROM generate_series(0, 99999) i;
INSERT INTO repositories (name) VALUES ('big');
INSERT INTO manifests (repository_id, digest, put_at, blobs, foreign_blobs, children)
  SELECT id, 'sha256:' || repeat('1', 64), now(), '{}', '{}', '{}' FROM repositories WHERE name = 'big';
INSERT INTO tags (repository_id, name, digest, pushed_at)
  SELECT r.id, 't' || lpad(i::text, 5, '0'), 'sha256:' || repeat('1', 64), now()
  FROM repositories r, generate_series(0, 9999) i WHERE r.name = 'big';
ANALYZE;
"""
            p = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "test", "-d", "postgres",
                                "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(p.stderr)
            rows = []
            first, best = first_and_best(port, "/ui/?q=r09999")
            rows.append(("UI search 'r09999', 100,001 repositories", first, best, 5))
            first, best = first_and_best(port, "/v2/_catalog")
            rows.append(("(peer) whole _catalog, 100,001 repositories", first, best, None))
            first, best = first_and_best(port, "/v2/big/tags/list")
            rows.append(("tags list, 10,000 tags", first, best, 1))
            return rows
        finally:
            proc.terminate()
            proc.wait()
    finally:
        pg.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wharf-listing-bench.", dir=args.work)
    try:
        print("| listing | first (walk / query) ms | best of 20 ms | first/best | target | result |")
        print("|---|---|---|---|---|---|")
        for label, rows in [("filesystem", fs_listing(args.wharf, work)),
                            ("PostgreSQL", pg_listing(args.wharf, work))]:
            for what, first, best, target in rows:
                verdict = "" if target is None else ("PASS" if best <= target else "**MISS**")
                print(f"| {label}: {what} | {first:.1f} | {best:.2f} | {first / best:.1f}x | "
                      f"{'' if target is None else f'<= {target} ms'} | {verdict} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
