#!/usr/bin/env python3
"""Side-by-side benchmark: wharf against Distribution 2.8.2 (registry:2), with nginx
sendfile and the disk's fdatasync rate as baselines. Standard library only.

Driven by bench/run, which checks the tools, builds wharf, makes the work directory and
cleans up after us. Usage: bench.py --wharf BIN --work DIR [--out DIR]

Exit status: 0 when everything ran (targets missed or not), 1 when something actually
failed (a server did not start, a request got an error status, a digest mismatched).
"""

import argparse
import datetime
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse

MB = 1e6  # throughput and RSS are reported in MB = 10^6 bytes
BIG = 1 << 30  # 1 GiB
CHUNK = 16 << 20  # chunked push: 16 MiB PATCHes
IO_BLOCK = 4 << 20  # client read/send block for big bodies
SMALL = 4096  # small blob size
SMALL_N = 4000  # small pushes: at most this many blobs ...
SMALL_SECS = 10.0  # ... or this long, whichever comes first
SMALL_THREADS = 8
WRK_SECS = 10
WRK_THREADS = 2
WRK_CONNS = 32
PULL_STREAMS = 8
PULL_RUNS_1 = 5  # best of N single-stream pulls
PULL_RUNS_8 = 2  # best of N 8-stream pulls
PUSH_RUNS = 2  # best of N 1 GiB pushes, each of a distinct blob
TAGS = 50
# Memory faulted in and freed right before each timed 1 GiB write; see prime_memory().
# BENCH_PRIME_MB=0 turns it off (to see what the VM's cold pages cost).
PRIME = int(os.environ.get("BENCH_PRIME_MB", "1536")) << 20

if os.environ.get("BENCH_QUICK"):  # a smoke run of the script itself, not a measurement
    BIG, SMALL_N, SMALL_SECS, WRK_SECS, PULL_RUNS_1, PULL_RUNS_8 = 64 << 20, 400, 2.0, 2, 1, 1
    PUSH_RUNS = 1
    PRIME = min(PRIME, 128 << 20)

SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MT = "application/vnd.docker.container.image.v1+json"
LAYER_MT = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCTET = "application/octet-stream"

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchFailure(Exception):
    """Something actually went wrong (not a missed target)."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_random_file(path, size):
    """Random content, hashed while it is written (the hash is ready before any timing)."""
    h = hashlib.sha256()
    with open("/dev/urandom", "rb", buffering=0) as src, open(path, "wb") as dst:
        left = size
        while left:
            block = src.read(min(IO_BLOCK, left))
            h.update(block)
            dst.write(block)
            left -= len(block)
    return "sha256:" + h.hexdigest()


def make_variant(src, dst, tag):
    """A copy of src whose first 8 bytes are `tag` (a distinct blob), hashed while copied."""
    h = hashlib.sha256()
    first = True
    with open(src, "rb", buffering=0) as fi, open(dst, "wb", buffering=0) as fo:
        while block := fi.read(IO_BLOCK):
            if first:
                block = tag.to_bytes(8, "little") + block[8:]
                first = False
            h.update(block)
            fo.write(block)
    return "sha256:" + h.hexdigest()


class Cpu(tuple):
    """(user, system) CPU seconds."""

    def __new__(cls, user=0.0, system=0.0):
        return super().__new__(cls, (user, system))

    user = property(lambda self: self[0])
    system = property(lambda self: self[1])
    total = property(lambda self: self[0] + self[1])

    def __add__(self, o):
        return Cpu(self[0] + o[0], self[1] + o[1])

    def __sub__(self, o):
        return Cpu(self[0] - o[0], self[1] - o[1])

    def __str__(self):
        return f"{self.total:.1f} s ({self[1] / self.total * 100 if self.total else 0:.0f}% sys)"


def proc_cpu(pid):
    """utime, stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return Cpu(int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)


def proc_status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchFailure(f"no {key} in /proc/{pid}/status")


