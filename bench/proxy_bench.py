#!/usr/bin/env python3
"""Pull-through cache: a wharf mirror against Distribution 2.8.2 in proxy mode, both
mirroring the same upstream (a plain `wharf serve`), in one run.

An image of 8 gzip layers of random data (128 MiB each by default, about 1 GiB) plus its
config is pushed to the upstream. Each measurement starts the mirror under test on an
empty root (`proxy: remoteurl:` for both), so every pull is cold unless said otherwise:

- cold pull: the manifest, then every blob with 4 parallel GETs (as docker pulls), read
  to the end and discarded; best of N runs;
- time to first byte of a cold layer: GET of one uncached layer, until its first body
  byte; best of N;
- upstream bytes for 8 concurrent cold pulls of the image: blob bytes the upstream's
  access log shows it served (200s, by digest), against the image's size;
- warm pull: the same pull again from the filled wharf mirror, against the same pull from
  a plain wharf that holds the image (the upstream itself);
- direct pull (issue 20): the same pull from the upstream itself, next to each cold pull,
  which a cold mirror should come within 1.1x of; and the transparent mirror (issue 24:
  `proxy.upstreams: [{host: upstream.test, remoteurl: ...}]`, requests with
  `?ns=upstream.test` as containerd sends them) cold, against the same direct pull.

Usage: proxy_bench.py --wharf BIN --work DIR [--pids FILE] [--runs N] [--layers N] [--layer-mib N]
BENCH_QUICK=1: 2 layers of 16 MiB, 1 run (a smoke run of the script). Standard library only.
Exit 0 when everything ran (targets met or not), 1 when something failed.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from auth import free_port, log  # noqa: E402
from bench import sync_and_prime
from copy_bench import OCI_CONFIG, OCI_MANIFEST, OCI_LAYER, Failure, make_layer, push_blob, request

MB = 1e6
PARALLEL = 4


class Server:
    """A registry process on an empty root; `proxy` is a remote URL to mirror."""

    def __init__(self, kind, wharf, work, name, pidfile, proxy=None, access_log=False, host=None):
        self.kind, self.root = kind, os.path.join(work, name)
        os.makedirs(self.root)
        self.port = free_port()
        self.log_path = os.path.join(work, f"{name}.log")
        cfg = os.path.join(work, f"{name}.yml")
        level = "info" if access_log else "error"
        text = (f"version: 0.1\nlog:\n  level: {level}\n  accesslog:\n    disabled: {str(not access_log).lower()}\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n")
        if proxy and host:
            text += f"proxy:\n  upstreams:\n    - host: {host}\n      remoteurl: {proxy}\n"
        elif proxy:
            text += f"proxy:\n  remoteurl: {proxy}\n"
        with open(cfg, "w") as f:
            f.write(text)
        argv = [wharf, "serve", cfg] if kind == "wharf" else ["docker-registry", "serve", cfg]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env["WHARF_LOG"] = level
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "w"), env=env)
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise Failure(f"{kind} ({name}) exited early with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise Failure(f"{kind} ({name}) did not listen on {self.port}")
                time.sleep(0.05)

    def cpu(self):
        """User + system CPU seconds the process has used."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def get_blob(port, repo, digest, size, first_byte=None, query=""):
    """GET a blob to the end, checking its size and digest; seconds to the first byte."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("GET", f"/v2/{repo}/blobs/{digest}{query}")
    r = c.getresponse()
    if r.status != 200:
        raise Failure(f":{port} GET blob {digest} -> {r.status} {r.read()[:300]!r}")
    h, n, ttfb = hashlib.sha256(), 0, None
    while True:
        chunk = r.read1(1 << 20)
        if not chunk:
            break
        if ttfb is None:
            ttfb = time.perf_counter() - t0
        h.update(chunk)
        n += len(chunk)
    c.close()
    if n != size or "sha256:" + h.hexdigest() != digest:
        raise Failure(f":{port} served {n} bytes for {digest} ({size} expected) or wrong content")
    return ttfb


def pull(port, repo, tag, blobs, query=""):
    """A docker-like pull: the manifest, then the blobs 4 at a time. Seconds."""
    t0 = time.perf_counter()
    request(port, "GET", f"/v2/{repo}/manifests/{tag}{query}", headers={"Accept": OCI_MANIFEST})
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as ex:
        list(ex.map(lambda b: get_blob(port, repo, b[0], b[1], query=query), blobs))
    return time.perf_counter() - t0


def upstream_blob_bytes(log_text, sizes):
    """Blob bytes the upstream's access log shows it served."""
    total = 0
    for m in re.finditer(r"method=GET path=\S+/blobs/(sha256:[0-9a-f]{64}) status=200", log_text):
        total += sizes.get(m.group(1), 0)
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_PROXY_RUNS", "2")))
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--layer-mib", type=int, default=int(os.environ.get("BENCH_PROXY_LAYER_MIB", "128")))
    ap.add_argument("--pids", help="append the servers' pids here (bench/run's backstop)")
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if os.environ.get("BENCH_QUICK"):
        args.runs, args.layers, args.layer_mib = 1, 2, 16
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    pidfile = args.pids or os.path.join(work, "pids")
    servers = []
    try:
        return run(args, work, pidfile, servers)
    except Failure as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.stop()


