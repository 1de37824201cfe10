#!/usr/bin/env python3
"""Authenticated registry benchmark (issue 4), side by side with Distribution 2.8.2.

Both registries read the same bcrypt htpasswd file (made by Apache's `htpasswd -B`):
  1. authenticated manifest GET/s (wrk, every request carrying Basic credentials);
  2. wharf's 1 GiB monolithic push, authenticated vs anonymous, in the same run.
Targets: authenticated manifest GET >= 100x Distribution and >= 20k/s; authenticated
push within 5% of anonymous.

Usage: auth.py --wharf BIN --work DIR. Standard library only. Exit 0 when everything ran
(targets met or not), 1 when something failed.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import sync_and_prime  # noqa: E402  the main bench's fix for this VM's cold page cache

WRK = ["wrk", "-t2", "-c32", "-d10s"]
BIG = int(os.environ.get("BENCH_AUTH_BYTES", str(1 << 30)))
USER, PASSWORD = "bench", "bench-password"
MANIFEST_MT = "application/vnd.docker.distribution.manifest.v2+json"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port, proc, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


def start(argv, port, what, log_path):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"),
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
                                 "WHARF_LOG": "warn"})
    wait_up(port, proc, what)
    return proc


def config(root, port, htpasswd):
    auth = f"auth:\n  htpasswd:\n    realm: bench\n    path: {htpasswd}\n" if htpasswd else ""
    return (f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n{auth}")


def request(port, method, path, body=None, headers=None, expect=(200,)):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=4 << 20)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if r.status not in expect:
        raise SystemExit(f":{port} {method} {path} -> {r.status} {data[:300]!r}")
    return r, data


def push_small_image(port, auth):
    """A config blob and a manifest, so there is something to GET."""
    cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    r, _ = request(port, "POST", "/v2/bench/app/blobs/uploads/", b"", {**auth, "Content-Length": "0"}, (202,))
    loc = r.getheader("Location")
    loc = loc[loc.index("/v2/"):] if "://" in loc else loc
    request(port, "PUT", loc + ("&" if "?" in loc else "?") + "digest=" + d, cfg, auth, (201,))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_MT,
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                      "digest": d, "size": len(cfg)}, "layers": []}).encode()
    request(port, "PUT", "/v2/bench/app/manifests/v1", manifest, {**auth, "Content-Type": MANIFEST_MT}, (201,))


def wrk_rate(port, auth_header):
    cmd = WRK + ["-H", f"Accept: {MANIFEST_MT}"]
    if auth_header:
        cmd += ["-H", f"Authorization: {auth_header}"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/v2/bench/app/manifests/v1"],
                         capture_output=True, text=True, timeout=120).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk on :{port} got non-2xx responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def push_big(port, path, digest, auth):
    t0 = time.perf_counter()
    r, _ = request(port, "POST", "/v2/bench/big/blobs/uploads/", b"", {**auth, "Content-Length": "0"}, (202,))
    loc = r.getheader("Location")
    loc = loc[loc.index("/v2/"):] if "://" in loc else loc
    with open(path, "rb", buffering=0) as f:
        request(port, "PUT", loc + ("&" if "?" in loc else "?") + "digest=" + digest, f,
                {**auth, "Content-Length": str(BIG), "Content-Type": "application/octet-stream"}, (201,))
    return BIG / (time.perf_counter() - t0) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    work = args.work
    htpasswd = os.path.join(work, "htpasswd")
    subprocess.run(["htpasswd", "-Bbc", htpasswd, USER, PASSWORD], check=True, capture_output=True)
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth = {"Authorization": basic}
    procs = []
    try:
        ports = {}
        for name, argv_of, authed in [
            ("wharf", lambda cfg: [args.wharf, "serve", cfg], True),
            ("distribution", lambda cfg: ["docker-registry", "serve", cfg], True),
            ("wharf-anonymous", lambda cfg: [args.wharf, "serve", cfg], False),
        ]:
            port = free_port()
            root = os.path.join(work, name)
            os.makedirs(root)
            cfg = os.path.join(work, f"{name}.yml")
            with open(cfg, "w") as f:
                f.write(config(root, port, htpasswd if authed else None))
            procs.append(start(argv_of(cfg), port, name, os.path.join(work, f"{name}.log")))
            ports[name] = port
        for name in ("wharf", "distribution"):
            push_small_image(ports[name], auth)
            request(ports[name], "GET", "/v2/bench/app/manifests/v1", expect=(401,))
        rates = {name: wrk_rate(ports[name], basic) for name in ("wharf", "distribution")}
        for name, r in rates.items():
            log(f"authenticated manifest GET {name}: {r:,.0f} req/s")

        big = os.path.join(work, "big")
        with open(big, "wb") as f:
            block = os.urandom(1 << 20)
            h = hashlib.sha256()
            for i in range(BIG >> 20):
                chunk = block[:-8] + i.to_bytes(8, "little")
                f.write(chunk)
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        pushes = {"anonymous": [], "authenticated": []}
        scratch = os.path.join(work, "scratch")
        for _ in range(3):  # alternate, best of three each
            sync_and_prime(scratch)
            pushes["anonymous"].append(push_big(ports["wharf-anonymous"], big, digest, {}))
            sync_and_prime(scratch)
            pushes["authenticated"].append(push_big(ports["wharf"], big, digest, auth))
            for name in ("wharf-anonymous", "wharf"):  # push again as a new blob next round
                subprocess.run(["rm", "-rf", os.path.join(work, name, "docker", "registry", "v2", "blobs")])
        anon, authed = max(pushes["anonymous"]), max(pushes["authenticated"])
        log(f"1 GiB push: anonymous {anon:,.0f} MB/s, authenticated {authed:,.0f} MB/s")

        ratio = rates["wharf"] / rates["distribution"]
        ok_get = ratio >= 100 and rates["wharf"] >= 20000
        ok_push = authed >= 0.95 * anon
        print("| authenticated (bcrypt htpasswd)        | wharf | distribution | ratio | target | result |")
        print("|----------------------------------------|-------|--------------|-------|--------|--------|")
        print(f"| manifest GET (req/s)                   | {rates['wharf']:,.0f} | {rates['distribution']:,.0f} | "
              f"{ratio:.0f}x | >= 100x dist and >= 20k/s | {'PASS' if ok_get else 'MISS'} |")
        print(f"| 1 GiB push, authenticated vs anonymous (MB/s) | {authed:,.0f} | anonymous {anon:,.0f} | "
              f"{authed / anon:.2f} | within 5% | {'PASS' if ok_push else 'MISS'} |")
        print(f"all push runs (MB/s): anonymous {', '.join(f'{x:,.0f}' for x in pushes['anonymous'])}; "
              f"authenticated {', '.join(f'{x:,.0f}' for x in pushes['authenticated'])}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
