#!/usr/bin/env python3
"""Cost of a `trust:` enforce rule, measured against no rule on the same `wharf serve`,
in one run.

- Manifest GET/s: `wrk -t2 -c32 -d10s` on a signed image's manifest by tag in `prod/`
  (an enforce rule; every GET reads the signature tag and referrers to key the cached
  verdict) and on the same image in `plain/` (no rule), alternating which goes first,
  best of 2. Target: with the rule >= 0.8x without.
- First pull of a freshly signed image: a new image is pushed and signed (`wharf sign`,
  the .sig tag), then its first GET is timed (verification runs, nothing is cached);
  against the first GET of a fresh unsigned image in `plain/`. Median of 20 each.
  Target: added latency <= 10 ms.

Usage: trust_enforce_bench.py --wharf BIN [--work DIR]
Needs wrk. Standard library only. Exit 0 when everything ran; 1 on an error status.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PASSWORD = "bench"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None, headers=None, expect=(200, 201, 202)):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status not in expect:
        sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
    return r, data


def put_blob(port, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    call(port, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data,
         headers={"Content-Length": str(len(data))})
    return digest, len(data)


def push_image(port, repo, tag, seed):
    """A one-layer OCI image; returns its manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    cd, cs = put_blob(port, repo, config)
    ld, ls = put_blob(port, repo, f"layer {seed}".encode().ljust(4096, b"x"))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": ACCEPT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}],
    }).encode()
    call(port, "PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
         headers={"Content-Type": ACCEPT})
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def sign(wharf, key, port, ref):
    env = dict(os.environ, COSIGN_PASSWORD=PASSWORD)
    subprocess.run([wharf, "--insecure", "sign", "--key", key, f"127.0.0.1:{port}/{ref}"],
                   env=env, check=True, stdout=subprocess.DEVNULL)


def wrk(port, path):
    out = subprocess.run(
        ["wrk", "-t2", "-c32", "-d10s", "-H", f"Accept: {ACCEPT}", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        sys.exit(f"wrk {path}: error statuses\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def first_get_ms(port, repo, tag):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    t = time.perf_counter()
    conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    r = conn.getresponse()
    r.read()
    took = (time.perf_counter() - t) * 1000
    if r.status != 200:
        sys.exit(f"first GET {repo}:{tag}: {r.status}")
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    work = args.work or tempfile.mkdtemp(prefix="trust-bench-")
    env = dict(os.environ, COSIGN_PASSWORD=PASSWORD)
    subprocess.run([args.wharf, "key", "generate"], cwd=work, env=env, check=True,
                   stderr=subprocess.DEVNULL)
    key, pub = os.path.join(work, "cosign.key"), os.path.join(work, "cosign.pub")
    port = free_port()
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {work}/data\n"
                f"http:\n  addr: 127.0.0.1:{port}\n"
                f"trust:\n  - repositories: [\"prod/*\"]\n    mode: enforce\n    keys: [{pub}]\n")
    server = subprocess.Popen([args.wharf, "serve", config], stderr=open(os.path.join(work, "wharf.log"), "w"))
    try:
        for _ in range(100):
            try:
                call(port, "GET", "/v2/")
                break
            except OSError:
                time.sleep(0.1)
        push_image(port, "prod/app", "v1", "hot")
        push_image(port, "plain/app", "v1", "hot")
        sign(args.wharf, key, port, "prod/app:v1")
        call(port, "GET", "/v2/prod/app/manifests/v1", headers={"Accept": ACCEPT})
        rates = {"rule": [], "none": []}
        for rnd in range(2):
            order = [("rule", "/v2/prod/app/manifests/v1"), ("none", "/v2/plain/app/manifests/v1")]
            for name, path in (order if rnd == 0 else order[::-1]):
                rates[name].append(wrk(port, path))
        rule, none = max(rates["rule"]), max(rates["none"])
        signed, plain = [], []
        for i in range(20):
            push_image(port, "prod/fresh", f"t{i}", f"fresh-{i}")
            sign(args.wharf, key, port, f"prod/fresh:t{i}")
            signed.append(first_get_ms(port, "prod/fresh", f"t{i}"))
            push_image(port, "plain/fresh", f"t{i}", f"fresh-{i}")
            plain.append(first_get_ms(port, "plain/fresh", f"t{i}"))
        s, p = statistics.median(signed), statistics.median(plain)
        load = os.getloadavg()[0]
        print(f"trust_enforce_bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load:.2f}")
        print("| measure | enforce rule | no rule | ratio / added | target | result |")
        print("|---|---|---|---|---|---|")
        ok1 = rule >= 0.8 * none
        print(f"| manifest GET by tag, cached verdict (req/s) | {rule:,.0f} | {none:,.0f} | {rule / none:.2f}x | >= 0.8x | {'PASS' if ok1 else 'MISS'} |")
        ok2 = s - p <= 10
        print(f"| first GET of a freshly signed image, median of 20 (ms) | {s:.2f} | {p:.2f} | +{s - p:.2f} ms | <= 10 ms | {'PASS' if ok2 else 'MISS'} |")
        print(f"all runs (req/s): rule {', '.join(f'{r:,.0f}' for r in rates['rule'])}; none {', '.join(f'{r:,.0f}' for r in rates['none'])}")
    finally:
        server.terminate()
        server.wait()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
