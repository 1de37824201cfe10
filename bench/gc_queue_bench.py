#!/usr/bin/env python3
"""Garbage collection from review queues (wharf with `database:`), on Garage (S3) and
PostgreSQL, in one run:

  A. Scale: two registries built through the API, one of 200 repositories and one of
     5,000 (one image each: a 1 KiB random layer, its config, the manifest), each on its
     own rootdirectory of one Garage bucket and its own database. In each, one image is
     deleted (DELETE of the manifest by digest) and `wharf garbage-collect --grace 0s`
     drains the queue: the time from the delete until its three blobs are gone from the
     bucket. Then another image is deleted and `wharf garbage-collect --full --grace 0s`
     (mark-and-sweep) collects it, timed the same way. Printed: both times for both sizes
     and the ratios 5,000/200 (target for the queue: within 1.5x).
  B. Against Distribution 2.8.2: 2,000 repositories in wharf (queue) and the same images
     in Distribution, each on its own rootdirectory of the same Garage. 1% of the images
     (20) are deleted through each registry's API, then wharf's drain runs while wharf
     serves (a client keeps GETting manifests through it and counts failures), and
     Distribution's `docker-registry garbage-collect` runs with Distribution stopped, as
     registry:2 requires. Printed: both times and the ratio (target: >= 100x).

Every deleted image's blobs must be gone afterwards, and every other image must still
pull (a sample of 50), or the run fails.

Usage: gc_queue_bench.py --wharf BIN [--work DIR] [--pids FILE]
BENCH_QUICK=1: 50 and 500 repositories in A, 200 in B (a smoke run of the script).
BENCH_GCQ_SIZES=200,5000 and BENCH_GCQ_VS=2000 set the sizes; BENCH_GCQ_PARTS=A,B the parts.
Needs garage, PostgreSQL 15 and docker-registry. Standard library only. Exit 0 when
everything ran (targets met or not), 1 when something failed.
"""

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (BenchFailure, SCHEMA2, Server, call, check_digest, clean_env, conn_for,  # noqa: E402
                   free_ports, log, push_blob_small)
from s3_servers import BUCKET, Garage, Postgres, registry_config  # noqa: E402

QUICK = bool(os.environ.get("BENCH_QUICK"))
SIZES = tuple(int(x) for x in os.environ.get(
    "BENCH_GCQ_SIZES", "50,500" if QUICK else "200,5000").split(","))
VS_DIST = int(os.environ.get("BENCH_GCQ_VS", "200" if QUICK else "2000"))
THREADS = 8
CONFIG_MT = "application/vnd.docker.container.image.v1+json"
LAYER_MT = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def image(seed):
    """A distinct small image: ([(bytes, digest)], manifest bytes, manifest digest)."""
    layer = hashlib.sha256(f"layer {seed}".encode()).digest() * 32  # 1 KiB
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    dg = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()  # noqa: E731
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": SCHEMA2,
        "config": {"mediaType": CONFIG_MT, "size": len(config), "digest": dg(config)},
        "layers": [{"mediaType": LAYER_MT, "size": len(layer), "digest": dg(layer)}],
    }).encode()
    return [(layer, dg(layer)), (config, dg(config))], manifest, dg(manifest)


def fill(srv, n, offset):
    """n repositories r0..r(n-1), one image each, pushed by THREADS clients."""
    def push(i):
        blobs, manifest, mdg = image(offset + i)
        conn = conn_for(srv, timeout=60)
        for data, d in blobs:
            push_blob_small(srv, conn, f"r{i}", data, d)
        _, h, _ = call(srv, conn, "PUT", f"/v2/r{i}/manifests/latest", body=manifest,
                       headers={"Content-Type": SCHEMA2}, expect=(201,))
        check_digest(srv, h, mdg, f"PUT r{i}")
        conn.close()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        list(ex.map(push, range(n)))
    log(f"  {srv.label}: {n} repositories pushed in {time.monotonic() - started:.0f}s")


def delete(srv, i, offset):
    _, _, mdg = image(offset + i)
    conn = conn_for(srv, timeout=60)
    call(srv, conn, "DELETE", f"/v2/r{i}/manifests/{mdg}", expect=(202,))
    conn.close()


def object_key(root, digest):
    hexd = digest.split(":")[1]
    return f"{root.strip('/')}/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data".lstrip("/")


