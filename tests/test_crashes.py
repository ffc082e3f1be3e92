"""Crashes: a worker killed mid-batch, a CLI killed while waiting, checkpoint and ledger files damaged on disk.

Everything goes through the real CLI, with the fake Messages API on 127.0.0.1 behind ANTHROPIC_BASE_URL.
The fake's per-prompt counters are the proof of what was (and was not) sent again.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from clitools import CLI, kill_worker, ok, rlm, run, start
from rlmcore import client

BATCH = 500
BATCH_CODE = (f"res = llm_query_batch([f'q{{i:03d}}' for i in range({BATCH})], concurrency=5)\n"
              f"print(sum(r == f'echo: q{{i:03d}}' for i, r in enumerate(res)))")


def until(predicate, what: str, limit_s: float = 30.0):
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def settled(api, quiet_s: float = 0.3) -> dict:
    """The fake API's counters once no request is in flight and none has arrived for ``quiet_s``: requests
    a killed worker sent may still be on their way in when it dies."""
    last = api.stats()
    while True:
        time.sleep(quiet_s)
        now = api.stats()
        if now["in_flight"] == 0 and now["by_prompt"] == last["by_prompt"]:
            return now
        last = now


def worker_status(sdir) -> dict:
    return client.talk(sdir, {"op": "status"}, timeout=10)


def ok_items(sdir, exec_id) -> set:
    """Items of one exec that the ledger recorded as answered (status ok)."""
    conn = sqlite3.connect(f"file:{os.path.join(sdir, 'ledger.sqlite')}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT item FROM calls WHERE exec_id = ? AND status = 'ok'", (exec_id,)).fetchall()
    finally:
        conn.close()
    return {item for (item,) in rows}


# ---- the worker killed mid-batch --------------------------------------------------------------------------------

def test_a_worker_killed_mid_batch_comes_back_and_the_rerun_sends_only_what_was_not_answered(data, api):
    api.configure(latency=0.01)
    sdir = start(data, "crash")["session_dir"]
    run("crash", "earlier = {'kept': [1, 2, 3]}\ndef double(x):\n    return 2 * x")
    first = run("crash", BATCH_CODE, "--wait", "0.2")
    assert first["running"] is True

    progress = until(lambda: (worker_status(sdir).get("progress") or {}).get("done", 0) >= 100 and
                     worker_status(sdir)["progress"], "100 items to finish")
    assert progress["done"] < BATCH, "the batch finished before the kill; slow the fake API down"
    kill_worker(sdir)
    before = settled(api)
    answered = ok_items(sdir, first["exec_id"])
    assert 100 <= len(answered) < BATCH

    again = run("crash", BATCH_CODE)
    after = api.stats()
    assert again["ok"] is True and again["stdout"] == f"{BATCH}\n"
    assert "earlier" in again["worker_restarted"]["restored"]
    assert again["calls"]["reused"] == len(answered)
    for i in range(BATCH):
        prompt = f"q{i:03d}"
        sent_again = after["by_prompt"].get(prompt, 0) - before["by_prompt"].get(prompt, 0)
        assert sent_again == (0 if i in answered else 1), prompt
        if i in answered:
            assert after["answered_by_prompt"][prompt] == 1, prompt
    assert run("crash", "print(earlier['kept'], double(21))")["stdout"] == "[1, 2, 3] 42\n"

    # The requests in flight at the kill may have been billed: each is a worker_lost call at its
    # expected cost, counted in the budget once, and its prompt was sent again by the re-run.
    conn = sqlite3.connect(f"file:{os.path.join(sdir, 'ledger.sqlite')}?mode=ro", uri=True)
    try:
        lost = [item for (item,) in conn.execute("SELECT item FROM calls WHERE error_type = 'worker_lost'")]
        sent_calls, sent_usd = conn.execute("SELECT COUNT(*), TOTAL(usd) FROM calls "
                                            "WHERE status IN ('ok', 'error')").fetchone()
        spent_calls, spent_nano = conn.execute("SELECT spent_calls, spent_nano_usd FROM budget").fetchone()
        reservations = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    finally:
        conn.close()
    assert len(lost) <= 5 and not set(lost) & answered  # concurrency 5
    assert (spent_calls, reservations) == (sent_calls, 0)
    assert abs(spent_nano / 1e9 - sent_usd) < 1e-6


def test_the_killed_exec_is_reported_as_interrupted_by_the_next_wait(data, api):
    api.configure(latency=0.05)
    sdir = start(data, "crash")["session_dir"]
    run("crash", BATCH_CODE, "--wait", "0.2")
    exec_id = until(lambda: worker_status(sdir).get("exec_id"), "the exec to start")
    kill_worker(sdir)
    report = ok("wait", "--session", "crash")
    assert report["exec_id"] == exec_id and report["error"]["type"] == "WorkerDied"
    assert "run the exec again" in report["hint"]
    assert "worker_restarted" in report


# ---- the CLI killed while it waits ---------------------------------------------------------------------------------

def test_the_exec_of_a_killed_cli_finishes_in_the_worker_and_wait_collects_it(data):
    sdir = start(data, "cli")["session_dir"]
    code = "import time\ntime.sleep(1.0)\ndone = 'finished'\nprint(done)"
    proc = subprocess.Popen([sys.executable, CLI, "exec", "--session", "cli", "-c", code, "--wait", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        exec_id = until(lambda: worker_status(sdir).get("exec_id"), "the exec to start")
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    report = ok("wait", "--session", "cli", "--wait", "30")
    assert report["exec_id"] == exec_id and report["ok"] is True and report["stdout"] == "finished\n"
    assert "worker_restarted" not in report
    assert run("cli", "done")["stdout"] == "'finished'\n"


# ---- damaged files -----------------------------------------------------------------------------------------------

def spend(session) -> dict:
    return ok("status", "--session", session)["budget"]["spent"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_manifest_is_set_aside_named_and_the_session_goes_on(data, api, damage):
    sdir = start(data, "cp")["session_dir"]
    run("cp", "a = 1\nb = [1, 2]\nanswer = llm_query('paid once')")
    spent = spend("cp")
    assert spent["calls"] == 1
    kill_worker(sdir)
    manifest = os.path.join(sdir, "checkpoint", "manifest.json")
    text = open(manifest, "rb").read()
    with open(manifest, "wb") as f:
        f.write(text[: len(text) // 2] if damage == "truncated" else b"\x00garbage\xff" * 10)

    out = run("cp", "print('alive', 'a' in globals())")
    assert out["ok"] is True and out["stdout"] == "alive False\n"
    (error,) = out["worker_restarted"]["errors"]
    assert manifest in error and "corrupt" in error and "moved to" in error and "empty namespace" in error
    aside = error.split("moved to ")[1].split(" ")[0]
    assert os.path.isfile(os.path.join(aside, "manifest.json"))
    # The spend is untouched, the paid answer is reused for free, and new variables are checkpointed again.
    assert spend("cp") == spent
    again = run("cp", "answer = llm_query('paid once')\nc = 3\nprint(answer)")
    assert again["stdout"] == "echo: paid once\n" and again["calls"]["reused"] == 1
    assert api.stats()["requests"] == 1
    kill_worker(sdir)
    assert "c" in run("cp", "c")["worker_restarted"]["restored"]


def test_a_truncated_variable_pickle_is_named_and_the_other_variables_come_back(data):
    sdir = start(data, "cp")["session_dir"]
    run("cp", "good = {'x': 1}\nbad = list(range(1000))")
    kill_worker(sdir)
    folder = os.path.join(sdir, "checkpoint")
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    pickle_path = os.path.join(folder, manifest["vars"]["bad"]["file"])
    with open(pickle_path, "r+b") as f:
        f.truncate(10)
    out = run("cp", "print(good)")
    assert out["stdout"] == "{'x': 1}\n"
    assert "good" in out["worker_restarted"]["restored"]
    (lost,) = out["worker_restarted"]["not_restored"]
    assert lost["name"] == "bad" and "could not be loaded" in lost["reason"]


def damage_ledger(sdir, how: str) -> str:
    """Fold the WAL into the file, drop it, then damage the file; returns its path."""
    path = os.path.join(sdir, "ledger.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "truncated":
            f.truncate(size // 2)
        else:
            f.write(os.urandom(size))
    return path


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_ledger_is_named_with_the_way_out_and_plain_execs_still_work(data, api, how):
    sdir = start(data, "led")["session_dir"]
    # Enough calls that the ledger spans many pages: half of it is then real data lost.
    run("led", "kept = 1\nanswers = llm_query_batch([f'q{i} ' + 'y' * 500 for i in range(50)])")
    assert spend("led")["calls"] == 50
    kill_worker(sdir)
    path = damage_ledger(sdir, how)

    plain = run("led", "print(kept + 1)")
    assert plain["ok"] is True and plain["stdout"] == "2\n"
    assert path in plain["budget"]["error"]["message"]
    refused = run("led", "llm_query('one more')")
    assert refused["error"]["type"] == "LedgerError"
    assert path in refused["error"]["message"] and "damaged" in refused["error"]["message"]
    assert "move it aside" in refused["error"]["hint"]
    assert api.stats()["requests"] == 50  # nothing sent without a ledger to record it

    # Never a silent zero: status says the ledger is damaged, list shows no figure rather than 0.
    status = rlm("status", "--session", "led")
    assert status.code == 0, status
    assert path in status["budget"]["error"]["message"]
    (row,) = ok("list")["sessions"]
    assert row["usd"] is None
    shown = rlm("budget", "--session", "led")
    assert shown.code == 1 and path in shown["error"]["message"]


def test_following_the_way_out_of_a_damaged_ledger_starts_a_fresh_one_and_sub_calls_work_again(data, api):
    sdir = start(data, "led")["session_dir"]
    run("led", "kept = 1\nllm_query('before')")
    kill_worker(sdir)
    path = damage_ledger(sdir, "garbage")
    refused = run("led", "llm_query('after')")
    hint = refused["error"]["hint"]
    assert f"mv {path} {path}.broken" in hint and "budget --session led" in hint
    os.rename(path, path + ".broken")
    fresh = ok("budget", "--session", "led", "--max-usd", "0.5")
    assert fresh["budget"]["limits"]["max_usd"] == 0.5 and fresh["budget"]["spent"]["calls"] == 0
    assert any("fresh ledger" in note for note in fresh["notes"])
    out = run("led", "print(llm_query('after'), kept)")
    assert out["ok"] is True and out["stdout"] == "echo: after 1\n"
    assert spend("led")["calls"] == 1


def test_a_missing_ledger_is_not_recreated_without_being_asked(data, api):
    sdir = start(data, "led")["session_dir"]
    kill_worker(sdir)
    os.unlink(os.path.join(sdir, "ledger.sqlite"))
    refused = run("led", "llm_query('q')")
    assert refused["error"]["type"] == "LedgerError" and "does not exist" in refused["error"]["message"]
    assert "budget --session led" in refused["error"]["hint"]
    assert not os.path.exists(os.path.join(sdir, "ledger.sqlite"))
    assert rlm("budget", "--session", "led").code == 1  # showing the budget creates nothing
    assert api.stats()["requests"] == 0
