#!/usr/bin/env python3
"""Replication and pull sync, measured in one run against peers on this machine.

1. Lag: wharf A replicates to wharf B (`replication:`); 100 small images are pushed to A
   over HTTP, and each push's lag is the time from A's 201 on the manifest to B serving
   it (HEAD polled every 5 ms). p50 and p99.
2. Sync: Distribution 2.8.2, behind nginx (whose log counts the bytes it sends), holds a
   namespace of 20 repositories with 10 tags each (each image: a 1 MiB base layer shared by
   all, and a 256 KiB layer of its own). `wharf replicate sync` into an empty wharf store
   against `skopeo sync --src yaml` into an empty `wharf serve`: wall time and bytes
   fetched from the upstream. Target: wharf >= 2x faster, with fewer bytes.

Usage: replication_bench.py --wharf BIN [--work DIR]. Standard library only.
Exit 0 when everything ran (target met or not), 1 when something failed.
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_up(port, proc, what):
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v2/")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def req(port, method, path, body=None, headers=None, expect=(200, 201, 202)):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if r.status not in expect:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return r, data


def push_blob(port, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r, _ = req(port, "HEAD", f"/v2/{repo}/blobs/{d}", expect=(200, 404))
    if r.status == 200:
        return d
    r, _ = req(port, "POST", f"/v2/{repo}/blobs/uploads/")
    loc = r.getheader("Location")
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc else "?"
    req(port, "PUT", f"{loc}{sep}digest={d}", body=data,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    return d


def push_image(port, repo, tag, layers):
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}, "tag": f"{repo}:{tag}"}).encode()
    cd = push_blob(port, repo, config)
    descs = []
    for layer in layers:
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": push_blob(port, repo, layer), "size": len(layer)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
                           "layers": descs}).encode()
    req(port, "PUT", f"/v2/{repo}/manifests/{tag}", body=manifest, headers={"Content-Type": OCI_MANIFEST})
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def wharf_config(path, root, port, replication=""):
    with open(path, "w") as f:
        f.write(f"version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {root}}}\n"
                f"  delete: {{enabled: true}}\nhttp: {{addr: 127.0.0.1:{port}}}\n{replication}")


def serve(wharf, config, port, procs):
    p = subprocess.Popen([wharf, "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_up(port, p, "wharf")
    return p


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def lag(wharf, work, procs):
    pb, pa = free_port(), free_port()
    cb, ca = os.path.join(work, "b.yml"), os.path.join(work, "a.yml")
    wharf_config(cb, os.path.join(work, "b"), pb)
    wharf_config(ca, os.path.join(work, "a"), pa,
                 f"replication:\n  targets:\n    - {{name: b, url: http://127.0.0.1:{pb}}}\n"
                 f"  rules:\n    - {{repositories: [\"lag/*\"], targets: [b]}}\n")
    serve(wharf, cb, pb, procs)
    serve(wharf, ca, pa, procs)
    time.sleep(1.5)  # the new target's first reconcile
    lags = []
    for i in range(100):
        d = push_image(pa, "lag/app", f"t{i}", [os.urandom(64 << 10)])
        t0 = time.monotonic()
        while True:
            r, _ = req(pb, "HEAD", f"/v2/lag/app/manifests/{d}", headers={"Accept": OCI_MANIFEST}, expect=(200, 404))
            if r.status == 200:
                break
            if time.monotonic() - t0 > 60:
                raise SystemExit(f"push {i} not on B within 60 s")
            time.sleep(0.005)
        lags.append(time.monotonic() - t0)
    return pct(lags, 0.5), pct(lags, 0.99)


def nginx_bytes(log):
    try:
        with open(log) as f:
            return sum(int(line.split()[-1]) for line in f if line.strip())
    except FileNotFoundError:
        return 0


def sync(wharf, work, procs):
    dist_port, ng_port = free_port(), free_port()
    droot = os.path.join(work, "dist")
    dconf = os.path.join(work, "dist.yml")
    with open(dconf, "w") as f:
        f.write(f"version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {droot}}}\n"
                f"  delete: {{enabled: true}}\nhttp: {{addr: 127.0.0.1:{dist_port}}}\n")
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    d = subprocess.Popen(["docker-registry", "serve", dconf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    procs.append(d)
    wait_up(dist_port, d, "docker-registry")
    ngdir = os.path.join(work, "nginx")
    os.makedirs(ngdir)
    log = os.path.join(ngdir, "access.log")
    with open(os.path.join(ngdir, "nginx.conf"), "w") as f:
        f.write(f"daemon off;\nmaster_process off;\npid {ngdir}/nginx.pid;\nerror_log {ngdir}/error.log;\nevents {{}}\n"
                f"http {{\n client_body_temp_path {ngdir}/body; proxy_temp_path {ngdir}/proxy; fastcgi_temp_path {ngdir}/f; uwsgi_temp_path {ngdir}/u; scgi_temp_path {ngdir}/s;\n"
                f" log_format bytes '$request_method $status $body_bytes_sent';\n"
                f" server {{ listen 127.0.0.1:{ng_port}; access_log {log} bytes; client_max_body_size 0;\n"
                f"  location / {{ proxy_pass http://127.0.0.1:{dist_port}; proxy_set_header Host $http_host; proxy_http_version 1.1; }} }}\n}}\n")
    n = subprocess.Popen(["nginx", "-c", os.path.join(ngdir, "nginx.conf")], stderr=subprocess.DEVNULL)
    procs.append(n)
    wait_up(ng_port, n, "nginx")
    base = os.urandom(1 << 20)
    for r in range(20):
        for t in range(10):
            push_image(dist_port, f"ns/r{r:02}", f"v{t}", [base, os.urandom(256 << 10)])
    # wharf: sync into an empty store.
    root = os.path.join(work, "sync-wharf")
    conf = os.path.join(work, "sync.yml")
    wharf_config(conf, root, free_port(),
                 f"replication:\n  sync:\n    - {{name: up, url: http://127.0.0.1:{ng_port}, repositories: [\"ns/*\"], interval: 24h}}\n")
    b0 = nginx_bytes(log)
    t0 = time.monotonic()
    out = subprocess.run([wharf, "replicate", "sync", conf], capture_output=True, text=True)
    wharf_s = time.monotonic() - t0
    if out.returncode != 0 or "copied 200 tags" not in out.stdout:
        raise SystemExit(f"wharf sync failed: {out.stdout}{out.stderr}")
    wharf_b = nginx_bytes(log) - b0
    # skopeo: sync into an empty wharf serve.
    sp = free_port()
    sconf = os.path.join(work, "skopeo-dest.yml")
    wharf_config(sconf, os.path.join(work, "skopeo-dest"), sp)
    serve(wharf, sconf, sp, procs)
    yml = os.path.join(work, "skopeo.yml")
    with open(yml, "w") as f:
        f.write(f"127.0.0.1:{ng_port}:\n  tls-verify: false\n  images-by-tag-regex:\n")
        for r in range(20):
            f.write(f"    ns/r{r:02}: \".*\"\n")
    b0 = nginx_bytes(log)
    t0 = time.monotonic()
    out = subprocess.run(["skopeo", "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                          "--preserve-digests", yml, f"127.0.0.1:{sp}/"], capture_output=True, text=True)
    skopeo_s = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"skopeo sync failed: {out.stderr[-500:]}")
    skopeo_b = nginx_bytes(log) - b0
    # A second wharf run moves nothing.
    t0 = time.monotonic()
    again = subprocess.run([wharf, "replicate", "sync", conf], capture_output=True, text=True)
    again_s = time.monotonic() - t0
    if "copied 0 tags" not in again.stdout:
        raise SystemExit(f"second sync copied something: {again.stdout}")
    return wharf_s, wharf_b, skopeo_s, skopeo_b, again_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="wharf-repl-bench-")
    procs = []
    try:
        p50, p99 = lag(a.wharf, work, procs)
        print(f"replication lag A->B over 100 pushes: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        ws, wb, ss, sb, again = sync(a.wharf, work, procs)
        print(f"sync 20 repos / 200 tags from Distribution: wharf {ws:.2f} s, {wb / 1e6:.1f} MB fetched; "
              f"skopeo sync {ss:.2f} s, {sb / 1e6:.1f} MB fetched")
        ratio = ss / ws if ws else 0
        print(f"  wharf is {ratio:.1f}x faster (target >= 2x: {'met' if ratio >= 2 else 'NOT met'}), "
              f"fetches {sb / wb if wb else 0:.1f}x fewer bytes; a second wharf run took {again:.2f} s and copied nothing")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