class Bucket:
    """Whether an object is in the bucket: a SigV4-signed HEAD to Garage itself (the
    registries cannot say once a blob is unlinked), with the standard library only."""

    def __init__(self, garage):
        self.g = garage

    def exists(self, key):
        import datetime
        import hmac
        now = datetime.datetime.now(datetime.timezone.utc)
        amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = self.g.endpoint.split("//")[1]
        path = f"/{BUCKET}/{key}"
        payload = hashlib.sha256(b"").hexdigest()
        canonical = f"HEAD\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}"
        scope = f"{day}/garage/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        k = ("AWS4" + self.g.secret).encode()
        for part in (day, "garage", "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        auth = (f"AWS4-HMAC-SHA256 Credential={self.g.access}/{scope}, "
                f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}")
        c = http.client.HTTPConnection(host, timeout=30)
        c.request("HEAD", path, headers={"x-amz-date": amz, "x-amz-content-sha256": payload,
                                         "Authorization": auth})
        r = c.getresponse()
        r.read()
        c.close()
        if r.status not in (200, 404):
            raise BenchFailure(f"HEAD {path} on Garage: {r.status}")
        return r.status == 200


class Wharf:
    def __init__(self, ctx, name, root):
        self.ctx, self.root = ctx, root
        dbname = f"{name}_db"
        ctx.pg.createdb(dbname)
        port = free_ports(1)[0]
        self.config = os.path.join(ctx.work, f"{name}.yml")
        with open(self.config, "w") as f:
            f.write(registry_config(ctx.garage, root, port, database=(ctx.pg.port, dbname)))
        self.srv = Server(name, f"wharf ({name})", [ctx.wharf, "serve", self.config], port,
                          ctx.work, env=clean_env())
        ctx.servers.append(self.srv)
        self.srv.start(ctx.pidfile)
        self.srv.wait_ready(timeout=60)

    def gc(self, *args):
        started = time.monotonic()
        p = subprocess.run([self.ctx.wharf, "garbage-collect", *args, "--json", self.config],
                           capture_output=True, text=True, env=clean_env())
        took = time.monotonic() - started
        if p.returncode != 0:
            raise BenchFailure(f"wharf garbage-collect {' '.join(args)}: {p.stderr}{p.stdout}")
        return took, json.loads(p.stdout)


def check_gone(ctx, root, offsets, want_gone):
    for seed in offsets:
        blobs, _, mdg = image(seed)
        for d in [d for _, d in blobs] + [mdg]:
            there = ctx.bucket.exists(object_key(root, d))
            if there == want_gone:
                raise BenchFailure(f"{root}: blob {d} of image {seed} is "
                                   f"{'still there' if there else 'gone'}")


def part_a(ctx):
    rows = []
    for n in SIZES:
        root = f"/scale{n}"
        w = Wharf(ctx, f"scale{n}", root)
        fill(w.srv, n, 0)
        delete(w.srv, 1, 0)
        t_queue, rq = w.gc("--grace", "0s")
        check_gone(ctx, root, [1], True)
        delete(w.srv, 2, 0)
        t_full, rf = w.gc("--full", "--grace", "0s")
        check_gone(ctx, root, [2], True)
        check_gone(ctx, root, [0, 3, n - 1], False)
        log(f"  {n} repositories: queue drain {t_queue:.3f}s ({rq['reviewed']} rows), "
            f"mark-and-sweep {t_full:.3f}s")
        rows.append((n, t_queue, t_full))
        w.srv.stop()
    return rows


def serve_while(srv, stop, stats):
    conn = conn_for(srv, timeout=30)
    while not stop.is_set():
        i = stats["n"] % 50 + 101  # r101..r150: none is deleted (the victims are r0, r100, ...)
        started = time.monotonic()
        try:
            call(srv, conn, "GET", f"/v2/r{i}/manifests/latest", headers={"Accept": SCHEMA2})
        except BenchFailure:
            stats["errors"] += 1
            conn = conn_for(srv, timeout=30)
        stats["worst"] = max(stats["worst"], time.monotonic() - started)
        stats["n"] += 1


