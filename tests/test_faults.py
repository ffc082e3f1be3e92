"""API faults: a big batch against an unreliable server, and the errors that must stop a batch.

Every test talks to the fake Messages API over real HTTP. Retry waits go through an injected sleep that records
what it was asked and waits at most 10 ms, so a 1,000-item batch with a fifth of its requests failing still
runs in seconds.
"""
from __future__ import annotations

import collections
import sqlite3
import time

import pytest

from fake_api import FakeAPI
from rlmcore import errors
from rlmcore.api import Client
from rlmcore.ledger import Ledger
from rlmcore.subcalls import ERROR_MARK, Engine

ITEMS = 1000


class Sleeps:
    """A sleep for the client's retries: records each wait, waits at most 10 ms."""

    def __init__(self):
        self.asked = []

    def __call__(self, seconds):
        self.asked.append(seconds)
        time.sleep(min(seconds, 0.01))


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(str(tmp_path / "ledger.sqlite"), create=True)
    led.set_limits(max_calls=None, max_usd=None, max_tokens=None)
    yield led
    led.close()


@pytest.fixture
def served(fake_api, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_api.base_url)
    return fake_api


def engine(ledger, timeout=10.0, sleeps=None, base_url=None, exec_id=1):
    """An engine whose client has the given timeout; the key and base URL come from the test's environment
    unless ``base_url`` is given."""
    client = Client(api_key="sk-test-faults" if base_url else None, base_url=base_url, timeout=timeout,
                    sleep=sleeps or Sleeps())
    eng = Engine(ledger, client=client)
    eng.exec_id = exec_id
    return eng


def call_rows(ledger_path, exec_id=1) -> list:
    """(item, status, attempts, error_type) of the calls of one exec, read straight from the file."""
    conn = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT item, status, attempts, error_type FROM calls WHERE exec_id = ? ORDER BY id",
                            (exec_id,)).fetchall()
    finally:
        conn.close()


# ---- the 1,000-item batch ------------------------------------------------------------------------------------

class Storm:
    """One 1,000-item batch (exec 1) run once for the tests below, and what it left behind."""


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    """429 with retry-after (10%), 529 (5%), 500 (2%), resets (1%), answers slower than the 1 s client timeout
    (1%); plus two items that fail on every attempt, so retries must run out for them."""
    with FakeAPI() as api:
        api.set_faults(rate_429=0.10, rate_529=0.05, rate_500=0.02, rate_reset=0.01, rate_slow=0.01,
                       slow_s=3.0, retry_after=0.01, seed=11)
        api.fail_next(3, status=500, match="item 0500!")
        api.fail_next(3, kind="reset", match="item 0700!")
        led = Ledger(str(tmp_path_factory.mktemp("storm") / "ledger.sqlite"), create=True)
        led.set_limits(max_calls=None, max_usd=None, max_tokens=None)
        s = Storm()
        s.api, s.ledger, s.sleeps = api, led, Sleeps()
        s.prompts = [f"item {i:04d}!" for i in range(ITEMS)]
        eng = engine(led, timeout=1.0, sleeps=s.sleeps, base_url=api.base_url)
        s.results = eng.llm_query_batch(s.prompts, concurrency=20)
        s.stats = api.stats()
        yield s
        led.close()


def test_every_item_of_a_faulty_batch_is_answered_in_order_or_reported_with_its_cause(storm):
    prompts, results, stats = storm.prompts, storm.results, storm.stats
    assert len(results) == ITEMS
    failed = {i: r for i, r in enumerate(results) if r.startswith(ERROR_MARK)}
    assert set(failed) >= {500, 700}
    assert "server_error" in failed[500] and "after 3 attempts (HTTP 500)" in failed[500]
    assert "connection_error after 3 attempts" in failed[700]
    for i, result in enumerate(results):
        assert result == f"echo: {prompts[i]}" or i in failed, (i, result)
    # Every fault kind was really met, and most items still got through.
    assert {429, 529, 500, "reset", "slow"} <= set(stats["by_status"])
    assert len(failed) < 20


def test_the_ledger_counts_every_attempt_the_server_received(storm):
    prompts, stats = storm.prompts, storm.stats
    rows = call_rows(storm.ledger.path)
    assert sorted(item for item, *_ in rows) == list(range(ITEMS))  # one call row per item
    assert sum(attempts for _, _, attempts, _ in rows) == stats["requests"]
    per_item = {item: attempts for item, _, attempts, _ in rows}
    assert all(per_item[i] == stats["by_prompt"][p] for i, p in enumerate(prompts))
    calls = storm.ledger.exec_calls(1)
    assert calls["count"] + calls["retries"] == stats["requests"]


