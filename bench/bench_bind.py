"""Time binding a big log and grepping it (not run by pytest).

    python3 bench/bench_bind.py [--mb 200] [--files 0]

Writes a synthetic log of about --mb megabytes to a temporary folder, then times
bind_inputs on it, a grep that matches once, greps capped at 100 of many
matches (the total still counted), and chunks(). With --files N it also times
binding a folder of N small files. Figures are printed; nothing is kept.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlmcore.helpers import make_helpers  # noqa: E402
from rlmcore.inputs import bind_inputs  # noqa: E402

LEVELS = ["INFO"] * 90 + ["WARN"] * 9 + ["ERROR"]


def write_log(path: str, megabytes: int) -> int:
    rnd = random.Random(7)
    target = megabytes * 1_000_000
    written, n = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            lines = []
            for _ in range(10_000):
                n += 1
                lines.append(f"2025-01-{n % 28 + 1:02}T12:{n % 60:02}:{n % 60:02}Z {rnd.choice(LEVELS)} "
                             f"worker-{n % 64} request {n} took {rnd.randint(1, 999)}ms user=u{n % 997}\n")
            block = "".join(lines)
            f.write(block)
            written += len(block)
    return written


def read_decode(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def write_tree(root: str, count: int) -> None:
    for i in range(count):
        folder = os.path.join(root, f"pkg{i % 50}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"mod{i}.py"), "w") as f:
            f.write(f"def f{i}(x):\n    return x + {i}\n" * 20)


def timed(label: str, fn):
    t0 = time.perf_counter()
    result = fn()
    print(f"{label:<48} {time.perf_counter() - t0:7.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=0, help="also bind a folder of this many small files")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="rlm-bench-")
    try:
        log = os.path.join(tmp, "app.log")
        size = timed(f"write {args.mb} MB log", lambda: write_log(log, args.mb))
        timed("baseline: read + decode once (warms the cache)", lambda: read_decode(log))
        timed("baseline: read + decode once", lambda: read_decode(log))
        bound = timed("bind_inputs", lambda: bind_inputs([log]))
        s = bound.summary()
        print(f"  {s['bytes']:,} bytes, {s['lines']:,} lines, ~{s['est_tokens']:,} tokens ({size:,} written)")
        h = make_helpers(lambda: bound.context, lambda: bound.context_files, lambda: {})
        rare = timed("grep rare (request 1234567 )", lambda: h["grep"](r"request 1234567 "))
        print(f"  {rare.total} match, line {rare[0].line if rare else '-'}")
        errors = timed("grep ERROR (100 kept, all counted)", lambda: h["grep"](r"ERROR", max_matches=100))
        print(f"  {errors.total:,} matching lines, last kept at line {errors[-1].line:,}")
        dense = timed("grep INFO (100 kept, ~90% of lines counted)", lambda: h["grep"](r"INFO", max_matches=100))
        print(f"  {dense.total:,} matching lines")
        pieces = timed("chunks(200_000)", lambda: h["chunks"](200_000))
        print(f"  {len(pieces):,} chunks")
        if args.files:
            tree = os.path.join(tmp, "tree")
            write_tree(tree, args.files)
            many = timed(f"bind_inputs folder of {args.files:,} small files", lambda: bind_inputs([tree]))
            print(f"  {len(many.context_files):,} files, {len(many.context):,} chars")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
