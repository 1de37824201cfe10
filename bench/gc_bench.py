#!/usr/bin/env python3
"""Garbage collection benchmark: `wharf garbage-collect` against Distribution 2.8.2's
`docker-registry garbage-collect`, in one run, on the same generated store.

A store is written straight to disk in registry:2's layout: 2,000 repositories and 20,000
blobs, half of them garbage. Each repository holds one tagged image (a docker schema2
manifest in even repositories, an OCI manifest in odd ones: valid JSON whose config and 3
layers are blobs in the store, with their real digests and sizes), tagged `latest` and
`v1` (the first repository carries 50 tags), plus 5 unreferenced layer blobs: 4 of them
linked in the repository's `_layers`, as an upload whose manifest never came leaves them,
and 1 not linked anywhere. Every file and directory is then backdated 2 hours, so that
wharf's grace period (content retained within the last hour is kept) holds nothing back
and both collectors see the same garbage; the collectors run with their default
arguments (no --grace, no --delete-untagged).

  1. GC throughput: each collector runs on its own fresh `cp -a` of the store (best of
     N runs, alternating which goes first). After each run the blob directories left must
     be exactly the 10,000 referenced blobs, for both.
  2. Small-push latency: 4 clients on keep-alive connections push a ~1 KiB layer blob
     and a manifest referencing it, at most 2,000 pushes or 20 s. Against `wharf serve`
     on a fresh copy of the store, once with nothing else running, once while
     `wharf garbage-collect --grace 0s` runs in a loop on the same root (online GC; its
     first pass sweeps the 10,000 garbage blobs), and once with that loop on a copy
     already collected (the loop's steady state: marking, nothing to delete); p50/p99 of
     a whole push (blob + manifest). Afterwards, and again after one more collection,
     every pushed manifest and blob must still be there. Distribution's GC is
     offline (registry:2 must be stopped or read-only), so it only gets the baseline.
  3. Tags list: `wrk -t2 -c16 -d10s` on GET /v2/<repo>/tags/list (the 50-tag repository
     and a 2-tag one), wharf and Distribution serving the same copy of the store.

Usage: gc_bench.py --wharf BIN [--work DIR] [--pids FILE] [--runs N]
Everything goes in a new directory under DIR (default $BENCH_DIR or /tmp; about 2 GB at
most), removed at the end (BENCH_KEEP=1 keeps it, with the servers' logs and the
collectors' output). BENCH_QUICK=1 makes it a smoke run (200 repositories, 1 run, short
loads). Standard library only. Exit 0 when everything ran (targets met or not), 1 when something failed
(a collector exited non-zero, the collectors left different blobs, a push got an error
status, pushed content went missing).
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPOS = 2000
LAYERS = 3  # referenced layers per image (plus its config and the manifest itself)
GARBAGE = 5  # unreferenced blobs per repository: GARBAGE_LINKED in _layers, the rest nowhere
GARBAGE_LINKED = 4
TAGS_BIG = 50  # tags in the first repository (the tags-list target)
BACKDATE = 2 * 3600  # seconds; wharf's default grace is 1h
GC_RUNS = 3
PUSH_CLIENTS = 4
PUSH_N = 2000
PUSH_SECS = 20.0
PUSH_BYTES = 1024
WRK = ["wrk", "-t2", "-c16", "-d10s", "--latency"]
WRK_SECS = 10
TARGET_GC = 10.0  # wharf at least this many times faster
TARGET_P99 = 2.0  # p99 with online GC at most this many times p99 without
TARGET_TAGS = 25000  # tags list req/s

if os.environ.get("BENCH_QUICK"):  # a smoke run of the script itself, not a measurement
    REPOS, GC_RUNS, PUSH_N, PUSH_SECS = 200, 1, 200, 5.0
    WRK = ["wrk", "-t2", "-c16", "-d2s", "--latency"]
    WRK_SECS = 2

SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA2_CONFIG = "application/vnd.docker.container.image.v1+json"
SCHEMA2_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCTET = "application/octet-stream"
V2 = os.path.join("docker", "registry", "v2")


class Failure(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(b):
    return hashlib.sha256(b).hexdigest()


# --- the store ------------------------------------------------------------------------

class Store:
    """Writes registry:2's on-disk layout under root."""

    def __init__(self, root):
        self.root = root
        self.v2 = os.path.join(root, V2)

    def blob(self, data):
        h = sha(data)
        d = os.path.join(self.v2, "blobs", "sha256", h[:2], h)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "data"), "wb") as f:
            f.write(data)
        return h

    def link(self, rel, hexd):
        d = os.path.join(self.v2, "repositories", rel)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "link"), "w") as f:
            f.write("sha256:" + hexd)  # no newline, as registry:2 writes it

    def layer_link(self, repo, hexd):
        self.link(f"{repo}/_layers/sha256/{hexd}", hexd)

    def manifest(self, repo, hexd, tags):
        self.link(f"{repo}/_manifests/revisions/sha256/{hexd}", hexd)
        for t in tags:
            self.link(f"{repo}/_manifests/tags/{t}/current", hexd)
            self.link(f"{repo}/_manifests/tags/{t}/index/sha256/{hexd}", hexd)