def system_busy():
    """Busy CPU seconds of the whole machine so far (all CPUs; idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def client_cpu():
    """CPU seconds used so far by this script and its finished children (curl, wrk)."""
    t = os.times()
    return Cpu(t.user + t.children_user, t.system + t.children_system)


class Server:
    def __init__(self, name, label, argv, port, workdir, env=None, ready_path="/v2/"):
        self.name, self.label, self.argv, self.port = name, label, argv, port
        self.workdir, self.env, self.ready_path = workdir, env, ready_path
        self.proc = None
        self.logpath = os.path.join(workdir, f"{name}.log")

    def start(self, pidfile):
        logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.workdir,
        )
        logf.close()
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")

    def log_tail(self, n=30):
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchFailure(
                    f"{self.label} exited with status {self.proc.returncode} during start-up; "
                    f"log:\n{self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", self.ready_path)
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return
                last = f"GET {self.ready_path} -> {r.status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        raise BenchFailure(f"{self.label} not ready on 127.0.0.1:{self.port} after {timeout}s "
                           f"(last: {last}); log:\n{self.log_tail()}")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchFailure(f"{self.label} died (status {self.proc.returncode}); "
                               f"log:\n{self.log_tail()}")

    def cpu(self):
        """CPU seconds of the server and its children (nginx's workers do nginx's work)."""
        pids = [self.proc.pid]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == self.proc.pid:
                    pids.append(int(d))
        total = Cpu()
        for pid in pids:
            try:
                total += proc_cpu(pid)
            except OSError:
                pass
        return total

    def rss_kb(self):
        return proc_status_kb(self.proc.pid, "VmRSS")

    def hwm_kb(self):
        return proc_status_kb(self.proc.pid, "VmHWM")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- HTTP helpers ---------------------------------------------------------------------

def conn_for(srv, timeout=600):
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout,
                                      blocksize=IO_BLOCK)


def call(srv, conn, method, path, body=None, headers=None, expect=(200,)):
    """One request on a kept-alive connection; any status outside `expect` is a failure,
    reported with the request and the response as seen."""
    headers = dict(headers or {})
    if body is None and method in ("POST", "PUT", "PATCH"):
        headers.setdefault("Content-Length", "0")
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
    except (OSError, http.client.HTTPException) as e:
        raise BenchFailure(f"{srv.label}: {method} {path}: transport error {e!r}") from e
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    if r.status not in expect:
        raise BenchFailure(
            f"{srv.label}: {method} {path} (request headers {headers}) -> "
            f"{r.status} {r.reason}, expected {'/'.join(map(str, expect))}; "
            f"response headers {hdrs}; body {data[:600]!r}")
    return r.status, hdrs, data


def loc_path(srv, hdrs, what):
    loc = hdrs.get("location")
    if not loc:
        raise BenchFailure(f"{srv.label}: {what} answered without a Location header: {hdrs}")
    u = urllib.parse.urlsplit(loc)
    return u.path + (("?" + u.query) if u.query else "")


def with_digest(path, digest):
    return path + ("&" if "?" in path else "?") + "digest=" + urllib.parse.quote(digest, safe=":")


def check_digest(srv, hdrs, digest, what):
    got = hdrs.get("docker-content-digest")
    if got != digest:
        raise BenchFailure(f"{srv.label}: {what}: Docker-Content-Digest {got!r}, expected {digest}")


def push_blob_small(srv, conn, repo, data, digest):
    """POST + PUT (the flow docker uses), for setting things up."""
    _, h, _ = call(srv, conn, "POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
    loc = loc_path(srv, h, "POST upload")
    _, h, _ = call(srv, conn, "PUT", with_digest(loc, digest), body=data,
                   headers={"Content-Type": OCTET}, expect=(201,))
    check_digest(srv, h, digest, f"PUT blob {digest}")


# --- the measurements -----------------------------------------------------------------

def push_monolithic(srv, repo, path, size, digest):
    """POST, then PUT ?digest= with the whole file as the body. Returns seconds."""
    conn = conn_for(srv)
    with open(path, "rb", buffering=0) as f:
        t0 = time.perf_counter()
        _, h, _ = call(srv, conn, "POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        loc = loc_path(srv, h, "POST upload")
        _, h, _ = call(srv, conn, "PUT", with_digest(loc, digest), body=f,
                       headers={"Content-Type": OCTET, "Content-Length": str(size)},
                       expect=(201,))
        t1 = time.perf_counter()
    conn.close()
    check_digest(srv, h, digest, "monolithic PUT")
    return t1 - t0


def push_chunked(srv, repo, path, size, digest):
    """POST, PATCH 16 MiB chunks with Content-Range, then PUT ?digest=. Returns seconds."""
    conn = conn_for(srv)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        t0 = time.perf_counter()
        _, h, _ = call(srv, conn, "POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        loc = loc_path(srv, h, "POST upload")
        off = 0
        while off < size:
            n = f.readinto(buf)
            if not n:
                raise BenchFailure(f"short read of {path} at {off}")
            end = off + n - 1
            _, h, _ = call(srv, conn, "PATCH", loc, body=view[:n],
                           headers={"Content-Type": OCTET, "Content-Length": str(n),
                                    "Content-Range": f"{off}-{end}"},
                           expect=(202,))
            if h.get("range") != f"0-{end}":
                raise BenchFailure(f"{srv.label}: PATCH {loc} Content-Range {off}-{end} "
                                   f"answered Range {h.get('range')!r}, expected 0-{end}")
            loc = loc_path(srv, h, "PATCH")
            off += n
        _, h, _ = call(srv, conn, "PUT", with_digest(loc, digest),
                       headers={"Content-Type": OCTET}, expect=(201,))
        t1 = time.perf_counter()
    conn.close()
    check_digest(srv, h, digest, "chunked PUT")
    return t1 - t0


def verify_blob(srv, repo, digest, size):
    """Untimed: GET the blob and hash what comes back."""
    conn = conn_for(srv)
    try:
        conn.request("GET", f"/v2/{repo}/blobs/{digest}")
        r = conn.getresponse()
        if r.status != 200:
            raise BenchFailure(f"{srv.label}: GET /v2/{repo}/blobs/{digest} -> {r.status} "
                               f"{r.reason}; body {r.read()[:600]!r}")
        h = hashlib.sha256()
        n = 0
        while block := r.read(IO_BLOCK):
            h.update(block)
            n += len(block)
    except (OSError, http.client.HTTPException) as e:
        raise BenchFailure(f"{srv.label}: GET blob {digest}: transport error {e!r}") from e
    finally:
        conn.close()
    got = "sha256:" + h.hexdigest()
    if n != size or got != digest:
        raise BenchFailure(f"{srv.label}: GET /v2/{repo}/blobs/{digest} returned {n} bytes "
                           f"hashing to {got}; expected {size} bytes, {digest}")


def curl_pull(label, url, streams, size):
    """`streams` concurrent curl -o /dev/null of url. Returns (seconds, client cpu)."""
    cpu0 = client_cpu()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(streams)]
    outs = [p.communicate(timeout=300) for p in procs]
    t1 = time.perf_counter()
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0 or out.strip() != f"200 {size}":
            raise BenchFailure(f"{label}: curl GET {url} -> exit {p.returncode}, "
                               f"'%{{http_code}} %{{size_download}}' = {out.strip()!r}, "
                               f"expected '200 {size}'; stderr {err.strip()!r}")
    return t1 - t0, client_cpu() - cpu0


class RssSampler:
    """VmRSS of every server every 50 ms for the whole run, the maximum kept per phase.
    `phase` is set by the main thread before each measurement."""

    def __init__(self, servers, period=0.05):
        self.servers, self.period = servers, period
        self.phase = "start-up"
        self.max_kb = {}  # (server name, phase) -> kB
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            phase = self.phase
            for srv in self.servers:
                try:
                    kb = srv.rss_kb()
                except (OSError, BenchFailure):
                    continue
                key = (srv.name, phase)
                self.max_kb[key] = max(self.max_kb.get(key, 0), kb)
            self._stop.wait(self.period)

    def peak(self, name, phase):
        return self.max_kb.get((name, phase), 0)

    def start(self):
        self._t.start()

    def stop(self):
        self._stop.set()
        self._t.join()


SAMPLER = None


def set_phase(phase):
    if SAMPLER:
        SAMPLER.phase = phase


def parse_wrk(out):
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        raise BenchFailure(f"cannot parse wrk output:\n{out}")
    res = {"rps": float(m.group(1)), "non2xx": 0, "socket_errors": None, "latency_avg": None,
           "latency_p99": None, "requests": None}
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out):
        res["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors:\s*(.*)", out):
        res["socket_errors"] = m.group(1).strip()
    if m := re.search(r"^\s*Latency\s+(\S+)", out, re.M):
        res["latency_avg"] = m.group(1)
    if m := re.search(r"^\s*99%\s+(\S+)", out, re.M):
        res["latency_p99"] = m.group(1)
    if m := re.search(r"(\d+) requests in", out):
        res["requests"] = int(m.group(1))
    return res


def run_wrk(srv, key, path, accept=None):
    url = f"http://127.0.0.1:{srv.port}{path}"
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNS}", f"-d{WRK_SECS}s", "--latency"]
    if accept:
        cmd += ["-H", f"Accept: {accept}"]
    cmd.append(url)
    phase = f"{key} {srv.name}"
    set_phase(phase)
    cpu_s0, cpu_c0 = srv.cpu(), client_cpu()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=WRK_SECS + 60)
    cpu_s1, cpu_c1 = srv.cpu(), client_cpu()
    set_phase("between")
    srv.check_alive()
    if p.returncode != 0:
        raise BenchFailure(f"wrk against {srv.label} failed ({p.returncode}): {p.stderr}{p.stdout}")
    res = parse_wrk(p.stdout)
    res["server_cpu"] = cpu_s1 - cpu_s0
    res["client_cpu"] = cpu_c1 - cpu_c0
    res["rss_max_kb"] = SAMPLER.peak(srv.name, phase) if SAMPLER else 0
    res["raw"] = p.stdout
    if res["non2xx"]:
        raise BenchFailure(f"{srv.label}: wrk GET {path} (Accept: {accept}) got {res['non2xx']} "
                           f"non-2xx/3xx responses out of {res['requests']}:\n{p.stdout}")
    if res["socket_errors"] and re.search(r"[1-9]", res["socket_errors"]):
        log(f"warning: {srv.label}: wrk socket errors: {res['socket_errors']}")
    return res


def small_pushes(srv, repo, mode):
    """SMALL_THREADS threads, each on its own kept-alive connection, pushing distinct 4 KiB
    blobs until SMALL_N are pushed or SMALL_SECS have passed. mode 'post' is the monolithic
    POST ?digest= with the body; 'post+put' is POST then PUT ?digest= (docker's flow)."""
    blobs = []
    for _ in range(SMALL_N):
        b = os.urandom(SMALL)
        blobs.append((b, "sha256:" + hashlib.sha256(b).hexdigest()))
    lock = threading.Lock()
    nxt = [0]
    done = [0] * SMALL_THREADS
    errors = []
    start = threading.Barrier(SMALL_THREADS + 1)
    stop_at = [0.0]

    def worker(i):
        conn = conn_for(srv, timeout=60)
        try:
            conn.connect()
            start.wait()
            while not errors and time.perf_counter() < stop_at[0]:
                with lock:
                    k = nxt[0]
                    nxt[0] += 1
                if k >= len(blobs):
                    break
                data, dg = blobs[k]
                if mode == "post":
                    _, h, _ = call(srv, conn, "POST", with_digest(f"/v2/{repo}/blobs/uploads/", dg),
                                   body=data, headers={"Content-Type": OCTET}, expect=(201,))
                    check_digest(srv, h, dg, "monolithic POST")
                else:
                    push_blob_small(srv, conn, repo, data, dg)
                done[i] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            try:
                start.abort()
            except threading.BrokenBarrierError:
                pass
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(SMALL_THREADS)]
    for t in threads:
        t.start()
    cpu_s0, cpu_c0 = srv.cpu(), client_cpu()
    stop_at[0] = time.perf_counter() + SMALL_SECS
    t0 = time.perf_counter()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    t1 = time.perf_counter()
    cpu_s1, cpu_c1 = srv.cpu(), client_cpu()
    if errors:
        e = errors[0]
        raise e if isinstance(e, BenchFailure) else BenchFailure(f"{srv.label}: small push: {e!r}")
    n = sum(done)
    # spot-check what was stored
    conn = conn_for(srv, timeout=30)
    for k in range(0, n, max(1, n // 20)):
        _, h, _ = call(srv, conn, "HEAD", f"/v2/{repo}/blobs/{blobs[k][1]}", expect=(200,))
        if h.get("content-length") != str(SMALL):
            raise BenchFailure(f"{srv.label}: HEAD small blob {blobs[k][1]}: Content-Length "
                               f"{h.get('content-length')!r}, expected {SMALL}")
    conn.close()
    return {"n": n, "secs": t1 - t0, "rate": n / (t1 - t0), "mode": mode,
            "server_cpu": cpu_s1 - cpu_s0, "client_cpu": cpu_c1 - cpu_c0}


def supports_monolithic_post(srv, repo):
    data = os.urandom(SMALL)
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    conn = conn_for(srv, timeout=30)
    st, h, _ = call(srv, conn, "POST", with_digest(f"/v2/{repo}/blobs/uploads/", dg), body=data,
                    headers={"Content-Type": OCTET}, expect=(201, 202))
    if st == 202:  # an upload session was opened instead; cancel it
        call(srv, conn, "DELETE", loc_path(srv, h, "POST"), expect=(204, 404))
    else:
        check_digest(srv, h, dg, "monolithic POST probe")
    conn.close()
    return st == 201


def small_image():
    """A tiny but well-formed image: one gzipped tar layer and its config."""
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tf:
        payload = b"hello from the wharf benchmark\n"
        ti = tarfile.TarInfo("etc/bench.txt")
        ti.size, ti.mtime, ti.mode = len(payload), 0, 0o644
        tf.addfile(ti, io.BytesIO(payload))
    tar = tbuf.getvalue()
    layer = gzip.compress(tar, mtime=0)
    layer_dg = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created_by": "wharf bench"}],
    }, separators=(",", ":")).encode()
    config_dg = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": SCHEMA2,
        "config": {"mediaType": CONFIG_MT, "size": len(config), "digest": config_dg},
        "layers": [{"mediaType": LAYER_MT, "size": len(layer), "digest": layer_dg}],
    }, indent=3).encode()
    return [(layer, layer_dg), (config, config_dg)], manifest


