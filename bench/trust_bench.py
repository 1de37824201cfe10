#!/usr/bin/env python3
"""Signing and verifying a 10-platform index: `wharf sign` and `wharf verify`, with two
reference points measured in the same run on the same `wharf serve`:
- `skopeo inspect --raw` of the same index: another client's cheapest read of it (one
  process start, one manifest GET). A verifier must at least do this much.
- `wharf digest`: wharf's own floor, a process start and one HEAD.
No signing peer can run here: cosign and notation have no Debian package, and Debian's
skopeo is built with sigstore signing disabled ("Debian-local change: sigstore
disabled"), so the ratios are against reading the index, not against another signer.

Each sign is of a freshly pushed index (10 platform manifests with tiny layers: the cost
measured is the signature's, not the image's), so none finds a signature to add to.

Usage: trust_bench.py --wharf BIN --work DIR [--runs N]. Exit 0 when everything ran,
1 when something failed (a tool exited non-zero, a verification did not verify).
"""

import argparse
import hashlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import time

from auth import free_port, log, wait_up

PASSWORD = "bench password"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
PLATFORMS = [("linux", a) for a in
             ["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64", "mips"]]


class Failure(Exception):
    pass


def request(port, method, path, body=b"", headers=None, expect=(200, 201, 202)):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if r.status not in expect:
        raise Failure(f"{method} {path}: {r.status} {data[:200]!r}")
    return r, data


def put_blob(port, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    request(port, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", data,
            {"Content-Type": "application/octet-stream"})
    return digest


def push_index(port, repo, tag, salt):
    entries = []
    for os_, arch in PLATFORMS:
        layer = f"{salt} {os_}/{arch}".encode()
        config = json.dumps({"architecture": arch, "os": os_, "rootfs": {"type": "layers",
                             "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": put_blob(port, repo, config), "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                           "digest": put_blob(port, repo, layer), "size": len(layer)}]}).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        request(port, "PUT", f"/v2/{repo}/manifests/{digest}", manifest, {"Content-Type": MANIFEST})
        entries.append({"mediaType": MANIFEST, "digest": digest, "size": len(manifest),
                        "platform": {"os": os_, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}).encode()
    request(port, "PUT", f"/v2/{repo}/manifests/{tag}", index, {"Content-Type": INDEX})
    return "sha256:" + hashlib.sha256(index).hexdigest()


def timed(argv, env=None, expect_ok=True):
    start = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, env=env)
    took = time.perf_counter() - start
    if expect_ok and p.returncode != 0:
        raise Failure(f"{argv[:4]}...: {p.stderr.decode()[-400:]}")
    return took, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    port = free_port()
    host = f"127.0.0.1:{port}"
    server = subprocess.Popen([args.wharf, "serve", "--addr", host, "--root", f"{work}/root"],
                              stdout=subprocess.DEVNULL, stderr=open(f"{work}/serve.log", "w"),
                              env={**os.environ, "WHARF_LOG": "warn"})
    try:
        wait_up(port, server, "wharf")
        return run(args, work, port, host)
    except Failure as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        server.terminate()
        server.wait()


def run(args, work, port, host):
    env = {**os.environ, "COSIGN_PASSWORD": PASSWORD, "DOCKER_CONFIG": f"{work}/docker"}
    for f in ("cosign.key", "cosign.pub"):
        if os.path.exists(f"{work}/{f}"):
            os.remove(f"{work}/{f}")
    subprocess.run([args.wharf, "key", "generate"], cwd=work, env=env, check=True)
    wharf = [args.wharf, "--insecure"]
    times = {k: [] for k in ("wharf sign", "wharf verify", "skopeo inspect --raw", "wharf digest")}
    for i in range(args.runs):
        repo = f"bench/index-{i}"
        push_index(port, repo, "v1", f"run {i}")
        image = f"{host}/{repo}:v1"
        t, _ = timed(wharf + ["sign", "--key", f"{work}/cosign.key", image], env)
        times["wharf sign"].append(t)
        t, p = timed(wharf + ["verify", "--key", f"{work}/cosign.pub", image], env)
        if b"Verified" not in p.stdout:
            raise Failure(f"wharf verify printed {p.stdout!r}")
        times["wharf verify"].append(t)
        t, _ = timed(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"], env)
        times["skopeo inspect --raw"].append(t)
        t, _ = timed(wharf + ["digest", image], env)
        times["wharf digest"].append(t)
    report(args, times)
    return 0


def report(args, times):
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    peer = med["skopeo inspect --raw"]
    print(f"\n10-platform index, {args.runs} runs each, median ms (ratio: time / skopeo inspect --raw):")
    print("| operation | median (ms) | vs skopeo inspect --raw |")
    print("|---|---|---|")
    for k in times:
        print(f"| {k} | {med[k]:.0f} | {med[k] / peer:.2f}x |")
    for k, v in times.items():
        print(f"{k}: " + ", ".join(f"{x * 1000:.0f}" for x in v))


if __name__ == "__main__":
    sys.exit(main())