def image(rng, oci, n_layers, layer_bytes):
    """(config bytes, [layer bytes], manifest bytes, media type) with correct digests."""
    layers = [rng.randbytes(rng.randrange(*layer_bytes)) for _ in range(n_layers)]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + sha(b"diff" + x) for x in layers]},
    }, separators=(",", ":")).encode()
    mt, cmt, lmt = (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER) if oci else (SCHEMA2, SCHEMA2_CONFIG, SCHEMA2_LAYER)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": cmt, "size": len(config), "digest": "sha256:" + sha(config)},
        "layers": [{"mediaType": lmt, "size": len(x), "digest": "sha256:" + sha(x)} for x in layers],
    }, indent=3).encode()
    return config, layers, manifest, mt


def generate(root, repos):
    """The store; returns (set of referenced blob hexes, set of garbage hexes, repo names)."""
    rng = random.Random(20261204)
    st = Store(root)
    live, garbage, names = set(), set(), []
    for i in range(repos):
        repo = f"gc/r{i:04d}"
        names.append(repo)
        config, layers, manifest, _ = image(rng, i % 2 == 1, LAYERS, (200, 2000))
        for b in [config] + layers:
            h = st.blob(b)
            st.layer_link(repo, h)
            live.add(h)
        mh = st.blob(manifest)
        live.add(mh)
        tags = ["latest", "v1"] if i else ["latest"] + [f"v{k}" for k in range(1, TAGS_BIG)]
        st.manifest(repo, mh, tags)
        for g in range(GARBAGE):
            h = st.blob(rng.randbytes(rng.randrange(200, 2000)))
            garbage.add(h)
            if g < GARBAGE_LINKED:
                st.layer_link(repo, h)
    if len(live) + len(garbage) != repos * (LAYERS + 2 + GARBAGE):
        raise Failure("generated blobs collided")
    return live, garbage, names


def backdate(root, secs):
    t = time.time() - secs
    for d, dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(d, f), (t, t))
        os.utime(d, (t, t))


def blob_dirs(root):
    """The blob directories holding data, as hexes."""
    base = os.path.join(root, V2, "blobs", "sha256")
    out = set()
    for xx in os.listdir(base):
        for h in os.listdir(os.path.join(base, xx)):
            if os.path.exists(os.path.join(base, xx, h, "data")):
                out.add(h)
    return out


def copy_store(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", src, dst], check=True)
    subprocess.run(["sync"], check=True)


def config_file(path, root, port=None):
    http_part = f"http:\n  addr: 127.0.0.1:{port}\n" if port else ""
    with open(path, "w") as f:
        f.write("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {root}\n{http_part}")
    return path


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["WHARF_LOG"] = "warn"
    return env


# --- 1. GC throughput -----------------------------------------------------------------

def run_gc(argv, out_path):
    """Run a collector; seconds. Output goes to a file (both print a line per blob)."""
    with open(out_path, "w") as out:
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=clean_env(), timeout=1800)
        secs = time.perf_counter() - t0
    if p.returncode != 0:
        with open(out_path) as f:
            tail = f.read()[-3000:]
        raise Failure(f"{' '.join(argv)} exited {p.returncode}; output (end):\n{tail}")
    return secs


