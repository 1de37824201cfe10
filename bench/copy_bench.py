#!/usr/bin/env python3
"""Registry-to-registry copy: `wharf copy` against `skopeo copy`, same image, same servers.

A multi-layer image (8 gzip layers of 128 MiB of random data by default, about 1 GiB, plus
its config) is pushed once to a source `wharf serve`. Each timed run copies it to a fresh
destination registry (a new server on an empty root, so no run finds blobs left by an
earlier one), with `wharf copy` and `skopeo copy --preserve-digests` in turn, both over
plain http on loopback. Destinations: `wharf serve`, and Distribution 2.8.2. Best of N
runs each; before every run the page cache is primed as in bench.py. After each run the
destination must serve the source's manifest digest, or the benchmark fails.

Usage: copy_bench.py --wharf BIN --work DIR [--pids FILE] [--runs N] [--layers N] [--layer-mib N]
BENCH_QUICK=1 makes it a smoke run (2 layers of 16 MiB, 1 run). Standard library only.
Not named copy.py: that would shadow the standard library's `copy` module for every
script in this directory. Exit 0 when everything ran (target met or not), 1 when
something failed. Also prints each tool's CPU time and the servers', to show where time
goes.
"""

import argparse
import datetime
import gzip
import hashlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

from auth import free_port, log  # noqa: E402  shared with the authenticated bench
from bench import sync_and_prime  # the main bench's fix for this VM's cold page cache

MB = 1e6
BLOCK = 4 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET = 1.5  # wharf copy at least this many times skopeo's throughput


class Failure(Exception):
    pass


class Hashing:
    """A write-only file object that hashes (and counts) what passes on to `inner`."""

    def __init__(self, inner):
        self.inner, self.h, self.n = inner, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.inner.write(b) if self.inner is not None else len(b)

    def flush(self):
        pass

    def digest(self):
        return "sha256:" + self.h.hexdigest()


def make_layer(path, index, size):
    """A tar.gz holding one file of `size` random bytes. gzip level 0 (stored blocks) keeps
    it quick to make; it is still gzip, so skopeo keeps it as it is.
    Returns (digest of the .tar.gz, its size, diff_id of the tar)."""
    with open(path, "wb") as out, open("/dev/urandom", "rb") as rnd:
        blob = Hashing(out)
        gz = gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=0, mtime=0)
        tar_h = Hashing(gz)
        with tarfile.open(fileobj=tar_h, mode="w|", bufsize=BLOCK) as tar:
            info = tarfile.TarInfo(f"data/layer-{index}.bin")
            info.size, info.mode, info.mtime = size, 0o644, 0
            tar.addfile(info, rnd)
        gz.close()
    return blob.digest(), blob.n, tar_h.digest()


def request(port, method, path, body=None, headers=None, expect=(200,)):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=BLOCK)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status not in expect:
        raise Failure(f":{port} {method} {path} -> {r.status} {data[:300]!r}")
    return r, data


def push_blob(port, repo, digest, size, body):
    r, _ = request(port, "POST", f"/v2/{repo}/blobs/uploads/", b"", {"Content-Length": "0"}, (202,))
    loc = r.getheader("Location")
    loc = loc[loc.index("/v2/"):] if "://" in loc else loc
    request(port, "PUT", loc + ("&" if "?" in loc else "?") + "digest=" + digest, body,
            {"Content-Length": str(size), "Content-Type": "application/octet-stream"}, (201,))