def part_b(ctx):
    n, victims = VS_DIST, list(range(0, VS_DIST, 100))
    w = Wharf(ctx, "vs_wharf", "/vsw")
    fill(w.srv, n, 1_000_000)
    dport = free_ports(1)[0]
    dconf = os.path.join(ctx.work, "distribution.yml")
    with open(dconf, "w") as f:
        f.write(registry_config(ctx.garage, "/vsd", dport))
    # Distribution's Go SDK panics on AWS_CA_BUNDLE (test-servers.md): no AWS_* for it.
    denv = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    d = Server("distribution", "Distribution 2.8.2", ["docker-registry", "serve", dconf], dport,
               ctx.work, env=denv)
    ctx.servers.append(d)
    d.start(ctx.pidfile)
    d.wait_ready()
    fill(d, n, 1_000_000)
    for i in victims:
        delete(w.srv, i, 1_000_000)
        delete(d, i, 1_000_000)
    d.stop()
    stop, stats = threading.Event(), {"n": 0, "errors": 0, "worst": 0.0}
    t = threading.Thread(target=serve_while, args=(w.srv, stop, stats))
    t.start()
    time.sleep(0.5)
    t_wharf, report = w.gc("--grace", "0s")
    stop.set()
    t.join()
    started = time.monotonic()
    p = subprocess.run(["docker-registry", "garbage-collect", dconf], capture_output=True,
                       text=True, env=denv)
    t_dist = time.monotonic() - started
    if p.returncode != 0:
        raise BenchFailure(f"docker-registry garbage-collect: {p.stderr[-2000:]}")
    seeds = [1_000_000 + i for i in victims]
    check_gone(ctx, "/vsw", seeds, True)
    check_gone(ctx, "/vsd", seeds, True)
    check_gone(ctx, "/vsw", [1_000_000 + 1, 1_000_000 + n - 1], False)
    w.srv.stop()
    return t_wharf, t_dist, report, stats


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", default=os.environ.get("BENCH_DIR", "/tmp"))
    ap.add_argument("--pids", default=None)
    args = ap.parse_args()
    ctx = Ctx()
    ctx.wharf = os.path.abspath(args.wharf)
    ctx.work = tempfile.mkdtemp(prefix="wharf-gcq-bench-", dir=args.work)
    ctx.pidfile = args.pids or os.path.join(ctx.work, "pids")
    ctx.servers = []
    ctx.pg = None
    ctx.garage = None
    try:
        for tool in ("garage", "docker-registry"):
            if not shutil.which(tool):
                raise BenchFailure(f"{tool} is not installed (see bench/README.md)")
        ctx.garage = Garage(ctx.work, ctx.pidfile)
        ctx.bucket = Bucket(ctx.garage)
        ctx.pg = Postgres()
        parts = os.environ.get("BENCH_GCQ_PARTS", "A,B").split(",")
        rows, vs = None, None
        if "A" in parts:
            log("A. scale: one image deleted in registries of %d and %d repositories" % SIZES)
            rows = part_a(ctx)
        if "B" in parts:
            log(f"B. against Distribution: {VS_DIST} repositories, 1% deleted")
            vs = part_b(ctx)
    except BenchFailure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        for s in ctx.servers:
            s.stop()
        if ctx.pg:
            ctx.pg.stop()
        if ctx.garage:
            ctx.garage.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(ctx.work, ignore_errors=True)
    if rows:
        (n1, q1, f1), (n2, q2, f2) = rows
        print(f"\n| one image deleted, delete to bytes gone | {n1} repos | {n2} repos | {n2}/{n1} | target |")
        print("|---|---|---|---|---|")
        print(f"| review queue drain (s)  | {q1:.3f} | {q2:.3f} | {q2 / q1:.2f}x | <= 1.5x | {'PASS' if q2 / q1 <= 1.5 else 'MISS'} |")
        print(f"| mark-and-sweep --full (s) | {f1:.3f} | {f2:.3f} | {f2 / f1:.2f}x | - | - |")
    if not vs:
        return 0
    t_wharf, t_dist, report, stats = vs
    ratio = t_dist / t_wharf
    print(f"\n| {VS_DIST} repositories, 1% of images deleted | wharf queue drain | Distribution GC | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| seconds | {t_wharf:.3f} | {t_dist:.3f} | {ratio:.1f}x | >= 100x | {'PASS' if ratio >= 100 else 'MISS'} |")
    print(f"\nwharf drained {len(report['blobs'])} blobs ({report['bytes_freed']} bytes) while serving "
          f"{stats['n']} manifest GETs ({stats['errors']} errors, slowest {stats['worst'] * 1000:.0f} ms); "
          "Distribution's registry was stopped for its GC, as registry:2 requires.")
    return 1 if stats["errors"] else 0

if __name__ == "__main__":
    sys.exit(main())