def gc_throughput(wharf, work, pristine, live, garbage):
    results = {"wharf": [], "distribution": []}
    summaries, dry = {}, {}
    for r in range(GC_RUNS):
        order = ["wharf", "distribution"] if r % 2 == 0 else ["distribution", "wharf"]
        for kind in order:
            root = os.path.join(work, f"gc-{kind}")
            copy_store(pristine, root)
            cfg = config_file(os.path.join(work, f"gc-{kind}.yml"), root)
            argv = ([wharf, "garbage-collect", cfg] if kind == "wharf"
                    else ["docker-registry", "garbage-collect", cfg])
            out = os.path.join(work, f"gc-{kind}-{r}.out")
            if r == 0:  # where the time goes: the mark alone (a dry run deletes nothing)
                dry[kind] = run_gc(argv[:2] + ["--dry-run"] + argv[2:], out + ".dry")
            secs = run_gc(argv, out)
            left = blob_dirs(root)
            if left != live:
                raise Failure(
                    f"{kind} garbage-collect (run {r + 1}) left {len(left)} blobs: "
                    f"{len(live - left)} referenced blobs deleted, {len(left & garbage)} garbage "
                    f"blobs kept (e.g. deleted {sorted(live - left)[:3]}, kept {sorted(left & garbage)[:3]})")
            with open(out) as f:
                lines = [x for x in f.read().splitlines() if " marked" in x]
            summaries[kind] = lines[-1] if lines else "(no summary line)"
            results[kind].append(secs)
            log(f"gc run {r + 1} {kind:12}: {secs:7.2f} s, {len(garbage)} blobs deleted, "
                f"{len(left)} left (as expected)")
            shutil.rmtree(root)
    return results, summaries, dry


# --- HTTP -----------------------------------------------------------------------------

class Server:
    def __init__(self, kind, wharf, work, name, root, pidfile):
        self.kind, self.name, self.port = kind, name, free_port()
        cfg = config_file(os.path.join(work, f"{name}.yml"), root, self.port)
        argv = [wharf, "serve", cfg] if kind == "wharf" else ["docker-registry", "serve", cfg]
        self.logpath = os.path.join(work, f"{name}.log")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     stderr=open(self.logpath, "w"), env=clean_env())
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise Failure(f"{kind} ({name}) exited early with {self.proc.returncode}: {self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise Failure(f"{kind} ({name}) did not answer on {self.port}: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self):
        try:
            with open(self.logpath) as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def call(srv, conn, method, path, body=None, headers=None, expect=(200,)):
    headers = dict(headers or {})
    if body is None and method in ("POST", "PUT"):
        headers["Content-Length"] = "0"
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
    except (OSError, http.client.HTTPException) as e:
        raise Failure(f"{srv.kind}: {method} {path}: transport error {e!r}") from e
    if r.status not in expect:
        raise Failure(f"{srv.kind}: {method} {path} -> {r.status} {r.reason}; body {data[:600]!r}")
    return r, data


def loc_of(r):
    loc = r.getheader("Location") or ""
    return loc[loc.index("/v2/"):] if "://" in loc else loc