def manifest_digest(port, repo, tag):
    r, _ = request(port, "HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    return r.getheader("Docker-Content-Digest")


class Server:
    """`wharf serve` or Distribution's `docker-registry serve` on an empty root."""

    def __init__(self, kind, wharf, work, name, pidfile):
        self.root = os.path.join(work, name)
        os.makedirs(self.root)
        self.port = free_port()
        cfg = os.path.join(work, f"{name}.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n")
        argv = [wharf, "serve", cfg] if kind == "wharf" else ["docker-registry", "serve", cfg]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(work, f"{name}.log"), "w"),
                                     env={**env, "WHARF_LOG": "warn"})
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

    def host(self):
        return f"127.0.0.1:{self.port}"

    def cpu(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self, remove=True):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def timed(argv, env):
    """Run argv; (seconds, user+system CPU seconds of it). Fails on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    secs = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise Failure(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return secs, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_COPY_RUNS", "3")))
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--layer-mib", type=int, default=int(os.environ.get("BENCH_COPY_LAYER_MIB", "128")))
    ap.add_argument("--no-distribution", action="store_true",
                    help="only wharf serve as the destination")
    ap.add_argument("--pids", help="append the servers' pids here (bench/run's backstop)")
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)  # so the servers are stopped on the way out
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if os.environ.get("BENCH_QUICK"):  # a smoke run of the script itself, not a measurement
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
                s.stop(remove=False)


def run(args, work, pidfile, servers):
    wharf = os.path.realpath(args.wharf)
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            raise Failure(f"'{tool}' not found: apt-get install {tool}")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    skopeo_ver = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0]

    src = Server("wharf", wharf, work, "src", pidfile)
    servers.append(src)
    repo, tag = "bench/app", "v1"
    layer_bytes = args.layer_mib << 20
    log(f"making {args.layers} layers of {args.layer_mib} MiB random data and pushing them to {src.host()}")
    layers, diff_ids = [], []
    for i in range(args.layers):
        path = os.path.join(work, f"layer-{i}.tar.gz")
        digest, size, diff_id = make_layer(path, i, layer_bytes)
        with open(path, "rb", buffering=0) as f:
            push_blob(src.port, repo, digest, size, f)
        os.unlink(path)  # the source registry has it now
        layers.append({"mediaType": OCI_LAYER, "digest": digest, "size": size})
        diff_ids.append(diff_id)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    push_blob(src.port, repo, config_digest, len(config), config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                      "size": len(config)},
                           "layers": layers}).encode()
    request(src.port, "PUT", f"/v2/{repo}/manifests/{tag}", manifest,
            {"Content-Type": OCI_MANIFEST}, (201,))
    want = manifest_digest(src.port, repo, tag)
    total = sum(layer["size"] for layer in layers) + len(config)
    log(f"source image {want}: {total / MB:,.0f} MB in {len(layers) + 1} blobs")

    # Neither tool may pick up credentials or settings from the machine.
    cfg_dir = os.path.join(work, "docker-config")
    os.makedirs(cfg_dir, exist_ok=True)
    auth_file = os.path.join(cfg_dir, "auth.json")
    with open(auth_file, "w") as f:
        f.write('{"auths":{}}')
    env = {k: v for k, v in os.environ.items()
           if k not in ("REPO_USER", "REPO_PASS", "WHARF_INSECURE_REGISTRIES", "WHARF_REGISTRY_CA")}
    env.update(DOCKER_CONFIG=cfg_dir, REGISTRY_AUTH_FILE=auth_file)

    def wharf_copy(s, d):
        return [wharf, "--insecure", "copy", "--quiet", s, d]

    def skopeo_copy(s, d):
        return ["skopeo", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
                "--dest-tls-verify=false", f"docker://{s}", f"docker://{d}"]

    tools = [("wharf", wharf_copy), ("skopeo", skopeo_copy)]
    kinds = ["wharf"] + ([] if args.no_distribution else ["distribution"])
    results = {(k, t): [] for k in kinds for t, _ in tools}
    n = 0
    for r in range(args.runs):
        for kind in kinds:
            # Alternate which tool goes first, so neither always gets the warmer machine.
            order = tools if r % 2 == 0 else tools[::-1]
            for name, argv_of in order:
                n += 1
                dst = Server(kind, wharf, work, f"dst-{n}", pidfile)
                servers.append(dst)
                sync_and_prime(os.path.join(work, "prime.scratch"))
                src_cpu0, dst_cpu0 = src.cpu(), dst.cpu()
                target = f"{dst.host()}/run{n}/app:{tag}"
                secs, cpu = timed(argv_of(f"{src.host()}/{repo}:{tag}", target), env)
                src_cpu, dst_cpu = src.cpu() - src_cpu0, dst.cpu() - dst_cpu0
                got = manifest_digest(dst.port, f"run{n}/app", tag)
                if got != want:
                    raise Failure(f"{name} copy to {kind}: destination serves {got}, source {want}")
                rate = total / secs / MB
                results[(kind, name)].append((rate, secs, cpu, src_cpu, dst_cpu))
                log(f"run {r + 1} {name:6} -> {kind:12}: {secs:6.2f} s {rate:7,.0f} MB/s; CPU s: "
                    f"client {cpu:.2f}, source {src_cpu:.2f}, destination {dst_cpu:.2f}")
                dst.stop()
                servers.remove(dst)

    wharf_ver = subprocess.run([wharf, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\nwharf copy ({wharf_ver}) vs {skopeo_ver}; {date}; {os.cpu_count()} CPUs, "
          f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"image: {len(layers)} layers x {args.layer_mib} MiB (gzip) + config, "
          f"{total / MB:,.0f} MB; best of {args.runs} runs, each to a fresh registry\n")
    # The target is for wharf serve on both ends. Into Distribution, its own CPU (several
    # times wharf's for the same bytes) bounds both tools, so that line is for reference.
    print("| destination  | wharf copy (MB/s) | skopeo copy (MB/s) | wharf/skopeo | "
          "client CPU s, wharf / skopeo | destination CPU s, wharf / skopeo | target | result |")
    print("|--------------|-------------------|--------------------|--------------|"
          "------------------------------|-----------------------------------|--------|--------|")
    for kind in kinds:
        w, s = max(results[(kind, "wharf")]), max(results[(kind, "skopeo")])
        ratio = w[0] / s[0]
        target, result = (f">= {TARGET}x", "PASS" if ratio >= TARGET else "MISS") if kind == "wharf" else ("-", "-")
        print(f"| {kind:12} | {w[0]:17,.0f} | {s[0]:18,.0f} | {ratio:11.2f}x | "
              f"{w[2]:.2f} / {s[2]:.2f} | {w[4]:.2f} / {s[4]:.2f} | {target} | {result} |")
    for kind in kinds:
        for name, _ in tools:
            runs = ", ".join(f"{x[0]:,.0f}" for x in results[(kind, name)])
            print(f"all runs {name} -> {kind} (MB/s): {runs}")
    src.stop()
    servers.remove(src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
