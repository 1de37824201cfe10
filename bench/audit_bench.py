#!/usr/bin/env python3
"""The audit log's cost on small pushes: the same wharf with `audit.enabled: true` (the
default: each manifest push appends a hash-chained record, fsynced, before the answer)
and `false`, alternating runs on fresh storage roots. One push is a distinct 4 KiB blob
(monolithic POST ?digest=) and a manifest PUT by tag, as in events_bench.py; THREADS
threads push for PUSH_SECS. Target: audit on no more than 5% slower. Every push must
leave exactly one record, and `wharf audit verify` must pass.

Usage: audit_bench.py --wharf BIN [--work DIR] [--rounds N] [--pids FILE]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import events_bench as eb

TARGET_COST = 0.05


def start(binary, root, audit):
    port = eb.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["WHARF_LOG"] = "warn"
    env["REGISTRY_LOG_ACCESSLOG_DISABLED"] = "true"
    env["REGISTRY_AUDIT_ENABLED"] = "true" if audit else "false"
    proc = eb.track(subprocess.Popen(
        [binary, "serve", "--addr", f"127.0.0.1:{port}", "--root", root],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    eb.wait_port(port, proc, binary)
    return proc, port


def one_run(binary, work, audit):
    root = tempfile.mkdtemp(prefix=f"audit-{audit}.", dir=work)
    proc, port = start(binary, root, audit)
    try:
        cpu0 = eb.cpu_seconds(proc.pid)
        n, secs = eb.pushes(port)
        # Server CPU per push: less swayed than the rate by other work on the machine.
        cpu_ms = (eb.cpu_seconds(proc.pid) - cpu0) * 1000 / n
    finally:
        eb.stop(proc)
    if audit:
        config = os.path.join(root, "config.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n")
        out = subprocess.run([binary, "audit", "verify", config], capture_output=True, text=True)
        if out.returncode != 0 or f"{n} records" not in out.stdout:
            raise eb.BenchFailure(f"{n} pushes, but audit verify says: {out.stdout}{out.stderr}")
    return n / secs, cpu_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wharf", required=True)
    ap.add_argument("--work", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pids")
    a = ap.parse_args()
    eb.PIDS[0] = a.pids
    work = a.work or tempfile.mkdtemp(prefix="wharf-audit-bench.")
    os.makedirs(work, exist_ok=True)
    runs = {False: [], True: []}
    cpu = {False: [], True: []}
    for r in range(a.rounds):
        for audit in (False, True):
            rate, ms = one_run(a.wharf, work, audit)
            runs[audit].append(rate)
            cpu[audit].append(ms)
        print(f"round {r + 1}: off {runs[False][-1]:.0f}/s, on {runs[True][-1]:.0f}/s",
              file=sys.stderr)
    off, on = statistics.median(runs[False]), statistics.median(runs[True])
    cost = 1 - on / off
    print(f"image pushes/s (4 KiB blob + manifest, {eb.THREADS} threads, median of {a.rounds}):")
    print(f"  audit off {off:8.0f}   runs {', '.join(f'{x:.0f}' for x in runs[False])}")
    print(f"  audit on  {on:8.0f}   runs {', '.join(f'{x:.0f}' for x in runs[True])}")
    print(f"  cost {cost * 100:.1f}% (target <= {TARGET_COST * 100:.0f}%: "
          f"{'PASS' if cost <= TARGET_COST else 'MISS'})")
    c_off, c_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(f"  server CPU per push: off {c_off:.2f} ms, on {c_on:.2f} ms "
          f"(+{(c_on / c_off - 1) * 100:.1f}%)")


if __name__ == "__main__":
    try:
        main()
    except eb.BenchFailure as e:
        print(f"audit bench failed: {e}", file=sys.stderr)
        sys.exit(1)