def push_blob(srv, conn, repo, data, dg, monolithic):
    if monolithic:  # POST ?digest= with the body (the spec allows it; 2.8.2 does not)
        call(srv, conn, "POST", f"/v2/{repo}/blobs/uploads/?digest={dg}", data,
             {"Content-Type": OCTET}, (201,))
    else:  # POST, then PUT ?digest= (docker's flow)
        r, _ = call(srv, conn, "POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        loc = loc_of(r)
        call(srv, conn, "PUT", loc + ("&" if "?" in loc else "?") + "digest=" + dg, data,
             {"Content-Type": OCTET}, (201,))


# --- 2. small-push latency ------------------------------------------------------------

def push_latency(srv, monolithic, tag_prefix):
    """PUSH_CLIENTS threads on keep-alive connections; each push is a ~1 KiB layer blob
    and a schema2 manifest (shared config + that layer) under a new tag. Returns the push
    latencies (s), elapsed seconds and the pushed (repo, tag, manifest digest, layer)."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cdg = "sha256:" + sha(config)
    work = []
    for k in range(PUSH_N):
        layer = os.urandom(PUSH_BYTES)
        ldg = "sha256:" + sha(layer)
        m = json.dumps({"schemaVersion": 2, "mediaType": SCHEMA2,
                        "config": {"mediaType": SCHEMA2_CONFIG, "size": len(config), "digest": cdg},
                        "layers": [{"mediaType": SCHEMA2_LAYER, "size": len(layer), "digest": ldg}]},
                       indent=3).encode()
        work.append((layer, ldg, m, "sha256:" + sha(m), f"{tag_prefix}{k}"))
    repos = [f"push/c{i}" for i in range(PUSH_CLIENTS)]
    for repo in repos:  # the shared config, untimed (and retained now: GC's grace is 0s)
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        push_blob(srv, c, repo, config, cdg, monolithic)
        c.close()
    lock = threading.Lock()
    nxt = [0]
    lat = [[] for _ in range(PUSH_CLIENTS)]
    pushed = [[] for _ in range(PUSH_CLIENTS)]
    errors = []
    barrier = threading.Barrier(PUSH_CLIENTS + 1)
    stop_at = [0.0]

    def worker(i):
        repo = repos[i]
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        try:
            conn.connect()
            barrier.wait()
            while not errors and time.perf_counter() < stop_at[0]:
                with lock:
                    k = nxt[0]
                    nxt[0] += 1
                if k >= len(work):
                    break
                layer, ldg, m, mdg, tag = work[k]
                t0 = time.perf_counter()
                push_blob(srv, conn, repo, layer, ldg, monolithic)
                r, _ = call(srv, conn, "PUT", f"/v2/{repo}/manifests/{tag}", m,
                            {"Content-Type": SCHEMA2}, (201,))
                lat[i].append(time.perf_counter() - t0)
                if r.getheader("Docker-Content-Digest") != mdg:
                    raise Failure(f"{srv.kind}: PUT manifest {repo}:{tag}: Docker-Content-Digest "
                                  f"{r.getheader('Docker-Content-Digest')}, expected {mdg}")
                pushed[i].append((repo, tag, mdg, ldg))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(PUSH_CLIENTS)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + PUSH_SECS
    t0 = time.perf_counter()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        e = errors[0]
        raise e if isinstance(e, Failure) else Failure(f"{srv.kind}: push: {e!r}")
    return sorted(x for l in lat for x in l), secs, [p for l in pushed for p in l]


def pct(sorted_xs, p):
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(round(p / 100 * (len(sorted_xs) - 1))))]


def check_pushed(srv, pushed, when):
    """Every pushed manifest is served by tag with its digest, and its layer is there."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    missing = []
    for repo, tag, mdg, ldg in pushed:
        conn.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": SCHEMA2})
        r = conn.getresponse()
        r.read()
        if r.status != 200 or r.getheader("Docker-Content-Digest") != mdg:
            missing.append(f"manifest {repo}:{tag} -> {r.status}")
        conn.request("HEAD", f"/v2/{repo}/blobs/{ldg}")
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            missing.append(f"blob {repo}@{ldg} -> {r.status}")
    conn.close()
    if missing:
        raise Failure(f"{srv.kind}: {when}: {len(missing)} pushed items missing, e.g. {missing[:5]}")


class GcLoop:
    """`wharf garbage-collect --root ROOT --grace 0s` again and again until stopped."""

    def __init__(self, wharf, root, work):
        self.argv = [wharf, "garbage-collect", "--root", root, "--grace", "0s", "--json"]
        self.work = work
        self.runs = []  # (seconds, blobs deleted, manifests marked)
        self.errors = []
        self.stopping = threading.Event()
        self.proc = None
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        while not self.stopping.is_set():
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         env=clean_env(), text=True)
            out, err = self.proc.communicate()
            secs = time.perf_counter() - t0
            if self.proc.returncode != 0:
                self.errors.append(f"exit {self.proc.returncode} after {secs:.2f} s: {err.strip()} {out.strip()[:500]}")
                if len(self.errors) >= 3:
                    return
                continue
            try:
                rep = json.loads(out)
                self.runs.append((secs, len(rep["blobs"]), rep["manifests_marked"], rep.get("blobs_rescued", 0)))
            except (ValueError, KeyError) as e:
                self.errors.append(f"unreadable report ({e!r}): {out[:300]!r} {err[:300]!r}")

    def start(self):
        self.thread.start()

    def stop(self):
        """Lets the collection under way finish (bounded), then stops looping."""
        self.stopping.set()
        self.thread.join(timeout=300)
        if self.thread.is_alive() and self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.thread.join()


