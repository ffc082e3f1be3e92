from __future__ import annotations

import os
import random
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlmcore.errors import BudgetExceeded, InputError, LedgerError
from rlmcore.ledger import _GROUPS_SELECT, Ledger, _translate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def rlm_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "home"))


@pytest.fixture
def path(tmp_path):
    folder = tmp_path / "sessions" / "s1"
    folder.mkdir(parents=True)
    return str(folder / "ledger.sqlite")


@pytest.fixture
def ledger(path):
    with Ledger(path, create=True) as led:
        yield led


def ok(usd=0.0, **fields):
    return dict({"status": "ok", "usd": usd, "attempts": 1}, **fields)


def raw_state(path):
    """(spent nano-USD, reserved nano-USD, spent calls, reserved calls) read in one snapshot."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("BEGIN")
        spent_usd, spent_calls = conn.execute("SELECT spent_nano_usd, spent_calls FROM budget").fetchone()
        res_usd, res_calls = conn.execute("SELECT TOTAL(nano_usd), TOTAL(calls) FROM reservations").fetchone()
        conn.execute("COMMIT")
        return spent_usd, int(res_usd), spent_calls, int(res_calls)
    finally:
        conn.close()


def run_python(code, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# ---- budget ---------------------------------------------------------------

def test_reservations_never_let_spend_and_reserved_pass_a_limit_under_twenty_threads(ledger, path):
    ledger.set_limits(max_usd=1.0, max_calls=150, max_tokens=400_000)
    refused = []
    stop = threading.Event()
    snapshots = []

    def hammer(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            usd, tokens = rng.uniform(0.001, 0.05), rng.randint(100, 5000)
            try:
                rid = ledger.reserve(usd=usd, tokens=tokens)
            except BudgetExceeded:
                refused.append(1)
                if len(refused) > 200:
                    return
                continue
            if rng.random() < 0.2:
                ledger.release(rid)
            else:
                status = rng.choice(["ok", "ok", "error"])
                ledger.finish_call(rid, request_hash=f"{seed}-{rng.random()}", response=None,
                                   record={"status": status, "usd": usd * rng.random(),
                                           "input_tokens": tokens // 2, "output_tokens": tokens // 3})

    def watch():
        while not stop.is_set():
            snapshots.append(ledger.budget())

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(20)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    for t in threads[:20]:
        t.join(timeout=30)
    stop.set()
    threads[-1].join()

    assert refused, "the limits were never reached"
    for b in snapshots + [ledger.budget()]:
        for key, limit in (("usd", 1.0), ("calls", 150), ("tokens", 400_000)):
            assert round((b["spent"][key] + b["reserved"][key]) * 1e9) <= round(limit * 1e9)
    spent_usd, res_usd, spent_calls, res_calls = raw_state(path)
    assert res_usd == res_calls == 0
    assert spent_usd <= 10 ** 9 and spent_calls <= 150


HAMMER = """
import random, sys, time
from rlmcore.ledger import Ledger
from rlmcore.errors import BudgetExceeded
led = Ledger(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()  # start together
refused = made = 0
while refused < 30:
    usd = rng.uniform(0.005, 0.05)
    try:
        rid = led.reserve(usd=usd, tokens=10)
    except BudgetExceeded:
        refused += 1
        continue
    time.sleep(0.001)  # the request in flight, holding its reservation
    led.finish_call(rid, request_hash=None, response=None, record={"status": "ok", "usd": usd})
    made += 1
print(made)
"""


def test_reservations_never_let_spend_pass_a_limit_across_two_processes(ledger, path):
    ledger.set_limits(max_usd=3.0)
    procs = [run_python(HAMMER, path, seed) for seed in (1, 2)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    worst = 0
    while any(p.poll() is None for p in procs):
        spent, reserved, _, _ = raw_state(path)
        worst = max(worst, spent + reserved)
    made = [int(p.communicate()[0]) for p in procs]

    assert all(p.returncode == 0 for p in procs)
    assert all(n > 0 for n in made), made
    spent, reserved, calls, _ = raw_state(path)
    assert worst <= 3 * 10 ** 9 and spent <= 3 * 10 ** 9 and reserved == 0
    assert calls == sum(made) == ledger.totals()["count"]
    assert spent > 2.9 * 10 ** 9  # the two processes really shared and filled the budget


RESERVE_AND_WAIT = """
import sys
from rlmcore.ledger import Ledger
led = Ledger(sys.argv[1])
led.reserve(usd=0.9, tokens=0)
if len(sys.argv) > 3:  # a sent request: counted at its expected cost should this process die
    led.reserve(usd=0.3, tokens=5000, if_lost={"exec_id": 7, "batch_id": "b", "item": 4, "model": "m",
                                               "usd": 0.02, "input_tokens": 900, "output_tokens": 100,
                                               "request_hash": "h4"})
print("reserved", flush=True)
if sys.argv[2] == "crash":
    import os; os._exit(1)
sys.stdin.readline()
"""


def test_reservations_of_a_crashed_process_are_reclaimed(ledger, path):
    ledger.set_limits(max_usd=1.0)
    proc = run_python(RESERVE_AND_WAIT, path, "crash")
    assert proc.communicate()[0].strip() == "reserved"

    assert raw_state(path)[1] == 900_000_000  # still stored after the crash
    assert ledger.budget()["reserved"]["usd"] == 0  # but not counted: its owner is gone
    ledger.reserve(usd=0.5, tokens=0)
    assert raw_state(path)[1] == 500_000_000


def test_a_crashed_process_s_request_in_flight_is_counted_at_its_expected_cost_not_dropped(ledger, path):
    ledger.set_limits(max_usd=1.5)
    proc = run_python(RESERVE_AND_WAIT, path, "crash", "sent")
    assert proc.communicate()[0].strip() == "reserved"

    budget = ledger.budget()  # counted as spent as soon as its owner is gone
    assert budget["spent"] == {"calls": 1, "usd": 0.02, "tokens": 1000} and budget["reserved"]["usd"] == 0
    ledger.reserve(usd=0.5, tokens=0)  # settles it for good
    spent, reserved, calls, _ = raw_state(path)
    assert (spent, reserved, calls) == (20_000_000, 500_000_000, 1)
    assert ledger.budget()["spent"]["usd"] == 0.02  # once, not twice
    conn = sqlite3.connect(path)
    row = conn.execute("SELECT exec_id, batch_id, item, status, attempts, usd, error_type, request_hash "
                       "FROM calls").fetchall()
    conn.close()
    assert row == [(7, "b", 4, "error", 1, 0.02, "worker_lost", "h4")]
    assert ledger.exec_calls(7)["usd"] == 0.02 and ledger.exec_calls(7)["failed"] == 1
    assert ledger.cached_response("h4") is None  # no answer came: a re-run asks again


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="zombies are seen through /proc")
def test_a_dead_process_not_yet_reaped_counts_as_dead(ledger, path):
    # In a container whose PID 1 never reaps orphans, a killed worker stays a zombie for good.
    ledger.set_limits(max_usd=1.0)
    proc = run_python(RESERVE_AND_WAIT, path, "crash")
    try:
        assert proc.stdout.readline().strip() == "reserved"
        for _ in range(1000):  # not waited for, so it stays a zombie
            with open(f"/proc/{proc.pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.01)
        assert ledger.budget()["reserved"]["usd"] == 0
        ledger.reserve(usd=0.5, tokens=0)
    finally:
        proc.wait()


def test_a_ledger_of_an_older_version_is_migrated_when_opened(path):
    from rlmcore.ledger import MIGRATIONS
    conn = sqlite3.connect(path)
    name, sql = MIGRATIONS[0]
    for statement in filter(str.strip, sql.split(";")):
        conn.execute(statement)
    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    conn.execute("INSERT INTO migrations VALUES (?, 0)", (name,))
    conn.commit()
    conn.close()
    with Ledger(path) as led:
        led.reserve(usd=0.1, tokens=10, if_lost={"usd": 0.01})
        assert led.budget()["reserved"]["usd"] == 0.1
    conn = sqlite3.connect(path)
    assert {r[0] for r in conn.execute("SELECT name FROM migrations")} == {n for n, _ in MIGRATIONS}
    conn.close()


def test_reservations_of_a_live_process_are_kept(ledger, path):
    ledger.set_limits(max_usd=1.0)
    proc = run_python(RESERVE_AND_WAIT, path, "wait")
    try:
        assert proc.stdout.readline().strip() == "reserved"
        with pytest.raises(BudgetExceeded):
            ledger.reserve(usd=0.5, tokens=0)
    finally:
        proc.communicate("\n")
    ledger.reserve(usd=0.5, tokens=0)


def test_budget_exceeded_names_the_limit_the_amounts_and_how_to_raise_it(ledger):
    ledger.set_limits(max_usd=0.5)
    ledger.finish_call(ledger.reserve(usd=0.3, tokens=10), request_hash="a", response=None, record=ok(0.25))
    ledger.reserve(usd=0.2, tokens=10)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(usd=0.1, tokens=10)
    err = info.value
    assert "max_usd 0.50 USD" in err.message
    assert "spent 0.25" in err.message and "reserved 0.20" in err.message and "this request 0.10" in err.message
    assert "rlm_repl.py budget --session s1 --max-usd X" in err.hint and "max_tokens" in err.hint
    assert err.to_json()["limit"] == "max_usd" and err.to_json()["requested"] == 0.1


def test_a_library_ledger_s_refusal_says_how_to_raise_its_limit_in_python(tmp_path):
    (tmp_path / "library").mkdir(mode=0o700)
    with Ledger(str(tmp_path / "library" / "ledger.sqlite"), create=True) as led:
        led.set_limits(max_calls=0)
        with pytest.raises(BudgetExceeded) as info:
            led.reserve(usd=0.1, tokens=10)
    assert "set_limits(max_calls=...)" in info.value.hint and "--session" not in info.value.hint


def test_three_reservations_of_a_tenth_fit_a_limit_of_three_tenths(ledger):
    ledger.set_limits(max_usd=0.3)
    for _ in range(3):
        ledger.reserve(usd=0.1, tokens=0)
    with pytest.raises(BudgetExceeded):
        ledger.reserve(usd=0.000000001, tokens=0)


def test_calls_and_tokens_limits_are_enforced(ledger):
    ledger.set_limits(max_calls=2, max_tokens=1000)
    ledger.reserve(usd=0, tokens=600)
    with pytest.raises(BudgetExceeded, match="max_tokens 1,000 tokens"):
        ledger.reserve(usd=0, tokens=600)
    ledger.reserve(usd=0, tokens=400)
    with pytest.raises(BudgetExceeded, match="max_calls") as info:
        ledger.reserve(usd=0, tokens=0)
    assert "--max-calls N" in info.value.hint


def test_release_frees_the_reservation_without_billing(ledger):
    ledger.set_limits(max_calls=1)
    ledger.release(ledger.reserve(usd=0.1, tokens=100))
    b = ledger.budget()
    assert b["spent"] == {"calls": 0, "usd": 0, "tokens": 0}
    assert b["reserved"] == {"calls": 0, "usd": 0, "tokens": 0}
    ledger.reserve(usd=0.1, tokens=100)


def test_finish_call_bills_real_usage_and_counts_all_four_token_kinds(ledger):
    ledger.set_limits(max_usd=1.0, max_calls=10, max_tokens=10_000)
    rid = ledger.reserve(usd=0.5, tokens=5000)
    ledger.finish_call(rid, request_hash="h", response={"id": "msg"},
                       record=ok(0.02, input_tokens=100, output_tokens=50, cache_read_input_tokens=30,
                                 cache_creation_input_tokens=20))
    b = ledger.budget()
    assert b["spent"] == {"calls": 1, "usd": 0.02, "tokens": 200}
    assert b["reserved"] == {"calls": 0, "usd": 0, "tokens": 0}
    assert b["remaining"] == {"calls": 9, "usd": 0.98, "tokens": 9800}


def test_a_failed_request_counts_as_a_call_with_its_cost(ledger):
    ledger.set_limits(max_calls=5)
    ledger.finish_call(ledger.reserve(usd=0.1, tokens=10), request_hash="h", response=None,
                       record={"status": "error", "usd": 0, "error_type": "overloaded_error", "attempts": 3})
    assert ledger.budget()["spent"]["calls"] == 1
    assert ledger.cached_response("h") is None


def test_record_call_touches_no_budget(ledger):
    ledger.set_limits(max_calls=1)
    for status in ("reused", "dry_run", "budget"):
        ledger.record_call({"status": status, "usd": 0.5, "input_tokens": 10})
    assert ledger.budget()["spent"] == {"calls": 0, "usd": 0, "tokens": 0}
    with pytest.raises(ValueError):
        ledger.record_call({"status": "ok"})
    with pytest.raises(ValueError):
        ledger.finish_call(None, request_hash="h", response=None, record={"status": "reused"})


def test_finish_call_stores_the_response_if_and_only_if_the_spend_is_counted(ledger, path):
    rid = ledger.reserve(usd=0.1, tokens=10)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER boom BEFORE INSERT ON calls BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    conn.commit()
    with pytest.raises(LedgerError, match="disk trouble"):
        ledger.finish_call(rid, request_hash="h", response={"text": "paid"}, record=ok(0.05))
    assert ledger.cached_response("h") is None
    assert ledger.budget()["spent"]["usd"] == 0 and ledger.budget()["reserved"]["usd"] == 0.1

    conn.execute("DROP TRIGGER boom")
    conn.commit()
    conn.close()
    ledger.finish_call(rid, request_hash="h", response={"text": "paid"}, record=ok(0.05))
    assert ledger.cached_response("h") == {"text": "paid"}
    assert ledger.budget()["spent"]["usd"] == 0.05 and ledger.budget()["reserved"]["usd"] == 0


def test_cached_response_round_trips_the_paid_response(ledger):
    response = {"id": "msg_1", "content": [{"type": "text", "text": "héllo ✓"}],
                "usage": {"input_tokens": 5, "output_tokens": 2}, "stop_reason": "end_turn"}
    ledger.finish_call(ledger.reserve(usd=0.01, tokens=10), request_hash="abc", response=response, record=ok())
    assert ledger.cached_response("abc") == response
    assert ledger.cached_response("other") is None
    with Ledger(ledger.path) as again:
        assert again.cached_response("abc") == response


def test_budget_warns_when_eighty_percent_of_a_limit_is_spent(ledger):
    ledger.set_limits(max_usd=0.5, max_calls=10)
    for _ in range(7):
        ledger.finish_call(None, request_hash=None, response=None, record=ok(0.05))
    assert ledger.budget()["warnings"] == []
    ledger.finish_call(None, request_hash=None, response=None, record=ok(0.06))
    assert ledger.budget()["warnings"] == ["spent 80% of max_calls (8 of 10 calls)",
                                           "spent 82% of max_usd (0.41 of 0.50 USD)"]


def test_set_limits_rejects_bad_values_with_a_clear_message(ledger):
    for name, value in [("max_usd", -1), ("max_usd", "5"), ("max_usd", float("nan")), ("max_usd", float("inf")),
                        ("max_calls", 1.5), ("max_calls", True), ("max_tokens", -10)]:
        with pytest.raises(InputError, match=name) as info:
            ledger.set_limits(**{name: value})
        assert repr(value) in info.value.message
    assert ledger.limits() == {"max_calls": None, "max_usd": None, "max_tokens": None}


def test_set_limits_changes_only_what_is_given_and_none_lifts_a_limit(ledger):
    ledger.set_limits(max_calls=10, max_usd=1, max_tokens=5000)
    assert ledger.set_limits(max_usd=None) == {"max_calls": 10, "max_usd": None, "max_tokens": 5000}
    assert ledger.budget()["remaining"]["usd"] is None


def test_lowering_a_limit_below_the_spend_is_allowed_and_further_reserves_fail(ledger):
    ledger.finish_call(None, request_hash=None, response=None, record=ok(0.4))
    ledger.set_limits(max_usd=0.1)
    assert ledger.budget()["remaining"]["usd"] == 0
    with pytest.raises(BudgetExceeded):
        ledger.reserve(usd=0.01, tokens=0)


def test_limits_set_in_one_process_are_seen_by_another(ledger, path):
    with Ledger(path) as other:
        other.set_limits(max_calls=0)
    with pytest.raises(BudgetExceeded):
        ledger.reserve(usd=0, tokens=0)
    assert ledger.budget()["warnings"] == ["max_calls is 0: no sub-call can be made"]


# ---- summaries ------------------------------------------------------------

def test_exec_calls_and_totals_report_every_figure(ledger):
    e1, e2 = ledger.begin_exec("a"), ledger.begin_exec("b")
    ledger.finish_call(None, request_hash="1", response={}, record=ok(
        0.01, exec_id=e1, attempts=3, input_tokens=100, output_tokens=10,
        cache_read_input_tokens=1000, cache_creation_input_tokens=500))
    ledger.finish_call(None, request_hash="2", response=None, record={
        "status": "error", "usd": 0.002, "exec_id": e1, "attempts": 2, "input_tokens": 5})
    ledger.record_call({"status": "budget", "exec_id": e1})
    ledger.record_call({"status": "reused", "exec_id": e1, "request_hash": "1", "input_tokens": 100})
    ledger.record_call({"status": "dry_run", "exec_id": e1, "usd": 0.3, "input_tokens": 9999})
    ledger.finish_call(None, request_hash="3", response={}, record=ok(0.5, exec_id=e2, output_tokens=7))

    assert ledger.exec_calls(e1) == {
        "count": 2, "failed": 2, "retries": 3, "input_tokens": 105, "output_tokens": 10,
        "cache_read_tokens": 1000, "cache_write_tokens": 500, "usd": 0.012, "reused": 1,
        "dry_run": 1, "dry_run_usd": 0.3}
    totals = ledger.totals()
    assert totals["count"] == 3 and totals["output_tokens"] == 17 and totals["usd"] == 0.512
    assert ledger.exec_summaries()[e2]["usd"] == 0.5
    assert ledger.exec_calls(999)["count"] == 0


def test_totals_of_a_hundred_thousand_calls_read_only_the_covering_index(ledger, path):
    conn = sqlite3.connect(path)
    rows = [(i % 300, "ok" if i % 10 else "error", 1 + i % 3, 1000, 200, 50, 0, 0.001, f"{i:064x}")
            for i in range(100_000)]
    conn.executemany("INSERT INTO calls (exec_id, status, attempts, input_tokens, output_tokens, "
                     "cache_read_input_tokens, cache_creation_input_tokens, usd, request_hash) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    with Ledger(path) as led:
        assert led.totals()["count"] == 100_000 and led.totals()["failed"] == 10_000
        assert led.exec_calls(7)["count"] == 100_000 // 300 + 1
    # Speed is bench_trace's to measure; here, that both summaries read only the covering index.
    conn = sqlite3.connect(path)
    for where in ("", "WHERE exec_id = 7"):
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + _GROUPS_SELECT.format(where=where)))
        assert "COVERING INDEX calls_summary" in plan, plan
    conn.close()


def test_a_thousand_calls_settled_from_twenty_threads_are_all_counted(ledger):
    def work(t):
        for i in range(50):
            rid = ledger.reserve(usd=0.01, tokens=100)
            ledger.finish_call(rid, request_hash=f"{t}-{i}", response={"text": "x" * 500},
                               record=ok(0.001, exec_id=1, input_tokens=80, output_tokens=20))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.totals()["count"] == 1000
    assert ledger.budget()["spent"]["calls"] == 1000 and ledger.budget()["reserved"]["calls"] == 0


# ---- exec history ---------------------------------------------------------

def test_exec_history_records_outcomes_and_marks_running_execs_interrupted(ledger):
    first = ledger.begin_exec("print(1)")
    ledger.end_exec(first, outcome="error", stdout_chars=12, error_type="ZeroDivisionError")
    second = ledger.begin_exec("while True: pass")
    assert [e["outcome"] for e in ledger.execs()] == ["error", "running"]

    assert ledger.interrupt_running_execs() == [second]
    history = ledger.execs()
    assert history[0] == dict(history[0], id=first, code="print(1)", outcome="error", stdout_chars=12,
                              error_type="ZeroDivisionError")
    assert history[1]["id"] == second and history[1]["outcome"] == "interrupted" and history[1]["ended"]
    assert [e["id"] for e in ledger.execs(limit=1)] == [second]


def test_end_exec_refuses_an_unknown_outcome_or_exec(ledger):
    eid = ledger.begin_exec("x")
    with pytest.raises(ValueError):
        ledger.end_exec(eid, outcome="running")
    with pytest.raises(LedgerError, match="no exec 42"):
        ledger.end_exec(42, outcome="ok")


# ---- files and damage -----------------------------------------------------

def test_the_ledger_and_its_wal_files_are_owner_only(ledger, path):
    ledger.finish_call(None, request_hash="h", response={}, record=ok())
    for name in (path, path + "-wal", path + "-shm"):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name


def test_a_missing_ledger_is_an_error_unless_creating(path):
    with pytest.raises(LedgerError, match="does not exist") as info:
        Ledger(path)
    assert path in info.value.message
    assert not os.path.exists(path)
    with Ledger(path, create=True) as led:
        assert led.created
    with Ledger(path, create=True) as led:
        assert not led.created


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00short", b"not a database at all\n" * 200])
def test_a_garbage_or_empty_file_is_refused_not_recreated(path, content):
    Path(path).write_bytes(content)
    with pytest.raises(LedgerError) as info:
        Ledger(path)
    assert path in info.value.message and "damaged" in info.value.message
    assert "move it aside" in info.value.hint and "no longer count" in info.value.hint
    assert Path(path).read_bytes() == content


def test_a_truncated_ledger_is_refused(path):
    with Ledger(path, create=True) as led:
        for i in range(300):
            led.finish_call(None, request_hash=str(i), response={"text": "x" * 200}, record=ok(0.01))
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(LedgerError, match="truncated") as info:
        Ledger(path)
    assert path in info.value.message


def test_damage_found_after_opening_is_reported_as_a_ledger_error(path):
    with Ledger(path, create=True) as led:
        for i in range(300):
            led.finish_call(None, request_hash=str(i), response={"text": "x" * 200}, record=ok(0.01))
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(os.path.getsize(path) - 4096))
    with pytest.raises(LedgerError, match="damaged") as info:
        Ledger(path).totals()
    assert path in info.value.message


def test_another_sqlite_database_is_not_taken_for_a_ledger(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="not an rlm ledger"):
        Ledger(path)


def test_read_only_and_full_disks_get_clear_messages(path):
    readonly = _translate(path, sqlite3.OperationalError("attempt to write a readonly database"))
    full = _translate(path, sqlite3.OperationalError("database or disk is full"))
    assert isinstance(readonly, LedgerError) and path in readonly.message and "writable" in readonly.hint
    assert "disk is full" in full.message and "free some disk space" in full.hint


def test_a_closed_ledger_says_so(path):
    led = Ledger(path, create=True)
    led.close()
    with pytest.raises(LedgerError, match="closed"):
        led.totals()
