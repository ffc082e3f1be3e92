#!/usr/bin/env python3
"""Trivial exec latency against the bare interpreter, at 1 MB and 1 GB of input.

For each size: generate a log, ``start`` a session on it (timed), run
``lines = context.split("\\n")`` so the namespace holds a big value too, then
alternate ``python3 -c pass`` and ``rlm_repl.py exec -c 'x = 1'`` runs side by
side and compare medians. Target: the exec's median within 2x the bare
interpreter's, at every size (cost independent of input and namespace size).

    python3 bench/bench_exec.py [--sizes-mb 1,1024] [--runs 30]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "rlm_repl.py")
TARGET = 2.0


def make_log(path: str, size_mb: float) -> None:
    block = "".join(f"2026-11-21T10:{i % 60:02d}:00Z INFO service=api request {i} served in {i % 97} ms\n"
                    for i in range(20000)).encode()
    want = int(size_mb * (1 << 20))
    with open(path, "wb") as f:
        written = 0
        while written < want:
            chunk = block[: want - written]
            f.write(chunk)
            written += len(chunk)


def timed(cmd, env) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {cmd}\n{proc.stdout.decode()[:2000]}{proc.stderr.decode()[:2000]}")
    return elapsed


def bench_size(size_mb: float, runs: int, home: str, tmp: str) -> dict:
    env = dict(os.environ, RLM_HOME=home, RLM_PROGRESS="0")
    log = os.path.join(tmp, f"input-{size_mb:g}mb.log")
    make_log(log, size_mb)
    session = f"bench{int(size_mb)}"
    start_s = timed([sys.executable, CLI, "start", "--input", log, "--session", session, "--force"], env)
    timed([sys.executable, CLI, "exec", "--session", session, "-c", 'lines = context.split("\\n")'], env)
    bare, execs = [], []
    for _ in range(runs):
        bare.append(timed([sys.executable, "-c", "pass"], env))
        execs.append(timed([sys.executable, CLI, "exec", "--session", session, "-c", "x = 1"], env))
    timed([sys.executable, CLI, "stop", "--session", session], env)
    os.unlink(log)
    b, e = statistics.median(bare), statistics.median(execs)
    return {"size_mb": size_mb, "start_s": round(start_s, 2), "bare_ms": round(b * 1000, 1),
            "exec_ms": round(e * 1000, 1), "ratio": round(e / b, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", default="1,1024")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = os.path.join(tmp, "home")
        for size in (float(s) for s in args.sizes_mb.split(",")):
            rows.append(bench_size(size, args.runs, home, tmp))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'input':>10} {'start s':>8} {'bare ms':>8} {'exec ms':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['size_mb']:>8g}MB {r['start_s']:>8} {r['bare_ms']:>8} {r['exec_ms']:>8} {r['ratio']:>6}")
    missed = [r for r in rows if r["ratio"] > TARGET]
    print(f"target: exec median within {TARGET}x of python3 -c pass: {'MISSED' if missed else 'met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