# --- 3. tags list ---------------------------------------------------------------------

def run_wrk(srv, path):
    url = f"http://127.0.0.1:{srv.port}{path}"
    p = subprocess.run(WRK + [url], capture_output=True, text=True, timeout=WRK_SECS + 60)
    if p.returncode != 0:
        raise Failure(f"wrk {url} failed ({p.returncode}): {p.stderr}{p.stdout}")
    m = re.search(r"Requests/sec:\s*([\d.]+)", p.stdout)
    if not m:
        raise Failure(f"cannot parse wrk output:\n{p.stdout}")
    if n := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", p.stdout):
        raise Failure(f"{srv.kind}: wrk {path}: {n.group(1)} non-2xx responses:\n{p.stdout}")
    p99 = re.search(r"^\s*99%\s+(\S+)", p.stdout, re.M)
    return float(m.group(1)), p99.group(1) if p99 else "?"


def check_tags(srv, repo, want):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    _, body = call(srv, c, "GET", f"/v2/{repo}/tags/list")
    c.close()
    got = json.loads(body)
    if got.get("name") != repo or sorted(got.get("tags") or []) != sorted(want):
        raise Failure(f"{srv.kind}: GET /v2/{repo}/tags/list -> {body[:300]!r}, expected {len(want)} tags")


