#!/usr/bin/env python3
"""``trace`` on a ledger of 100,000 calls: how long the command takes.

Makes a session folder in a temporary RLM_HOME whose ledger holds ``--calls``
calls spread over ``--execs`` execs, with a realistic mix: most calls ok, some
retried, some failed with a few different causes, some reused or refused by
the budget, cache reads on most, latencies spread over two orders of
magnitude. The execs are recorded through ``Ledger``; the calls are inserted
in one transaction with plain SQL, because 100,000 single-call transactions
would make the set-up take longer than everything measured.

Then it times, each the median of ``--runs`` runs:

* ``trace.trace`` in-process (the summary the command prints);
* ``rlm_repl.py trace --session ID`` as a subprocess (interpreter start included);
* the same with ``--json`` (full detail) and with ``--html PATH`` (the report).

Target: the plain command answers in under a second.

    python3 bench/bench_trace.py [--calls 100000] [--execs 200] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CLI = os.path.join(ROOT, "rlm_repl.py")
TARGET_S = 1.0

CAUSES = [
    ("rate_limit", "rate_limit_error after 9 attempts (HTTP 429): Rate limited: please slow down."),
    ("overloaded", "overloaded_error after 3 attempts (HTTP 529): Overloaded"),
    ("server_error", "api_error after 3 attempts (HTTP 500): Internal server error."),
    ("api_timeout", "the request timed out after 3 attempts (no response)"),
]


def fill(home: str, session: str, calls: int, execs: int, seed: int = 7) -> str:
    from rlmcore import paths
    from rlmcore.ledger import Ledger
    os.environ["RLM_HOME"] = home
    sdir = paths.session_dir(session, must_exist=False)
    paths.ensure_private_dir(sdir)
    meta = {"id": session, "created": time.time() - 3600, "model": "claude-haiku-5-5", "inputs": [], "globs": []}
    paths.atomic_write(os.path.join(sdir, "session.json"), json.dumps(meta).encode())
    ledger = Ledger(os.path.join(sdir, "ledger.sqlite"), create=True)
    exec_ids = [ledger.begin_exec(f"# exec {i}\nparts = chunks(50_000)\nanswers = llm_query_batch([...])\n")
                for i in range(execs)]
    for exec_id in exec_ids:
        ledger.end_exec(exec_id, outcome="ok", stdout_chars=120)
    ledger.close()

    rng = random.Random(seed)
    t = time.time() - 3 * 3600
    rows = []
    per_exec = calls // execs
    for n in range(calls):
        index = min(n // per_exec, execs - 1)
        exec_id = exec_ids[index]
        batch = f"b{exec_id:05d}"
        draw = rng.random()
        status, attempts, error_type, error = "ok", 1, None, None
        if draw < 0.03:
            attempts = rng.randint(2, 5)
        elif draw < 0.04:
            status, error_type, error = "error", *rng.choice(CAUSES)
            attempts = 3
        elif draw < 0.06:
            status, attempts = "reused", 0
        elif draw < 0.065:
            status, attempts = "budget", 0
            error_type, error = "budget_exceeded", "request not sent: it would pass max_usd 2.0 USD"
        sent = status in ("ok", "error")
        latency = round(rng.lognormvariate(0.0, 0.8), 4) if sent else None
        tokens = (rng.randint(200, 3000), rng.randint(5, 400), rng.randint(0, 2000), rng.choice([0, 0, 0, 1200]))
        if not sent or status == "error":
            tokens = (0, 0, 0, 0)
        usd = (tokens[0] * 0.1 + tokens[1] * 0.5 + tokens[2] * 0.01 + tokens[3] * 0.125) / 1e6
        rows.append((exec_id, batch, n % per_exec, "claude-haiku-5-5", status, attempts, *tokens, usd,
                     t + n * 0.03 + index * 20.0, latency, error_type, error, "end_turn" if status == "ok" else None,
                     f"req_{n:08d}" if sent else None))
    import sqlite3
    conn = sqlite3.connect(os.path.join(sdir, "ledger.sqlite"))
    with conn:
        conn.executemany(
            "INSERT INTO calls (exec_id, batch_id, item, model, status, attempts, input_tokens, output_tokens, "
            "cache_read_input_tokens, cache_creation_input_tokens, usd, started, latency_s, error_type, error, "
            "stop_reason, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        # each exec spans its calls, and the model thinks for 20 s between execs
        conn.execute("UPDATE execs SET started = (SELECT MIN(started) - 0.3 FROM calls WHERE exec_id = execs.id), "
                     "ended = (SELECT MAX(started + COALESCE(latency_s, 0)) + 0.2 FROM calls WHERE exec_id = execs.id)")
    conn.close()
    return sdir


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cli(home: str, *args) -> None:
    proc = subprocess.run([sys.executable, CLI, *args], capture_output=True, env=dict(os.environ, RLM_HOME=home))
    if proc.returncode != 0:
        raise SystemExit(f"trace failed: {proc.stdout.decode()[:2000]}{proc.stderr.decode()[:2000]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--execs", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from rlmcore import trace
    with tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        fill(home, "bench", args.calls, args.execs)
        print(f"ledger with {args.calls:,} calls over {args.execs} execs made in {time.perf_counter() - t0:.1f} s")
        out = trace.trace("bench")
        assert out["totals"]["count"] + out["totals"]["reused"] + out["failed_calls_total"] >= args.calls * 0.9
        html = os.path.join(home, "trace.html")
        results = {
            "in-process trace.trace": timed(lambda: trace.trace("bench"), args.runs),
            "rlm_repl.py trace": timed(lambda: cli(home, "trace", "--session", "bench"), args.runs),
            "rlm_repl.py trace --json": timed(lambda: cli(home, "trace", "--session", "bench", "--json"), args.runs),
            "rlm_repl.py trace --html": timed(lambda: cli(home, "trace", "--session", "bench", "--html", html),
                                              args.runs),
        }
        bare = timed(lambda: subprocess.run([sys.executable, "-c", "pass"]), args.runs)
        for name, seconds in results.items():
            print(f"{name:28s} {seconds * 1000:8.0f} ms")
        print(f"{'(bare python3 -c pass)':28s} {bare * 1000:8.0f} ms")
        print(f"report size: {os.path.getsize(html) / 1e6:.1f} MB")
        verdict = "ok" if results["rlm_repl.py trace"] < TARGET_S else "TOO SLOW"
        print(f"target: rlm_repl.py trace under {TARGET_S:g} s on {args.calls:,} calls: {verdict}")
        return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
