#!/usr/bin/env python3
"""Run the task suite (tasks.py) through `rlm_repl.py run` and print what each task cost and scored.

Offline (the default), every task runs against the project's fake Messages API on 127.0.0.1: the root model
is scripted_root.py, the sub-calls are answered by the fake's reader. This proves the whole pipeline (CLI,
session worker, loop, fan-out, ledger) gives the right answers at every size; the figures are the pipeline's
own cost (calls, tokens, wall time), not a model's accuracy.

With --live and ANTHROPIC_API_KEY set, the same tasks go to the real API: the root is a real model (--model,
default sonnet) writing its own code, sub-calls go to --sub-model (default Haiku). Each task runs under its own
spending limit (--max-usd, default 1.00); the sessions are kept under the printed RLM_HOME for `trace`.

    python3 bench/tasks/run_tasks.py                       # offline, every kind and size up to 1M tokens
    python3 bench/tasks/run_tasks.py --sizes 8k,32k --kinds needle,pairs
    ANTHROPIC_API_KEY=... python3 bench/tasks/run_tasks.py --live --sizes 8k,32k,128k

Prints one row per task (score 0..1, iterations, calls sent, calls failed or refused by the budget, input
tokens with cache reads and writes, output tokens, USD, wall seconds) and the mean score per kind; --json
prints the rows as JSON instead. Exits 1 when an offline task scores below 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, ROOT, os.path.join(ROOT, "tests")]

import scripted_root  # noqa: E402
import tasks  # noqa: E402

CLI = os.path.join(ROOT, "rlm_repl.py")
OFFLINE_KEY = "sk-offline-not-a-real-key"
LIVE_SIZES = "8k,32k,128k"


def run_task(task, home: str, env: dict, extra=()) -> dict:
    """One task through `rlm_repl.py run --json`; the row of figures for it."""
    path = os.path.join(home, f"{task.name}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(task.text)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, CLI, "run", "--input", path, "--query", task.question, "--json",
                           "--session", f"task-{task.name}", "--force", *extra],
                          capture_output=True, env=dict(os.environ, RLM_HOME=home, **env), timeout=3600)
    wall = time.monotonic() - started
    os.unlink(path)
    out = json.loads(proc.stdout.decode("utf-8") or "{}")
    row = {"task": task.name, "kind": task.kind, "size": task.size, "chars": len(task.text),
           "wall_s": round(wall, 2)}
    if proc.returncode != 0:
        error = out.get("error") or {"message": proc.stderr.decode("utf-8", "replace")[-500:]}
        return dict(row, score=0.0, error=error.get("message"), answer=None)
    row.update(score=round(task.score(out["answer"]), 3), answer=out["answer"][:200],
               iterations=out["iterations"], calls=out["calls"], failed=out["failed"], usd=out["usd"],
               input_tokens=out["input_tokens"] + out["cache_read_tokens"] + out["cache_write_tokens"],
               cache_read_tokens=out["cache_read_tokens"], output_tokens=out["output_tokens"],
               session=out["session"])
    return row


def run_suite(kinds, sizes, *, live=False, seed=0, home=None, model=None, sub_model=None, max_usd=1.0,
              latency=0.0, on_row=None) -> list:
    """Every kind at every size; ``on_row(row)`` sees each row as it is done."""
    env, extra, api = {}, [], None
    if live:
        extra += ["--max-usd", str(max_usd)]
        extra += ["--model", model] if model else []
        extra += ["--sub-model", sub_model] if sub_model else []
    else:
        from fake_api import FakeAPI
        api = FakeAPI(reader=True, keep_bodies=False, latency=latency)
        api.set_responder(scripted_root.respond)
        env = {"ANTHROPIC_BASE_URL": api.base_url, "ANTHROPIC_API_KEY": OFFLINE_KEY}
    rows = []
    try:
        for size in sizes:
            for kind in kinds:
                row = run_task(tasks.make(kind, size, seed), home, env, extra)
                rows.append(row)
                if on_row:
                    on_row(row)
    finally:
        if api is not None:
            api.close()
    return rows


COLUMNS = (("task", "<20"), ("score", ">5"), ("iterations", ">4"), ("calls", ">6"), ("failed", ">6"),
           ("input_tokens", ">11"),
           ("cache_read_tokens", ">11"), ("output_tokens", ">8"), ("usd", ">9"), ("wall_s", ">7"))
HEADS = {"iterations": "it", "input_tokens": "in tokens", "cache_read_tokens": "cache read", "output_tokens": "out"}


def format_row(row: dict) -> str:
    cells = []
    for name, spec in COLUMNS:
        value = row.get(name, "-")
        if name == "usd" and isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        cells.append(f"{value:{spec}}")
    line = " ".join(cells)
    return line + (f"  ERROR: {row['error']}" if row.get("error") else "")


def header() -> str:
    return " ".join(f"{HEADS.get(name, name):{spec}}" for name, spec in COLUMNS)


def summary(rows) -> list:
    lines = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        lines.append(f"{kind:<14} mean score {sum(r['score'] for r in mine) / len(mine):.3f} over {len(mine)} "
                     f"size(s), {sum(r.get('calls', 0) for r in mine):,} calls, "
                     f"{sum(r['wall_s'] for r in mine):.1f} s")
    total = sum(r.get("usd", 0.0) for r in rows)
    lines.append(f"all            {sum(r['score'] == 1 for r in rows)}/{len(rows)} right, "
                 f"{sum(r.get('calls', 0) for r in rows):,} calls, ${total:.4f}, "
                 f"{sum(r['wall_s'] for r in rows):.1f} s")
    return lines


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", default=",".join(tasks.KINDS), help="comma-separated: " + ", ".join(tasks.KINDS))
    p.add_argument("--sizes", help=f"comma-separated: {', '.join(tasks.SIZES)} (default: all offline, "
                                   f"{LIVE_SIZES} live)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--live", action="store_true", help="use the real API (needs ANTHROPIC_API_KEY)")
    p.add_argument("--model", help="root model (live)")
    p.add_argument("--sub-model", help="sub-call model (live)")
    p.add_argument("--max-usd", type=float, default=1.0, help="spending limit per task (live)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds the fake API takes per answer (offline)")
    p.add_argument("--home", help="RLM_HOME for the sessions (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the sessions of an offline run")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    if args.live and not os.environ.get("ANTHROPIC_API_KEY"):
        p.error("--live needs ANTHROPIC_API_KEY in the environment")
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.sizes = [s for s in (args.sizes or (LIVE_SIZES if args.live else ",".join(tasks.SIZES))).split(",") if s]
    for kind in args.kinds:
        if kind not in tasks.KINDS:
            p.error(f"unknown kind {kind!r}; choose from {', '.join(tasks.KINDS)}")
    for size in args.sizes:
        if size not in tasks.SIZES:
            p.error(f"unknown size {size!r}; choose from {', '.join(tasks.SIZES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    home = args.home or tempfile.mkdtemp(prefix="rlm-tasks-")
    os.makedirs(home, mode=0o700, exist_ok=True)
    if not args.json:
        print(f"{'live' if args.live else 'offline (fake API, scripted root)'}; RLM_HOME={home}", flush=True)
        print(header(), flush=True)
    show = None if args.json else (lambda row: print(format_row(row), flush=True))
    try:
        rows = run_suite(args.kinds, args.sizes, live=args.live, seed=args.seed, home=home, model=args.model,
                         sub_model=args.sub_model, max_usd=args.max_usd, latency=args.latency,
                         on_row=show)
    finally:
        if not (args.live or args.keep or args.home):
            shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1, default=sorted))
    else:
        print("\n".join(summary(rows)))
    return 0 if args.live or all(r["score"] == 1 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