# --- main -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", help="a directory for the run's files (default: a new one under "
                    "$BENCH_DIR or /tmp); what the run makes in it is removed at the end")
    ap.add_argument("--pids", help="append the servers' pids here (bench/run's backstop)")
    ap.add_argument("--runs", type=int, default=None, help=f"GC runs per collector (default {GC_RUNS})")
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)  # so the servers are stopped on the way out
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    for tool in ("docker-registry", "wrk", "cp"):
        if shutil.which(tool) is None:
            print(f"FAILED: '{tool}' not found", file=sys.stderr)
            return 1
    base = os.path.abspath(args.work or os.environ.get("BENCH_DIR", "/tmp"))
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="wharf-gc-bench.", dir=base)
    pidfile = args.pids or os.path.join(work, "pids")
    servers, loops = [], []
    try:
        return run(args, work, pidfile, servers, loops)
    except Failure as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for lp in loops:
            lp.stop()
        for s in servers:
            s.stop()
        if os.environ.get("BENCH_KEEP"):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work, pidfile, servers, loops):
    global GC_RUNS
    if args.runs:
        GC_RUNS = args.runs
    wharf = os.path.realpath(args.wharf)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()[0]
    wharf_ver = subprocess.run([wharf, "--version"], capture_output=True, text=True).stdout.strip()
    dist_ver = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True).stdout.strip()

    pristine = os.path.join(work, "store")
    log(f"generating {REPOS} repositories, {REPOS * (LAYERS + 2 + GARBAGE)} blobs under {pristine}")
    t0 = time.perf_counter()
    live, garbage, names = generate(pristine, REPOS)
    backdate(pristine, BACKDATE)
    log(f"  {len(live)} referenced + {len(garbage)} garbage blobs in {time.perf_counter() - t0:.1f} s, "
        f"backdated {BACKDATE // 3600} h")

    # 1.
    gc, summaries, dry = gc_throughput(wharf, work, pristine, live, garbage)

    # 2.
    lat = {}
    online = {}
    for kind, mode in (("wharf", "gc-off"), ("wharf", "gc-on"), ("wharf", "gc-on-swept"),
                       ("distribution", "gc-off")):
        root = os.path.join(work, f"push-{kind}-{mode}")
        copy_store(pristine, root)
        if mode == "gc-on-swept":  # the garbage collected beforehand: the loop's steady state
            run_gc([wharf, "garbage-collect", "--root", root, "--grace", "0s"],
                   os.path.join(work, "presweep.out"))
        srv = Server(kind, wharf, work, f"push-{kind}-{mode}", root, pidfile)
        servers.append(srv)
        loop = None
        if mode.startswith("gc-on"):
            loop = GcLoop(wharf, root, work)
            loops.append(loop)
            loop.start()
            time.sleep(0.2)  # the first collection is under way (it has 10,000 blobs to delete)
        xs, secs, pushed = push_latency(srv, kind == "wharf", f"{mode}-")
        if loop:
            loop.stop()
            loops.remove(loop)
        check_pushed(srv, pushed, "after the pushes")
        if loop:
            online[mode] = loop
            if loop.errors:
                log("wharf garbage-collect errors during the pushes:\n  " + "\n  ".join(loop.errors))
            # One more collection with nothing running: still nothing pushed may go.
            p = subprocess.run(loop.argv, capture_output=True, text=True, env=clean_env(), timeout=600)
            if p.returncode != 0:
                raise Failure(f"final {' '.join(loop.argv)} exited {p.returncode}: {p.stderr}{p.stdout[:500]}")
            check_pushed(srv, pushed, "after one more wharf garbage-collect --grace 0s")
        lat[(kind, mode)] = (xs, secs)
        log(f"pushes {kind:12} {mode}: {len(xs)} in {secs:.1f} s ({len(xs) / secs:.0f}/s), "
            f"p50 {pct(xs, 50) * 1e3:.2f} ms, p99 {pct(xs, 99) * 1e3:.2f} ms"
            + (f"; GC loop: {len(loop.runs)} runs, {', '.join(f'{r[0]:.2f} s/{r[1]} deleted' for r in loop.runs[:8])}"
               if loop else ""))
        srv.stop()
        servers.remove(srv)
        shutil.rmtree(root)

    # 3.
    root = os.path.join(work, "tags")
    copy_store(pristine, root)
    tags_big = ["latest"] + [f"v{k}" for k in range(1, TAGS_BIG)]
    tags = {}
    for kind in ("wharf", "distribution"):
        srv = Server(kind, wharf, work, f"tags-{kind}", root, pidfile)
        servers.append(srv)
        for repo, want in ((names[0], tags_big), (names[1], ["latest", "v1"])):
            check_tags(srv, repo, want)
            rps, p99 = run_wrk(srv, f"/v2/{repo}/tags/list")
            tags[(kind, len(want))] = (rps, p99)
            log(f"tags list {kind:12} {len(want):2} tags: {rps:9,.0f} req/s (p99 {p99})")
        srv.stop()
        servers.remove(srv)
    shutil.rmtree(root)

    # report
    def best(xs):
        return min(xs)

    print(f"\nwharf garbage-collect ({wharf_ver}) vs {dist_ver}; {date}; {os.cpu_count()} CPUs, "
          f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"store: {REPOS:,} repositories, {len(live) + len(garbage):,} blobs "
          f"({len(garbage):,} garbage), files backdated {BACKDATE // 3600} h\n")
    w, d = best(gc["wharf"]), best(gc["distribution"])
    ratio = d / w
    print("| garbage-collect, best of {} fresh copies | wharf | distribution | dist/wharf | target | result |".format(GC_RUNS))
    print("|------------------------------------------|-------|--------------|------------|--------|--------|")
    print(f"| seconds ({len(garbage):,} of {len(live) + len(garbage):,} blobs deleted, same set) "
          f"| {w:.2f} | {d:.2f} | {ratio:.1f}x | >= {TARGET_GC:.0f}x | {'PASS' if ratio >= TARGET_GC else 'MISS'} |")
    print(f"all runs (s): wharf {', '.join(f'{x:.2f}' for x in gc['wharf'])}; "
          f"distribution {', '.join(f'{x:.2f}' for x in gc['distribution'])}")
    print(f"dry run (mark only, nothing deleted), s: wharf {dry['wharf']:.2f}, distribution {dry['distribution']:.2f}")
    print(f"summary lines: wharf: {summaries.get('wharf')!r}; distribution: {summaries.get('distribution')!r}\n")

    print(f"| small pushes ({PUSH_BYTES} B blob + manifest, {PUSH_CLIENTS} clients) | pushes | per s | p50 ms | p99 ms |")
    print("|---------------------------------------------------------|--------|-------|--------|--------|")
    for (kind, mode), label in ((("wharf", "gc-off"), "wharf, no GC (POST ?digest=)"),
                                (("wharf", "gc-on"), "wharf, `wharf garbage-collect --grace 0s` looping, first pass sweeps 10,000 blobs"),
                                (("wharf", "gc-on-swept"), "wharf, the same loop on a store already collected (mark only)"),
                                (("distribution", "gc-off"), "distribution, no GC (POST+PUT)")):
        xs, secs = lat[(kind, mode)]
        print(f"| {label} | {len(xs)} | {len(xs) / secs:,.0f} | {pct(xs, 50) * 1e3:.2f} | {pct(xs, 99) * 1e3:.2f} |")
    off, on = lat[("wharf", "gc-off")][0], lat[("wharf", "gc-on")][0]
    r99 = pct(on, 99) / pct(off, 99)
    sw = lat[("wharf", "gc-on-swept")][0]
    r99s = pct(sw, 99) / pct(off, 99)
    print(f"wharf p99 with online GC / without: {r99:.2f}x while it sweeps (target <= {TARGET_P99:.0f}x: "
          f"{'PASS' if r99 <= TARGET_P99 else 'MISS'}), p50 {pct(on, 50) / pct(off, 50):.2f}x; "
          f"mark-only loop: p99 {r99s:.2f}x ({'PASS' if r99s <= TARGET_P99 else 'MISS'}), "
          f"p50 {pct(sw, 50) / pct(off, 50):.2f}x")
    for mode, lp in online.items():
        runs = lp.runs
        print(f"GC loop during the pushes ({mode}): {len(runs)} collections, seconds "
              f"{', '.join(f'{r[0]:.2f}' for r in runs)}; blobs deleted {', '.join(str(r[1]) for r in runs)}; "
              f"rescued {sum(r[3] for r in runs)}; errors {len(lp.errors)}")
        for e in lp.errors:
            print(f"  GC error: {e}")
    print()
    print("| tags list, wrk -t2 -c16 -d10s (req/s) | wharf | distribution | wharf/dist | target | result |")
    print("|---------------------------------------|-------|--------------|------------|--------|--------|")
    for n in (TAGS_BIG, 2):
        (wr, wp), (dr, dp) = tags[("wharf", n)], tags[("distribution", n)]
        tgt = f">= {TARGET_TAGS // 1000}k/s"
        res = "PASS" if wr >= TARGET_TAGS else "MISS"
        print(f"| {n} tags (p99 {wp} / {dp}) | {wr:,.0f} | {dr:,.0f} | {wr / dr:.1f}x | {tgt} | {res} |")
    shutil.rmtree(pristine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
