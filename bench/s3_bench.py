#!/usr/bin/env python3
"""wharf on S3 against Distribution 2.8.2's S3 driver, side by side on one Garage node.

Both registries use registry:2's `storage.s3` keys on the same bucket, each under its own
`rootdirectory`, with `storage.redirect.disable: true` so blob bytes go through them.
1. push and pull of a large random blob: monolithic (POST, one PUT ?digest=) and chunked
   (16 MiB PATCHes, then PUT), best of 2 distinct blobs each; pulls are `curl -o /dev/null`,
   1 stream (best of 3) and 4 parallel (best of 2), and 1 stream with redirects on (the
   registry answers 307 to a presigned Garage URL). Every pulled blob is hashed once.
2. manifest GET by tag (wrk -t2 -c32 -d10s): Distribution (one process), one wharf, nginx
   in front of that one wharf, and nginx round-robin over three `wharf serve` on one bucket.
3. `_catalog` of 100k repositories and a tags list of 10k tags: wharf with its PostgreSQL
   metadata store (after `wharf database import`) against Distribution walking S3. The
   bucket is filled through a wharf without a database: cross-repository mounts of one
   blob to 100k names (each writes registry:2's `_layers` link) and 10k manifest PUTs.

Usage: s3_bench.py --wharf BIN --work DIR [--pids FILE] [--parts 1,2,3]
BENCH_QUICK=1: 64 MiB blobs, 2 s wrk runs, 2,000 repositories and 500 tags (a smoke run).
BENCH_S3_MIB (blob size, default 1024), BENCH_S3_REPOS, BENCH_S3_TAGS, BENCH_S3_WALK_CAP
(seconds a full catalog walk may take before it is cut short and reported as such).
Needs garage (cargo install garage --version 2.5.0 --locked), docker-registry, nginx, wrk,
curl, and for part 3 PostgreSQL 15 (postgresql-15). Standard library only. Exit 0 when
everything ran (targets met or not), 1 when something failed or could not be run.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (BenchFailure, SCHEMA2, Server, call, check_digest, clean_env, conn_for,  # noqa: E402
                   fmt, free_ports, log, make_random_file, make_variant, parse_wrk,
                   push_blob_small, push_chunked, push_monolithic, render, setup_small_image,
                   small_image, sync_and_prime, verify_blob)

from s3_servers import BUCKET, Garage, Postgres, registry_config, start_nginx  # noqa: E402

MB = 1e6
QUICK = bool(os.environ.get("BENCH_QUICK"))
BIG = int(os.environ.get("BENCH_S3_MIB", "64" if QUICK else "1024")) << 20
PUSH_RUNS = 1 if QUICK else 2
PULL_RUNS_1, PULL_RUNS_4 = (1, 1) if QUICK else (3, 2)
WRK_SECS = 2 if QUICK else 10
REPOS = int(os.environ.get("BENCH_S3_REPOS", "2000" if QUICK else "100000"))
TAGS = int(os.environ.get("BENCH_S3_TAGS", "500" if QUICK else "10000"))
WALK_CAP = float(os.environ.get("BENCH_S3_WALK_CAP", "30" if QUICK else "180"))
PAGE = 1000
W, D = "wharf", "distribution"


# --- servers --------------------------------------------------------------------------

def start_registry(ctx, kind, name, root, redirect=False, database=None):
    port = free_ports(1)[0]
    cfg = os.path.join(ctx.work, f"{name}.yml")
    with open(cfg, "w") as f:
        f.write(registry_config(ctx.garage, root, port, redirect, database))
    # Distribution's Go SDK panics on AWS_CA_BUNDLE (test-servers.md); neither gets AWS_*.
    env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    if kind == W:
        env["WHARF_LOG"] = "warn"
        argv = [ctx.wharf, "serve", cfg]
    else:
        argv = ["docker-registry", "serve", cfg]
    srv = Server(name, name, argv, port, ctx.work, env=env)
    srv.config = cfg
    ctx.servers.append(srv)
    srv.start(ctx.pidfile)
    srv.wait_ready()
    return srv


class Ctx:
    def __init__(self, args, work, pidfile):
        self.wharf, self.work, self.pidfile = os.path.realpath(args.wharf), work, pidfile
        self.servers, self.garage, self.pg = [], None, None
        self.R = {}


# --- 1. big blobs ---------------------------------------------------------------------

def curl(url, streams, size, follow=False):
    """`streams` parallel `curl -o /dev/null`; seconds for all of them."""
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    argv += ["-L"] if follow else []
    t0 = time.perf_counter()
    procs = [subprocess.Popen(argv + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(streams)]
    outs = [p.communicate(timeout=600) for p in procs]
    dt = time.perf_counter() - t0
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0 or out.strip() != f"200 {size}":
            raise BenchFailure(f"curl {url}: exit {p.returncode}, got {out.strip()!r}, "
                               f"expected '200 {size}'; {err.strip()}")
    return dt


def garage_baseline(ctx, path):
    """The store alone: one signed PUT of the blob to Garage and GETs of it, with curl."""
    g = ctx.garage
    url = f"{g.endpoint}/{BUCKET}/baseline/big"
    sign = ["--aws-sigv4", "aws:amz:garage:s3", "--user", f"{g.access}:{g.secret}",
            "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]
    sync_and_prime(os.path.join(ctx.work, "prime"))
    t0 = time.perf_counter()
    p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", path, *sign, url],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0 or p.stdout.strip() != "200":
        raise BenchFailure(f"curl PUT {url}: exit {p.returncode}, status {p.stdout!r}; {p.stderr}")
    base = {"put": BIG / dt / MB}
    for streams, runs in ((1, PULL_RUNS_1), (4, PULL_RUNS_4)):
        argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", *sign, url]
        best = 0.0
        for _ in range(runs):
            t0 = time.perf_counter()
            procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(streams)]
            outs = [q.communicate(timeout=600)[0] for q in procs]
            dt = time.perf_counter() - t0
            if any(o.strip() != f"200 {BIG}" for o in outs):
                raise BenchFailure(f"curl GET {url}: {outs}")
            best = max(best, streams * BIG / dt / MB)
        base[f"get_{streams}"] = best
    ctx.R["garage"] = base
    log(f"  Garage alone (curl): PUT {base['put']:.0f} MB/s, GET {base['get_1']:.0f} MB/s (1 stream), "
        f"{base['get_4']:.0f} MB/s (4 streams)")


def redirect_status(srv, repo, digest):
    c = conn_for(srv, timeout=30)
    c.request("GET", f"/v2/{repo}/blobs/{digest}")
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, r.getheader("Location") or ""


def big_blobs(ctx, regs):
    R, work = ctx.R, ctx.work
    src = os.path.join(work, "big")
    log(f"making a {BIG >> 20} MiB random blob")
    make_random_file(src, BIG)
    garage_baseline(ctx, src)
    scratch = os.path.join(work, "prime")
    pushed = {}
    n = 0
    for run in range(PUSH_RUNS):
        order = regs if run % 2 == 0 else regs[::-1]
        for mode, push in (("mono", push_monolithic), ("chunked", push_chunked)):
            for srv in order:
                n += 1
                path = os.path.join(work, f"variant-{n}")
                digest = make_variant(src, path, n)
                sync_and_prime(scratch)
                cpu0 = (srv.cpu().total, ctx.garage.cpu().total)
                dt = push(srv, "bench/big", path, BIG, digest)
                cpu = (srv.cpu().total - cpu0[0], ctx.garage.cpu().total - cpu0[1])
                os.unlink(path)
                rate = BIG / dt / MB
                R.setdefault(f"push_{mode}", {}).setdefault(srv.name, []).append(rate)
                # CPU seconds per GiB, registry and Garage: steadier than MB/s on a busy machine.
                R.setdefault(f"cpu_{mode}", {}).setdefault(srv.name, []).append(
                    tuple(c / (BIG / (1 << 30)) for c in cpu))
                log(f"  {srv.name} {mode} push: {rate:.0f} MB/s; CPU s/GiB: registry {cpu[0] / (BIG / (1 << 30)):.2f}, "
                    f"garage {cpu[1] / (BIG / (1 << 30)):.2f}")
                pushed[srv.name] = digest
    os.unlink(src)
    for srv in regs:
        verify_blob(srv, "bench/big", pushed[srv.name], BIG)
    for streams, runs, key in ((1, PULL_RUNS_1, "pull_1"), (4, PULL_RUNS_4, "pull_4")):
        for run in range(runs):
            for srv in (regs if run % 2 == 0 else regs[::-1]):
                url = f"http://127.0.0.1:{srv.port}/v2/bench/big/blobs/{pushed[srv.name]}"
                cpu0 = srv.cpu().total
                rate = streams * BIG / curl(url, streams, BIG) / MB
                cpu = (srv.cpu().total - cpu0) / (streams * BIG / (1 << 30))
                R.setdefault(key, {}).setdefault(srv.name, []).append(rate)
                R.setdefault(f"cpu_{key}", {}).setdefault(srv.name, []).append(cpu)
                log(f"  {srv.name} pull, {streams} stream(s): {rate:.0f} MB/s; registry CPU s/GiB {cpu:.2f}")
    redirect_pulls(ctx, regs, pushed)


def redirect_pulls(ctx, regs, pushed):
    """The same pull with redirects on: a second process of each on the same root."""
    for srv in regs:
        kind = W if srv.name.startswith(W) else D
        r = start_registry(ctx, kind, f"{srv.name}-redirect", srv.root, redirect=True)
        status, loc = redirect_status(r, "bench/big", pushed[srv.name])
        if status != 307 or not loc.startswith(ctx.garage.endpoint):
            raise BenchFailure(f"{r.name}: blob GET -> {status} Location {loc[:80]!r}, "
                               f"expected 307 to {ctx.garage.endpoint}")
        url = f"http://127.0.0.1:{r.port}/v2/bench/big/blobs/{pushed[srv.name]}"
        for _ in range(PULL_RUNS_1):
            rate = BIG / curl(url, 1, BIG, follow=True) / MB
            ctx.R.setdefault("pull_redirect", {}).setdefault(srv.name, []).append(rate)
            log(f"  {srv.name} pull via 307 to Garage: {rate:.0f} MB/s")
        r.stop()


# --- 2. manifest GETs through replicas ------------------------------------------------

def wrk(ctx, front, path, procs):
    """wrk on `front`; req/s and the CPU seconds each of `procs` (name -> Server) spent."""
    cmd = ["wrk", "-t2", "-c32", f"-d{WRK_SECS}s", "-H", f"Accept: {SCHEMA2}",
           f"http://127.0.0.1:{front.port}{path}"]
    cpu0 = {k: p.cpu().total for k, p in procs.items()}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=WRK_SECS + 60)
    cpu = {k: procs[k].cpu().total - v for k, v in cpu0.items()}
    if p.returncode != 0:
        raise BenchFailure(f"wrk on {front.label} failed: {p.stderr}{p.stdout}")
    res = parse_wrk(p.stdout)
    if res["non2xx"] or (res["socket_errors"] and re.search(r"[1-9]", res["socket_errors"])):
        raise BenchFailure(f"wrk on {front.label}: {res['non2xx']} non-2xx responses, "
                           f"socket errors {res['socket_errors']}:\n{p.stdout}")
    return res["rps"], cpu


def manifests(ctx, wharf, dist):
    blobs, manifest = small_image()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    for srv in (wharf, dist):
        setup_small_image(srv, "bench/small", blobs, manifest)
    replicas = [wharf] + [start_registry(ctx, W, f"wharf-{i}", wharf.root) for i in (2, 3)]
    for r in replicas:
        r.root = wharf.root
    nginx, one = start_nginx(ctx, replicas)
    path = "/v2/bench/small/manifests/latest"
    for front in (nginx, one, nginx, nginx):  # the three replicas take turns
        _, h, _ = call(front, conn_for(front, 30), "GET", path, headers={"Accept": SCHEMA2})
        check_digest(front, h, digest, "GET manifest through nginx")
    g = ctx.garage
    runs = [("distribution", dist, {"distribution": dist, "garage": g}),
            ("wharf, 1 process", wharf, {"wharf": wharf, "garage": g}),
            ("nginx -> 1 wharf", one, {"nginx": nginx, "wharf": wharf, "garage": g}),
            ("nginx -> 3 wharf (round-robin)", nginx,
             {"nginx": nginx, **{r.name: r for r in replicas}, "garage": g})]
    if has_database(ctx):
        runs += pg_replicas(ctx, path, digest)
    else:  # part 3 fails on this; here the S3-only rows still say something
        log("  this wharf has no `database` command: no rows with PostgreSQL")
    for label, front, procs in runs:
        rps, cpu = wrk(ctx, front, path, procs)
        ctx.R.setdefault("manifest", []).append((label, rps, cpu))
        log(f"  manifest GET, {label}: {rps:,.0f} req/s; CPU s "
            + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))


def pg_replicas(ctx, path, digest):
    """Three wharf on the same bucket with PostgreSQL, the scale-out configuration."""
    db = import_root(ctx, "/wharf", "manifests")
    replicas = [start_registry(ctx, W, f"wharf-pg-{i}", "/wharf", database=db) for i in (1, 2, 3)]
    nginx, one = start_nginx(ctx, replicas, "nginx-pg")
    for front in (nginx, nginx, nginx, one):
        _, h, _ = call(front, conn_for(front, 30), "GET", path, headers={"Accept": SCHEMA2})
        check_digest(front, h, digest, "GET manifest through nginx, PostgreSQL")
    g = ctx.garage
    return [("nginx -> 1 wharf + PostgreSQL", one, {"nginx": nginx, "wharf": replicas[0], "garage": g}),
            ("nginx -> 3 wharf + PostgreSQL", nginx,
             {"nginx": nginx, **{r.name: r for r in replicas}, "garage": g})]


# --- 3. catalog and tags list ---------------------------------------------------------

def parallel(fn, items, threads=8):
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(fn, items):
            pass


def fill_catalog(ctx, wharf):
    """REPOS repositories (each one `_layers` link, by mount) and one repository with TAGS tags."""
    blobs, manifest = small_image()
    conn = conn_for(wharf, 30)
    for data, dg in blobs:
        push_blob_small(wharf, conn, "cat/tags", data, dg)
    layer = blobs[0][1]
    names = [f"cat/r{i:06d}" for i in range(REPOS)]

    def mount(chunk):
        c = conn_for(wharf, 60)
        for name in chunk:
            call(wharf, c, "POST", f"/v2/{name}/blobs/uploads/?mount={layer}&from=cat/tags", expect=(201,))
        c.close()

    def tag(chunk):
        c = conn_for(wharf, 60)
        for t in chunk:
            call(wharf, c, "PUT", f"/v2/cat/tags/manifests/{t}", body=manifest,
                 headers={"Content-Type": SCHEMA2}, expect=(201,))
        c.close()
    t0 = time.perf_counter()
    parallel(mount, [names[i::8] for i in range(8)])
    t1 = time.perf_counter()
    tags = [f"t{i:05d}" for i in range(TAGS)]
    parallel(tag, [tags[i::8] for i in range(8)])
    t2 = time.perf_counter()
    ctx.R["fill"] = {"mounts_per_s": REPOS / (t1 - t0), "tags_per_s": TAGS / (t2 - t1)}
    log(f"  {REPOS} mounts at {REPOS / (t1 - t0):.0f}/s, {TAGS} tags at {TAGS / (t2 - t1):.0f}/s")
    return sorted(names + ["cat/tags"]), sorted(tags)


def get_json(srv, conn, path):
    t0 = time.perf_counter()
    _, h, body = call(srv, conn, "GET", path)
    return time.perf_counter() - t0, h, json.loads(body)


def catalog_walk(srv, cap):
    """Every page of `_catalog?n=PAGE`, following Link; (seconds, names, finished)."""
    conn = conn_for(srv, timeout=cap + 60)
    path, names, t0 = f"/v2/_catalog?n={PAGE}", [], time.perf_counter()
    while path:
        _, h, body = get_json(srv, conn, path)
        names += body.get("repositories") or []
        m = re.match(r'<([^>]+)>', h.get("link", ""))
        path = m.group(1) if m else None
        if path and time.perf_counter() - t0 > cap:
            return time.perf_counter() - t0, names, False
    conn.close()
    return time.perf_counter() - t0, names, True


def catalog_times(ctx, srv, names, tags, runs):
    """First page (best of runs), tags list (best of runs), a full walk (once, capped)."""
    conn = conn_for(srv, timeout=WALK_CAP + 60)
    first = []
    for _ in range(runs):
        dt, _, body = get_json(srv, conn, f"/v2/_catalog?n={PAGE}")
        if body.get("repositories") != names[:PAGE]:
            raise BenchFailure(f"{srv.label}: first catalog page differs from the {len(names)} names pushed: "
                               f"{(body.get('repositories') or [])[:3]}...")
        first.append(dt)
    tl = []
    for _ in range(runs):
        dt, _, body = get_json(srv, conn, "/v2/cat/tags/tags/list")
        if sorted(body.get("tags") or []) != tags:
            raise BenchFailure(f"{srv.label}: tags list has {len(body.get('tags') or [])} tags, expected {len(tags)}")
        tl.append(dt)
    conn.close()
    walk, got, done = catalog_walk(srv, WALK_CAP)
    if done and got != names:
        raise BenchFailure(f"{srv.label}: full catalog walk listed {len(got)} names, expected {len(names)}")
    res = {"first": min(first), "tags": min(tl), "walk": walk, "walk_done": done, "walk_pages": -(-len(got) // PAGE)}
    ctx.R.setdefault("catalog", {})[srv.name] = res
    log(f"  {srv.label}: first page {res['first'] * 1000:.1f} ms, tags list {res['tags'] * 1000:.1f} ms, "
        f"full walk {walk:.2f} s ({res['walk_pages']} pages{'' if done else ', cut short'})")


def has_database(ctx):
    return subprocess.run([ctx.wharf, "database", "--help"], capture_output=True).returncode == 0


def import_root(ctx, root, dbname):
    """A fresh database `dbname` holding what `root` in the bucket holds; (port, dbname)."""
    if ctx.pg is None:
        ctx.pg = Postgres()
    ctx.pg.createdb(dbname)
    db = (ctx.pg.port, dbname)
    cfg = os.path.join(ctx.work, f"import-{dbname}.yml")
    with open(cfg, "w") as f:
        f.write(registry_config(ctx.garage, root, free_ports(1)[0], database=db))
    env = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    t0 = time.perf_counter()
    for cmd in (["migrate", "up"], ["import"]):
        p = subprocess.run([ctx.wharf, "database", *cmd, cfg], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise BenchFailure(f"wharf database {' '.join(cmd)} {cfg} failed: {p.stderr}{p.stdout}")
    ctx.R.setdefault("import_s", {})[root] = time.perf_counter() - t0
    log(f"  wharf database import of {root}: {time.perf_counter() - t0:.1f} s: {p.stdout.strip()}")
    return db


def catalog(ctx):
    """Distribution and wharf without a database walk S3; then wharf with PostgreSQL."""
    has_db = has_database(ctx)
    log(f"part 3: filling /catalog with {REPOS:,} repositories and {TAGS:,} tags through wharf (no database)")
    filler = start_registry(ctx, W, "wharf-fill", "/catalog")
    names, tags = fill_catalog(ctx, filler)
    filler.stop()
    for kind, name in ((D, "distribution-catalog"), (W, "wharf-s3-catalog")):
        srv = start_registry(ctx, kind, name, "/catalog")
        catalog_times(ctx, srv, names, tags, 3)
        srv.stop()
    if not has_db:
        raise BenchFailure("part 3 only half run: this wharf has no `database` command (the PostgreSQL "
                           "metadata store is not in this build), so wharf + PostgreSQL was not measured")
    db = import_root(ctx, "/catalog", "catalog")
    pg = start_registry(ctx, W, "wharf-pg", "/catalog", database=db)
    catalog_times(ctx, pg, names, tags, 5)


# --- report ---------------------------------------------------------------------------

def report(ctx, regs, started):
    R, out = ctx.R, []
    best = lambda k, n: max(R[k][n])  # noqa: E731
    rows = []
    for key, label in (("push_mono", "push, monolithic (MB/s)"), ("push_chunked", "push, 16 MiB PATCHes (MB/s)"),
                       ("pull_1", "pull, 1 stream (MB/s)"), ("pull_4", "pull, 4 streams (MB/s)"),
                       ("pull_redirect", "pull, 1 stream, 307 to Garage (MB/s)")):
        if key in R:
            w, d = best(key, W), best(key, D)
            target = key != "pull_redirect"
            rows.append([label, fmt(w), fmt(d), f"{w / d:.2f}x", ">= 1.5x" if target else "-",
                         ("PASS" if w >= 1.5 * d else "MISS") if target else "-"])
    if rows:
        out.append(f"{BIG >> 20} MiB blob, best of runs:\n")
        out.append(render(rows, ["", "wharf", "distribution", "wharf/dist", "target", "result"]))
        out.append("all runs (MB/s): " + "; ".join(
            f"{k} {n} " + ", ".join(f"{v:.0f}" for v in R[k][n]) for k in R if k.startswith(("push_", "pull_"))
            for n in (W, D)))
        for mode in ("mono", "chunked"):
            if f"cpu_{mode}" in R:
                out.append(f"CPU s per GiB pushed ({mode}), registry / Garage, each run: " + "; ".join(
                    f"{n} " + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in R[f"cpu_{mode}"][n]) for n in (W, D)))
        for key in ("pull_1", "pull_4"):
            if f"cpu_{key}" in R:
                out.append(f"registry CPU s per GiB pulled ({key}), each run: " + "; ".join(
                    f"{n} " + ", ".join(f"{a:.2f}" for a in R[f"cpu_{key}"][n]) for n in (W, D)))
        if "garage" in R:
            g = R["garage"]
            out.append(f"Baseline, same run: Garage alone (curl --aws-sigv4, one PUT of the blob) {g['put']:.0f} MB/s; "
                       f"GET {g['get_1']:.0f} MB/s (1 stream), {g['get_4']:.0f} MB/s (4 streams)")
    if "manifest" in R:
        dist_rps = R["manifest"][0][1]
        rows = [[label, fmt(rps), f"{rps / dist_rps:.1f}x",
                 ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())] for label, rps, cpu in R["manifest"]]
        out.append(f"\nmanifest GET by tag, wrk -t2 -c32 -d{WRK_SECS}s:\n")
        out.append(render(rows, ["", "req/s", "vs distribution", "CPU seconds during the run"]))
    if "catalog" in R:
        out.append(catalog_table(R))
    out.append(f"\n{R['date']}; {os.cpu_count()} CPUs, Linux {os.uname().release}; load average "
               f"{R['load0']:.2f} at start, {os.getloadavg()[0]:.2f} at end; {time.monotonic() - started:.0f} s")
    print("\n".join(out), flush=True)


def catalog_table(R):
    c = R["catalog"]
    d, s3, w = c["distribution-catalog"], c.get("wharf-s3-catalog"), c.get("wharf-pg")
    ms = lambda v: f"{v * 1000:,.1f} ms"  # noqa: E731
    walk = lambda r: f"{r['walk']:,.2f} s" + ("" if r["walk_done"] else f" (cut short at page {r['walk_pages']})")  # noqa: E731
    rows = []
    for label, key, f in (("_catalog?n=1000, first page", "first", ms), (f"tags list, {TAGS:,} tags", "tags", ms),
                          (f"_catalog, full walk of {REPOS + 1:,}", "walk", None)):
        f = f or (lambda _v, k=None: None)
        cell = (lambda r: "not run" if r is None else (walk(r) if key == "walk" else f(r[key])))
        ratio = target = "-"
        if w is not None:
            ratio = f"{d[key] / w[key]:,.0f}x" + ("" if key != "walk" or d["walk_done"] else " or more")
            target = "PASS" if d[key] >= 100 * w[key] else "MISS"
        rows.append([label, cell(w), cell(s3), cell(d), ratio, ">= 100x", target])
    text = [f"\ncatalog of {REPOS + 1:,} repositories (first page and tags list: best of runs):\n",
            render(rows, ["", "wharf + PostgreSQL", "wharf, S3 only", "distribution", "dist/wharf+pg",
                          "target", "result"]),
            f"filled through wharf: {R['fill']['mounts_per_s']:.0f} mounts/s, "
            f"{R['fill']['tags_per_s']:.0f} manifest PUTs/s"]
    if "/catalog" in R.get("import_s", {}):
        text.append(f"wharf database migrate up + import of the bucket: {R['import_s']['/catalog']:.1f} s")
    return "\n".join(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--pids", help="append the servers' pids here (bench/run's backstop)")
    ap.add_argument("--parts", default=os.environ.get("BENCH_S3_PARTS", "1,2,3"))
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    for tool, pkg in (("garage", "cargo install garage --version 2.5.0 --locked"),
                      ("docker-registry", "apt-get install docker-registry"), ("nginx", "apt-get install nginx"),
                      ("wrk", "apt-get install wrk"), ("curl", "apt-get install curl")):
        if shutil.which(tool) is None:
            print(f"FAILED: '{tool}' not found: {pkg}", file=sys.stderr)
            return 1
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    ctx = Ctx(args, work, args.pids or os.path.join(work, "pids"))
    parts = set(args.parts.split(","))
    started = time.monotonic()
    ctx.R["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ctx.R["load0"] = os.getloadavg()[0]
    regs = []
    try:
        ctx.garage = Garage(work, ctx.pidfile)
        wharf = start_registry(ctx, W, W, "/wharf")
        dist = start_registry(ctx, D, D, "/distribution")
        wharf.root, dist.root = "/wharf", "/distribution"
        regs = [wharf, dist]
        if "1" in parts:
            log("part 1: push and pull of a large blob")
            big_blobs(ctx, regs)
        if "2" in parts:
            log("part 2: manifest GET by tag, one process and three replicas behind nginx")
            manifests(ctx, wharf, dist)
        if "3" in parts:
            catalog(ctx)
        return 0
    except (BenchFailure, OSError, subprocess.SubprocessError) as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for s in ctx.servers:
            s.stop()
        if ctx.pg:
            ctx.pg.stop()
        if ctx.garage:
            ctx.garage.stop()
            if not os.environ.get("BENCH_KEEP"):
                shutil.rmtree(ctx.garage.dir, ignore_errors=True)
        try:
            report(ctx, regs, started)
        except (KeyError, TypeError, ZeroDivisionError) as e:
            print(f"(partial results only: {e!r})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