def setup_small_image(srv, repo, blobs, manifest):
    mdg = "sha256:" + hashlib.sha256(manifest).hexdigest()
    conn = conn_for(srv, timeout=30)
    for data, dg in blobs:
        push_blob_small(srv, conn, repo, data, dg)
    tags = ["latest"] + [f"v{i}" for i in range(TAGS - 1)]
    for tag in tags:
        _, h, _ = call(srv, conn, "PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                       headers={"Content-Type": SCHEMA2}, expect=(201,))
        check_digest(srv, h, mdg, f"PUT manifest {tag}")
    _, h, body = call(srv, conn, "GET", f"/v2/{repo}/manifests/latest",
                      headers={"Accept": SCHEMA2}, expect=(200,))
    check_digest(srv, h, mdg, "GET manifest latest")
    if body != manifest or h.get("content-type", "").split(";")[0] != SCHEMA2:
        raise BenchFailure(f"{srv.label}: GET manifest latest: Content-Type "
                           f"{h.get('content-type')!r}, body equal: {body == manifest}")
    _, _, body = call(srv, conn, "GET", f"/v2/{repo}/tags/list", expect=(200,))
    got = json.loads(body).get("tags") or []
    if sorted(got) != sorted(tags):
        raise BenchFailure(f"{srv.label}: tags/list has {len(got)} tags, expected {len(tags)}")
    conn.close()


def prime_memory(scratch, nbytes=None):
    """Write, then delete, a scratch file of `nbytes` just before a timed 1 GiB write.

    On this benchmark's usual home, a VM (virtio-balloon, virtio-mem, DAMON), page cache
    the guest has not used lately is expensive to get: a 1 GiB write into it costs about
    2 s of system time, several times what the disk needs. Which writer pays that depends
    on what happened to be freed a moment before, which makes the push numbers a lottery.
    Deleting a freshly written file hands every writer (dd, wharf, Distribution) the same
    warm pages, as on bare metal. (Touching anonymous memory does not: page cache wants
    the large blocks a deleted file gives back.) The data is never flushed: unlinking a
    dirty file drops it.
    """
    nbytes = PRIME if nbytes is None else nbytes
    if not nbytes:
        return
    block = bytes(IO_BLOCK)
    with open(scratch, "wb", buffering=0) as f:
        for _ in range(nbytes // IO_BLOCK):
            f.write(block)
    os.unlink(scratch)


def sync_and_prime(scratch):
    subprocess.run(["sync"], check=True)
    prime_memory(scratch)


def disk_rate(src, dst):
    """dd the 1 GiB file with conv=fdatasync, after a sync so nothing else is in flight."""
    sync_and_prime(dst + ".prime")
    t0 = time.perf_counter()
    p = subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=4M", "conv=fdatasync"],
                       capture_output=True, text=True)
    t1 = time.perf_counter()
    if p.returncode != 0:
        raise BenchFailure(f"dd failed: {p.stderr}")
    os.unlink(dst)
    return BIG / (t1 - t0) / MB


def sink_push_rate(nginx, path, size):
    """The push client's own ceiling: the same PUT streamed to nginx, which discards it."""
    conn = conn_for(nginx)
    with open(path, "rb", buffering=0) as f:
        t0 = time.perf_counter()
        call(nginx, conn, "PUT", "/sink", body=f,
             headers={"Content-Type": OCTET, "Content-Length": str(size)}, expect=(201,))
        t1 = time.perf_counter()
    conn.close()
    return size / (t1 - t0) / MB


# --- set-up ---------------------------------------------------------------------------

DIST_CONFIG = """\
# registry:2's stock config.yml, with quieter logs, deletes on and a loopback address.
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

NGINX_CONFIG = """\
{user}
worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /sink {{ client_max_body_size 0; return 201; }}
    }}
}}
"""


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.pop("WHARF_LOG", None)
    return env


# --- table ----------------------------------------------------------------------------

def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if v >= 1000:
        s = f"{v:,.0f}"
    elif v >= 100:
        s = f"{v:.0f}"
    elif v >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def render(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(r):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--registry", default="docker-registry")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", help="also write results.json and table.md here")
    ap.add_argument("--wharf-rev", help="which wharf source the binary was built from")
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    work = os.path.abspath(args.work)
    pidfile = os.path.join(work, "pids")
    data_dir = os.path.join(work, "data")
    for d in ("data", "wharf", "distribution", "nginx", "disk"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    started = time.monotonic()
    servers = []
    try:
        return run(args, work, pidfile, data_dir, servers, started)
    except BenchFailure as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for s in servers:
            s.stop()


def run(args, work, pidfile, data_dir, servers, started):
    R = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    ver = subprocess.run([args.registry, "--version"], capture_output=True, text=True).stdout.strip()
    R["distribution_version"] = ver
    R["wharf_binary"] = os.path.realpath(args.wharf)
    R["host"] = f"{os.cpu_count()} CPUs, Linux {os.uname().release}"
    R["wharf_rev"] = args.wharf_rev or "?"
    R["loadavg_start"] = open("/proc/loadavg").read().split()[0]
    log(f"distribution: {ver}")
    if "2.8.2" not in ver:
        log("warning: expected Distribution 2.8.2")

    # Data: a distinct 1 GiB blob for every timed push (a second push of the same digest
    # would take a registry's "already have it" path), hashed before any timing: two
    # random files, and copies of them differing in their first 8 bytes.
    log(f"generating {2 * PUSH_RUNS} x 1 GiB of blobs (digests computed now, outside the timings)")
    big_a, big_b = os.path.join(data_dir, "big-a"), os.path.join(data_dir, "big-b")
    dig_a = make_random_file(big_a, BIG)
    dig_b = make_random_file(big_b, BIG)
    blobs_for = {"push_mono": [(big_a, dig_a)], "push_chunked": [(big_b, dig_b)]}
    for r in range(1, PUSH_RUNS):
        for key, src in (("push_mono", big_a), ("push_chunked", big_b)):
            dst = f"{src}.{r}"
            blobs_for[key].append((dst, make_variant(src, dst, r)))

    scratch = os.path.join(work, "disk", "prime")
    log("baseline: disk write of 1 GiB with fdatasync (dd bs=4M conv=fdatasync)")
    R["disk"] = disk_rate(big_a, os.path.join(work, "disk", "x"))
    log(f"  disk: {R['disk']:.0f} MB/s")
    busy0, client0 = system_busy(), client_cpu()

    p_wharf, p_dist, p_nginx = free_ports(3)
    wenv = clean_env()
    wenv["WHARF_LOG"] = "warn"
    wharf = Server("wharf", "wharf",
                   [args.wharf, "serve", "--addr", f"127.0.0.1:{p_wharf}",
                    "--root", os.path.join(work, "wharf"), "--delete-enabled"],
                   p_wharf, work, env=wenv)
    cfg = os.path.join(work, "distribution.yml")
    with open(cfg, "w") as f:
        f.write(DIST_CONFIG.format(root=os.path.join(work, "distribution"), port=p_dist))
    dist = Server("distribution", "distribution", [args.registry, "serve", cfg], p_dist, work,
                  env=clean_env())
    ndir = os.path.join(work, "nginx")
    user = ""
    if os.geteuid() == 0:
        import grp
        import pwd
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
    with open(os.path.join(ndir, "nginx.conf"), "w") as f:
        f.write(NGINX_CONFIG.format(user=user, dir=ndir, port=p_nginx, root=data_dir))
    nginx = Server("nginx", "nginx",
                   ["nginx", "-p", ndir, "-e", os.path.join(ndir, "error.log"),
                    "-c", os.path.join(ndir, "nginx.conf")],
                   p_nginx, work)
    for s in (wharf, dist, nginx):
        servers.append(s)
        s.start(pidfile)
    wharf.wait_ready()
    dist.wait_ready()
    nginx_ready(nginx)
    log(f"wharf on :{p_wharf}, distribution on :{p_dist}, nginx on :{p_nginx}")
    regs = (wharf, dist)
    global SAMPLER
    SAMPLER = RssSampler(regs)
    SAMPLER.start()
    cpu = R["cpu"] = {}

    # 0. the push client's own ceiling
    R["push_client_ceiling"] = sink_push_rate(nginx, big_a, BIG)
    log(f"  push client -> nginx (discarding): {R['push_client_ceiling']:.0f} MB/s")

    # 1./2. big pushes: best of PUSH_RUNS, each of a distinct blob, after a sync and with
    # warm free memory (prime_memory); the order alternates so neither registry always
    # goes first.
    R["push_runs"] = {}
    for key in ("push_mono", "push_chunked"):
        R[key] = {W: 0.0, D: 0.0}
        cpu[key] = {}
        R["push_runs"][key] = {W: [], D: []}
    turn = 0
    for r in range(PUSH_RUNS):
        for key, fn, repo in (("push_mono", push_monolithic, "bench/mono"),
                              ("push_chunked", push_chunked, "bench/chunked")):
            path, dg = blobs_for[key][r]
            for srv in ((wharf, dist) if turn % 2 == 0 else (dist, wharf)):
                sync_and_prime(scratch)
                set_phase(f"{key} {srv.name}")
                cpu0 = srv.cpu()
                secs = fn(srv, repo, path, BIG, dg)
                scpu = srv.cpu() - cpu0
                set_phase("between")
                rate = BIG / secs / MB
                R["push_runs"][key][srv.name].append(rate)
                if rate > R[key][srv.name]:
                    R[key][srv.name] = rate
                    cpu[key][srv.name] = scpu
                log(f"  {key} {srv.name}: {rate:.0f} MB/s ({secs:.2f} s, server CPU {scpu})")
            turn += 1
    log("verifying both 1 GiB blobs by pulling and hashing them (untimed)")
    set_phase("verify")
    for srv in regs:
        verify_blob(srv, "bench/mono", dig_a, BIG)
        verify_blob(srv, "bench/chunked", dig_b, BIG)

    # 3. pulls: best of N, rounds interleaved across the three servers
    urls = {"wharf": f"http://127.0.0.1:{p_wharf}/v2/bench/mono/blobs/{dig_a}",
            "distribution": f"http://127.0.0.1:{p_dist}/v2/bench/mono/blobs/{dig_a}",
            "nginx": f"http://127.0.0.1:{p_nginx}/big-a"}
    for key, streams, runs in (("pull_1", 1, PULL_RUNS_1), ("pull_8", PULL_STREAMS, PULL_RUNS_8)):
        R[key] = {n: 0.0 for n in urls}
        cpu[key] = {}
        for _ in range(runs):
            for name, url in urls.items():
                srv = {"wharf": wharf, "distribution": dist, "nginx": nginx}[name]
                set_phase(f"{key} {name}")
                cpu0 = srv.cpu()
                secs, ccpu = curl_pull(name, url, streams, BIG)
                scpu = srv.cpu() - cpu0
                set_phase("between")
                rate = streams * BIG / secs / MB
                R.setdefault("pull_runs", {}).setdefault(key, {}).setdefault(name, []).append(rate)
                if rate > R[key][name]:
                    R[key][name] = rate
                    cpu[key][name] = scpu
                    cpu[key][name + " client"] = ccpu
        log(f"  {key}: " + ", ".join(f"{n} {v:.0f} MB/s" for n, v in R[key].items()))
    for srv in regs:
        srv.check_alive()

    # 4./5. manifest GET and tags list with wrk
    blobs, manifest = small_image()
    set_phase("setup")
    for srv in regs:
        setup_small_image(srv, "bench/small", blobs, manifest)
    for key, path, accept in (("manifest_get", "/v2/bench/small/manifests/latest", SCHEMA2),
                              ("tags_list", "/v2/bench/small/tags/list", None)):
        R[key] = {}
        cpu[key] = {}
        for srv in regs:
            res = run_wrk(srv, key, path, accept)
            R[key][srv.name] = res
            cpu[key][srv.name] = res["server_cpu"]
            cpu[key][srv.name + " client"] = res["client_cpu"]
            log(f"  {key} {srv.name}: {res['rps']:.0f} req/s, avg {res['latency_avg']}, "
                f"p99 {res['latency_p99']}, RSS max {res['rss_max_kb'] * 1024 / MB:.1f} MB, "
                f"server CPU {res['server_cpu']}, wrk CPU {res['client_cpu']}")

    # 6. small pushes
    R["small_modes"] = {}
    R["small"] = {}
    R["small_postput"] = {}
    cpu["small"] = {}
    for srv in regs:
        set_phase("setup")
        mono = supports_monolithic_post(srv, "bench/probe")
        R["small_modes"][srv.name] = "post" if mono else "post+put"
        set_phase(f"small {srv.name}")
        res = small_pushes(srv, "bench/small-best", R["small_modes"][srv.name])
        R["small"][srv.name] = res
        cpu["small"][srv.name] = res["server_cpu"]
        cpu["small"][srv.name + " client"] = res["client_cpu"]
        log(f"  small pushes {srv.name} ({res['mode']}): {res['rate']:.0f}/s "
            f"({res['n']} in {res['secs']:.1f} s, server CPU {res['server_cpu']}, "
            f"client CPU {res['client_cpu']})")
        if mono:
            set_phase(f"small post+put {srv.name}")
            res = small_pushes(srv, "bench/small-postput", "post+put")
            log(f"  small pushes {srv.name} (post+put): {res['rate']:.0f}/s "
                f"({res['n']} in {res['secs']:.1f} s, server CPU {res['server_cpu']})")
        R["small_postput"][srv.name] = res
    set_phase("end")

    # 7. peak RSS after the whole run
    R["hwm"] = {}
    for srv in regs:
        srv.check_alive()
        R["hwm"][srv.name] = srv.hwm_kb()
    SAMPLER.stop()
    R["rss_phases"] = {f"{n} | {ph}": kb for (n, ph), kb in SAMPLER.max_kb.items()}
    R["runtime"] = time.monotonic() - started
    R["loadavg_end"] = open("/proc/loadavg").read().split()[0]
    # CPU the machine spent outside our processes while the servers ran: kernel writeback
    # threads, and anything else running here (which would skew the numbers).
    ours = sum((s.cpu() for s in servers), Cpu()) + (client_cpu() - client0)
    R["cpu_busy_total"] = system_busy() - busy0
    R["cpu_ours"] = ours.total
    R["cpu_elsewhere"] = R["cpu_busy_total"] - ours.total

    table = report(R)
    print(table, flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(R, f, indent=2, default=str)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(table + "\n")
    return 0


def nginx_ready(nginx, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nginx.proc.poll() is not None:
            raise BenchFailure(f"nginx exited ({nginx.proc.returncode}) during start-up; "
                               f"log:\n{nginx.log_tail()}\n"
                               f"{open(os.path.join(nginx.workdir, 'nginx', 'error.log')).read()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=2)
            c.request("HEAD", "/big-a")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200 and r.getheader("Content-Length") == str(BIG):
                return
            raise BenchFailure(f"nginx: HEAD /big-a -> {r.status}, Content-Length "
                               f"{r.getheader('Content-Length')}")
        except OSError:
            time.sleep(0.05)
    raise BenchFailure(f"nginx not ready on :{nginx.port}; log:\n{nginx.log_tail()}")


W, D = "wharf", "distribution"


def report(R):
    mb = lambda kb: kb * 1024 / MB  # noqa: E731

    def status(ok):
        return "PASS" if ok else "MISS"

    def ratio(w, d):
        return f"{w / d:.2f}x" if d else "-"

    rows = []
    disk = R["disk"]
    for key, name in (("push_mono", "push 1 GiB monolithic (MB/s)"),
                      ("push_chunked", "push 1 GiB chunked, 16 MiB PATCHes (MB/s)")):
        w, d = R[key][W], R[key][D]
        rows.append([name, fmt(w), fmt(d), ratio(w, d), f"{w / disk * 100:.0f}% of disk",
                     ">= 2x dist and >= 90% disk", status(w >= 2 * d and w >= 0.9 * disk)])
    for key, name in (("pull_1", "pull 1 GiB, 1 stream (MB/s)"),
                      ("pull_8", f"pull 1 GiB, {PULL_STREAMS} streams (MB/s)")):
        w, d, n = R[key][W], R[key][D], R[key]["nginx"]
        rows.append([name, fmt(w), fmt(d), ratio(w, d), f"{w / n * 100:.0f}% of nginx",
                     ">= 95% nginx", status(w >= 0.95 * n)])
    w, d = R["manifest_get"][W]["rps"], R["manifest_get"][D]["rps"]
    rows.append(["manifest GET by tag (req/s)", fmt(w), fmt(d), ratio(w, d), "",
                 ">= 25x dist and >= 25k/s", status(w >= 25 * d and w >= 25000)])
    w, d = R["tags_list"][W]["rps"], R["tags_list"][D]["rps"]
    rows.append([f"tags list, {TAGS} tags (req/s)", fmt(w), fmt(d), ratio(w, d), "", "-", "-"])
    w, d = R["small"][W]["rate"], R["small"][D]["rate"]
    modes = R["small_modes"]
    rows.append([f"4 KiB pushes/s (wharf {modes[W]}, dist {modes[D]})", fmt(w), fmt(d),
                 ratio(w, d), "", ">= 2000/s", status(w >= 2000)])
    w, d = R["small_postput"][W]["rate"], R["small_postput"][D]["rate"]
    rows.append(["4 KiB pushes/s (both post+put)", fmt(w), fmt(d), ratio(w, d), "",
                 "-", "-"])
    w, d = mb(R["manifest_get"][W]["rss_max_kb"]), mb(R["manifest_get"][D]["rss_max_kb"])
    rows.append(["RSS during manifest GET load (MB)", fmt(w), fmt(d), ratio(w, d), "",
                 "<= 30 MB", status(w <= 30)])
    w, d = mb(R["hwm"][W]), mb(R["hwm"][D])
    rows.append(["peak RSS over the run, VmHWM (MB)", fmt(w), fmt(d), ratio(w, d), "",
                 "<= 30 MB", status(w <= 30)])
    header = ["", "wharf", "distribution", "wharf/dist", "wharf vs baseline", "target",
              "result"]
    out = [f"wharf {R['wharf_rev']} vs {R['distribution_version']}",
           f"{R['date']}; {R['host']}; load average {R['loadavg_start']} at start, "
           f"{R['loadavg_end']} at end", "",
           render(rows, header), "",
           "Baselines, same run: "
           f"disk (dd bs=4M conv=fdatasync, 1 GiB) {disk:,.0f} MB/s; "
           f"nginx sendfile pull {R['pull_1']['nginx']:,.0f} MB/s (1 stream), "
           f"{R['pull_8']['nginx']:,.0f} MB/s ({PULL_STREAMS} streams); "
           f"push client alone (the same PUT to nginx, which discards it) "
           f"{R['push_client_ceiling']:,.0f} MB/s.",
           f"MB = 10^6 bytes. Pulls are the best of {PULL_RUNS_1} (1 stream) and "
           f"{PULL_RUNS_8} ({PULL_STREAMS} streams) runs; pushes the best of {PUSH_RUNS} (distinct "
           f"blobs), each after a sync and with {PRIME >> 20} MiB of warm free memory. wrk -t{WRK_THREADS} -c{WRK_CONNS} "
           f"-d{WRK_SECS}s. Small pushes: {SMALL_THREADS} threads, {SMALL_N} blobs or "
           f"{SMALL_SECS:.0f} s.",
           ""]
    cpu = R["cpu"]
    crow = []
    for key, label in (("push_mono", "push monolithic"), ("push_chunked", "push chunked"),
                       ("pull_1", "pull 1 stream (best run)"),
                       ("pull_8", f"pull {PULL_STREAMS} streams (best run)"),
                       ("manifest_get", "manifest GET (wrk)"), ("tags_list", "tags list (wrk)"),
                       ("small", "4 KiB pushes")):
        c = cpu.get(key, {})
        f = lambda k: str(c[k]) if k in c else "-"  # noqa: E731
        crow.append([label, f(W), f(D), f("nginx"), f(W + " client"), f(D + " client")])
    out.append("CPU time of each test's best run (2 CPUs, shared by the server and the client):")
    out.append(render(crow, ["test", "wharf", "distribution", "nginx", "client, wharf run",
                             "client, dist run"]))
    out.append("")
    phases = {}
    for k, kb in R["rss_phases"].items():
        name, phase = k.split(" | ", 1)
        if phase.endswith(" " + name):
            phase = phase[: -len(name) - 1]
        elif phase.rsplit(" ", 1)[-1] in (W, D, "nginx"):
            continue  # another server's turn
        phases.setdefault(phase, {})[name] = max(phases.get(phase, {}).get(name, 0), kb)
    prow = [[ph, fmt(mb(v[W]) if v.get(W) else None), fmt(mb(v[D]) if v.get(D) else None)]
            for ph, v in phases.items() if ph != "between"]
    out.append("Largest RSS (MB) sampled every 50 ms in each phase, during each server's own turn:")
    out.append(render(prow, ["phase", "wharf", "distribution"]))
    out.append("")
    out.append("Every push and pull run (MB/s), in the order run:")
    for key, runs in list(R["push_runs"].items()) + list(R["pull_runs"].items()):
        out.append(f"  {key}: " + "; ".join(
            f"{n} " + " ".join(f"{v:,.0f}" for v in vals) for n, vals in runs.items()))
    out.append("")
    out.append(f"Machine CPU while the servers ran: {R['cpu_busy_total']:.0f} s busy, "
               f"{R['cpu_ours']:.0f} s in the servers and the benchmark's own processes, "
               f"{R['cpu_elsewhere']:.0f} s elsewhere (kernel writeback threads and anything "
               f"else on the machine). Total runtime {R['runtime']:.0f} s.")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