def run(args, work, pidfile, servers):
    wharf = os.path.realpath(args.wharf)
    if shutil.which("docker-registry") is None:
        raise Failure("'docker-registry' not found: apt-get install docker-registry")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    up = Server("wharf", wharf, work, "upstream", pidfile, access_log=True)
    servers.append(up)
    repo, tag = "bench/app", "v1"
    log(f"making {args.layers} layers of {args.layer_mib} MiB and pushing them to the upstream")
    layers, diff_ids = [], []
    for i in range(args.layers):
        path = os.path.join(work, f"layer-{i}.tar.gz")
        digest, size, diff_id = make_layer(path, i, args.layer_mib << 20)
        with open(path, "rb", buffering=0) as f:
            push_blob(up.port, repo, digest, size, f)
        os.unlink(path)
        layers.append({"mediaType": OCI_LAYER, "digest": digest, "size": size})
        diff_ids.append(diff_id)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    push_blob(up.port, repo, config_digest, len(config), config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                      "size": len(config)},
                           "layers": layers}).encode()
    request(up.port, "PUT", f"/v2/{repo}/manifests/{tag}", manifest,
            {"Content-Type": OCI_MANIFEST}, (201,))
    blobs = [(config_digest, len(config))] + [(l["digest"], l["size"]) for l in layers]
    sizes = dict(blobs)
    total = sum(sizes.values())
    remote = f"http://127.0.0.1:{up.port}"
    log(f"image: {total / MB:,.0f} MB in {len(blobs)} blobs")

    kinds = ["wharf", "distribution"]
    cold = {k: [] for k in kinds + ["transparent", "direct"]}
    cold_cpu = {k: [] for k in kinds}
    ttfb = {k: [] for k in kinds}
    fanout = {}
    n = 0

    def mirror(kind, host=None):
        nonlocal n
        n += 1
        s = Server(kind, wharf, work, f"{kind}-mirror-{n}", pidfile, proxy=remote, host=host)
        servers.append(s)
        return s

    def done(s):
        s.stop()
        servers.remove(s)

    ns = "upstream.test"
    for r in range(args.runs):
        # The peer a mirror cannot beat: the same pull from the upstream, in this run.
        sync_and_prime(os.path.join(work, "prime.scratch"))
        secs = pull(up.port, repo, tag, blobs)
        cold["direct"].append(secs)
        log(f"run {r + 1} direct pull from the upstream  : {secs:6.2f} s {total / secs / MB:7,.0f} MB/s")
        m = mirror("wharf", host=ns)
        sync_and_prime(os.path.join(work, "prime.scratch"))
        secs = pull(m.port, repo, tag, blobs, query=f"?ns={ns}")
        cold["transparent"].append(secs)
        log(f"run {r + 1} cold pull via transparent mirror (host:, ?ns=): {secs:6.2f} s {total / secs / MB:7,.0f} MB/s")
        done(m)
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            m = mirror(kind)
            sync_and_prime(os.path.join(work, "prime.scratch"))
            cpu0, up0 = m.cpu(), up.cpu()
            secs = pull(m.port, repo, tag, blobs)
            cold[kind].append(secs)
            cold_cpu[kind].append((m.cpu() - cpu0, up.cpu() - up0))
            log(f"run {r + 1} cold pull via {kind:12}: {secs:6.2f} s {total / secs / MB:7,.0f} MB/s; "
                f"CPU s: mirror {cold_cpu[kind][-1][0]:.2f}, upstream {cold_cpu[kind][-1][1]:.2f}")
            done(m)
            m = mirror(kind)
            request(m.port, "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            big = layers[0]
            t = get_blob(m.port, repo, big["digest"], big["size"])
            ttfb[kind].append(t)
            log(f"run {r + 1} first byte of a cold {big['size'] / MB:,.0f} MB layer via {kind:12}: {t * 1000:8.1f} ms")
            done(m)

    for kind in kinds:
        m = mirror(kind)
        before = len(open(up.log_path).read())
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda _: pull(m.port, repo, tag, blobs), range(8)))
        fetched = upstream_blob_bytes(open(up.log_path).read()[before:], sizes)
        fanout[kind] = fetched
        log(f"8 concurrent cold pulls via {kind:12}: upstream served {fetched / MB:,.0f} MB "
            f"({fetched / total:.2f}x the image)")
        if kind == "wharf":
            warm_mirror = m
        else:
            done(m)

    warm, plain = [], []
    for r in range(max(args.runs, 3)):
        sync_and_prime(os.path.join(work, "prime.scratch"))
        warm.append(pull(warm_mirror.port, repo, tag, blobs))
        sync_and_prime(os.path.join(work, "prime.scratch"))
        plain.append(pull(up.port, repo, tag, blobs))
        log(f"run {r + 1} warm pull: mirror {total / warm[-1] / MB:7,.0f} MB/s, "
            f"plain wharf {total / plain[-1] / MB:7,.0f} MB/s")
    done(warm_mirror)

    wharf_ver = subprocess.run([wharf, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\npull-through cache: {wharf_ver} vs docker-registry 2.8.2 (proxy.remoteurl), same "
          f"upstream (wharf serve); {date}; {os.cpu_count()} CPUs, load average {load:.2f} at "
          f"start, {os.getloadavg()[0]:.2f} at end")
    print(f"image: {len(layers)} layers x {args.layer_mib} MiB (gzip, random) + config, "
          f"{total / MB:,.0f} MB; best of {args.runs} runs, each mirror on an empty root\n")
    print("|                                              | wharf | distribution | ratio | target | result |")
    print("|----------------------------------------------|-------|--------------|-------|--------|--------|")
    w, d = min(cold["wharf"]), min(cold["distribution"])
    print(f"| cold pull (s)                                | {w:.2f} | {d:.2f} | {d / w:.2f}x faster | >= 1.5x | {'PASS' if d / w >= 1.5 else 'MISS'} |")
    w, d = min(ttfb["wharf"]), min(ttfb["distribution"])
    # The target assumes Distribution buffers the layer before its first byte; a first byte
    # in well under the layer's transfer time shows it streams, so the target does not apply.
    buffers = d > 0.25
    result = ('PASS' if w / d <= 0.1 else 'MISS') if buffers else 'n/a: dist streams too'
    print(f"| first byte of a cold layer (ms)              | {w * 1000:.1f} | {d * 1000:.1f} | {w / d:.3f} of dist | <= 0.1 (if dist buffers) | {result} |")
    w, d = fanout["wharf"], fanout["distribution"]
    print(f"| upstream bytes, 8 concurrent cold pulls (x image) | {w / total:.2f} | {d / total:.2f} | | 1.00x | {'PASS' if w == total else 'MISS'} |")
    wm, pm = total / min(warm) / MB, total / min(plain) / MB
    direct = min(cold["direct"])
    for label, secs in (("cold pull via wharf (prefixless remoteurl)", min(cold["wharf"])),
                        ("cold pull via transparent mirror (host:, ?ns=)", min(cold["transparent"])),
                        ("cold pull via distribution", min(cold["distribution"]))):
        ratio = secs / direct
        print(f"| {label} vs direct ({direct:.2f} s) | {secs:.2f} | | {ratio:.2f}x direct | <= 1.1x (wharf) | "
              f"{('PASS' if ratio <= 1.1 else 'MISS') if 'distribution' not in label else 'peer'} |")
    print(f"| warm pull (MB/s), mirror vs plain wharf      | {wm:,.0f} | plain {pm:,.0f} | {wm / pm:.2f} | within 10% | {'PASS' if wm >= 0.9 * pm else 'MISS'} |")
    print("CPU s of the mirror in each cold pull: " + "; ".join(
        f"{k} " + ", ".join(f"{c[0]:.2f}" for c in cold_cpu[k]) for k in kinds))
    print("all cold pulls (s): " + "; ".join(f"{k} " + ", ".join(f"{x:.2f}" for x in cold[k]) for k in cold))
    print("all first bytes (ms): " + "; ".join(f"{k} " + ", ".join(f"{x * 1000:.1f}" for x in ttfb[k]) for k in kinds))
    print("all warm pulls (MB/s): mirror " + ", ".join(f"{total / x / MB:,.0f}" for x in warm)
          + "; plain " + ", ".join(f"{total / x / MB:,.0f}" for x in plain))
    up.stop()
    servers.remove(up)
    return 0


if __name__ == "__main__":
    sys.exit(main())
