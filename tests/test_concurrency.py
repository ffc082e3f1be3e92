"""Concurrency: several CLI commands at once on one session, and two sessions spending at the same time.

Commands are real CLI processes started together; the fake Messages API on 127.0.0.1 answers the workers.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from clitools import CLI, kill_worker, ok, run, start


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("some text\n" * 10)
    return path


def together(*commands) -> list:
    """Start every command (a list of CLI arguments) at once; return (exit code, JSON) of each."""
    procs = [subprocess.Popen([sys.executable, CLI, *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for args in commands]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, json.loads(out) if out.strip() else {"stderr": err.decode()}))
    return results


def check_one_ran_the_others_busy(results) -> dict:
    ran = [out for code, out in results if code == 0]
    busy = [out for code, out in results if code != 0]
    assert len(ran) == 1, results
    assert all(out["error"]["type"] == "session_busy" for out in busy), results
    assert all("wait --session" in out["error"]["hint"] for out in busy)
    return ran[0]


# ---- one session, several execs -----------------------------------------------------------------------------

def test_of_execs_sent_at_once_to_one_session_one_runs_and_the_others_get_session_busy(data):
    start(data, "one")
    code = "import time\ntime.sleep(3)\ncount = globals().get('count', 0) + 1"
    results = together(*[("exec", "--session", "one", "-c", code)] * 3)
    report = check_one_ran_the_others_busy(results)
    assert report["ok"] is True
    assert run("one", "count")["stdout"] == "1\n"  # the busy ones really did not run


def test_execs_sent_at_once_to_a_session_whose_worker_died_start_one_worker(data):
    sdir = start(data, "one")["session_dir"]
    run("one", "kept = 'yes'")
    kill_worker(sdir)
    code = "import time, os\ntime.sleep(3)\nprint(kept, os.getpid())"
    results = together(*[("exec", "--session", "one", "-c", code)] * 3)
    report = check_one_ran_the_others_busy(results)
    kept, pid = report["stdout"].split()
    assert kept == "yes"
    assert ok("status", "--session", "one")["worker"]["pid"] == int(pid)  # the one worker that runs


def test_status_and_budget_answer_while_a_batch_runs(data, api):
    api.configure(latency=0.15)
    start(data, "one")
    first = run("one", "r = llm_query_batch([f'q{i}' for i in range(60)], concurrency=2)", "--wait", "0.3")
    assert first["running"] is True
    status, budget = (out for _, out in together(("status", "--session", "one"), ("budget", "--session", "one")))
    assert status["worker"]["busy"] is True and status["worker"]["exec_id"] == first["exec_id"]
    assert 0 <= budget["budget"]["spent"]["calls"] < 60
    assert ok("wait", "--session", "one", "--wait", "60")["ok"] is True


# ---- two sessions at once ------------------------------------------------------------------------------------

def answered(sdir) -> list:
    conn = sqlite3.connect(f"file:{os.path.join(sdir, 'ledger.sqlite')}?mode=ro", uri=True)
    try:
        return [json.loads(r)["content"][-1]["text"] for (r,) in conn.execute("SELECT response FROM responses")]
    finally:
        conn.close()


def test_two_sessions_running_batches_at_once_keep_their_own_ledgers_and_budgets(data, api):
    both_sending = threading.Event()

    def latency(body):  # answers wait until both sessions have requests in flight (each sends 8 at most)
        if api.stats()["in_flight"] > 8:
            both_sending.set()
        both_sending.wait(30)
        return 0.03

    api.configure(latency=latency)
    a = start(data, "a")["session_dir"]
    b = start(data, "b", "--max-calls", "60")["session_dir"]
    code = ("r = llm_query_batch([f'shared {i}' for i in range(100)] + [f'own {i} ' + SID for i in range(20)], "
            "concurrency=8)\nprint(sum(x.startswith('echo:') for x in r))")
    (code_a, out_a), (code_b, out_b) = together(
        ("exec", "--session", "a", "-c", code.replace("SID", "'a'")),
        ("exec", "--session", "b", "-c", code.replace("SID", "'b'")))
    assert code_a == 0 and code_b == 0
    assert out_a["stdout"] == "120\n"
    assert out_b["stdout"] == "60\n" and out_b["calls"]["failed"] == 60  # b's own limit, not a's
    assert out_a["budget"]["spent"]["calls"] == 120 and out_b["budget"]["spent"]["calls"] == 60
    # Neither reused the other's paid answers: a sent all of its 120 requests and b the 60 its budget allowed.
    assert api.stats()["requests"] == 120 + 60
    assert api.stats()["peak_concurrency"] > 8  # more than one session's limit: both really ran together
    assert not any("own" in text and text.endswith(" b") for text in answered(a))
    assert not any("own" in text and text.endswith(" a") for text in answered(b))
    assert len(answered(a)) == 120 and len(answered(b)) == 60