def test_no_request_of_a_faulty_batch_is_paid_twice(storm):
    prompts, results, stats = storm.prompts, storm.results, storm.stats
    assert max(stats["answered_by_prompt"].values()) == 1
    answered = [p for p, r in zip(prompts, results) if not r.startswith(ERROR_MARK)]
    assert set(stats["answered_by_prompt"]) == set(answered)
    assert [s for _, s, _, _ in call_rows(storm.ledger.path)].count("ok") == len(answered)
    # A re-run (exec 2) is answered from the ledger for every paid item and sends only the failed ones.
    storm.api.clear_faults()
    before = storm.api.stats()["requests"]
    again = engine(storm.ledger, base_url=storm.api.base_url, exec_id=2).llm_query_batch(prompts, concurrency=20)
    assert again == [f"echo: {p}" for p in prompts]
    assert storm.api.stats()["requests"] - before == ITEMS - len(answered)
    assert max(storm.api.stats()["answered_by_prompt"].values()) == 1
    assert storm.ledger.exec_calls(2)["reused"] == len(answered)


def test_rate_limited_retries_wait_the_retry_after_the_server_gave(storm):
    stats = storm.stats
    waits = collections.Counter(storm.sleeps.asked)
    assert waits[0.01] == stats["by_status"][429]
    assert all(0 < s <= 8 for s in storm.sleeps.asked)


def test_an_answer_slower_than_the_client_timeout_is_a_timeout_that_is_retried(served, ledger):
    served.fail_next(1, kind="slow", slow_s=3.0, match="slow one")
    assert engine(ledger, timeout=1.0).llm_query("slow one") == "echo: slow one"
    (row,) = call_rows(ledger.path)
    assert row[1:3] == ("ok", 2) and served.stats()["by_prompt"]["slow one"] == 2


# ---- errors that stop a batch ---------------------------------------------------------------------------------

def test_a_spend_cap_stops_the_batch_without_retries_and_keeps_what_finished(served, ledger):
    served.fail_next(10 ** 6, kind="spend_cap", match="item 05")  # items 050-059: as if the cap hit there
    prompts = [f"item {i:03d}" for i in range(200)]
    results = engine(ledger).llm_query_batch(prompts, concurrency=4)
    stats = served.stats()
    # Items before the cap are answered, except one a thread had taken but not yet sent when the cap came.
    answered = [r == f"echo: {p}" for p, r in zip(prompts[:50], results[:50])]
    assert all(ok or "not sent" in r for ok, r in zip(answered, results[:50]))
    assert sum(answered) >= 50 - 4
    capped = {p: n for p, n in stats["by_prompt"].items() if p.startswith("item 05")}
    assert capped and all(n == 1 for n in capped.values())  # no retry of a spend cap
    assert results[50].startswith(f"{ERROR_MARK}: spend_limit_reached")
    assert "Anthropic Console" in results[50]
    # Once the cap is known, nothing more is sent: only requests already in flight went out.
    assert stats["requests"] <= 50 + 4
    for i in range(50, 200):
        assert results[i].startswith(ERROR_MARK) and "spend" in results[i], i
    assert all("not sent" in r for r in results[60:])
    rows = call_rows(ledger.path)
    assert len(rows) == 200
    assert sum(attempts for _, _, attempts, _ in rows) == stats["requests"]
    assert ledger.budget()["spent"]["calls"] == stats["requests"]


def test_a_spend_cap_with_errors_raise_is_a_batch_error_naming_it(served, ledger):
    served.fail_next(10 ** 6, kind="spend_cap")
    with pytest.raises(errors.BatchError, match="spend") as info:
        engine(ledger).llm_query_batch([f"q{i}" for i in range(30)], concurrency=2, errors="raise")
    assert info.value.failed == list(range(30))
    assert served.stats()["requests"] <= 2


def test_a_wrong_key_stops_the_batch_after_the_first_refusals(served, ledger):
    served.configure(keys={"sk-the-right-one"})
    results = engine(ledger).llm_query_batch([f"q{i}" for i in range(100)], concurrency=4)
    assert all(r.startswith(ERROR_MARK) for r in results)
    assert "check ANTHROPIC_API_KEY" in results[0]
    assert served.stats()["requests"] <= 4


def test_an_item_specific_400_does_not_stop_the_batch(served, ledger):
    served.fail_next(1, status=400, match="q3")
    results = engine(ledger).llm_query_batch([f"q{i}" for i in range(20)], concurrency=4)
    assert results[3].startswith(ERROR_MARK)
    assert [r for i, r in enumerate(results) if i != 3] == [f"echo: q{i}" for i in range(20) if i != 3]
