"""Money: no answer paid for twice, no batch stuck holding budget, against the fake API over real HTTP."""
from __future__ import annotations

import threading

import pytest

from clitools import run
from rlmcore import loop, sessions
from rlmcore.api import Client
from rlmcore.ledger import Ledger
from rlmcore.subcalls import Engine, _Item

KEY = "sk-ant-test-money-5e0d"
HANG_GUARD_S = 60  # a deadlock detector, not a speed check: a sound batch here finishes at once


@pytest.fixture
def api(api, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return api


@pytest.fixture
def engine(api, tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.sqlite"), create=True)
    yield Engine(ledger, client=Client(sleep=lambda s: None))
    ledger.close()


def worst_usd(eng, prompt, **kw) -> float:
    return _Item(eng, prompt, system=None, prefix=None, model=None, max_tokens=None, cache=True, cache_ttl=None,
                 reuse=True, **kw).worst_usd


def in_thread(fn):
    """Run ``fn`` in a thread; its result, or None when it is still running after HANG_GUARD_S."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    return out[0] if out else None


def test_identical_prompts_in_one_batch_are_paid_once(engine, api):
    api.configure(latency=0.05)
    results = engine.llm_query_batch(["same", "other", "same", "same"], concurrency=4)
    assert results == ["echo: same", "echo: other", "echo: same", "echo: same"]
    assert api.stats()["answered_by_prompt"] == {"same": 1, "other": 1}
    totals = engine.ledger.totals()
    assert totals["count"] == 2 and totals["reused"] == 2


def test_identical_prompts_with_reuse_false_are_each_sent(engine, api):
    engine.llm_query_batch(["vote", "vote", "vote"], reuse=False)
    assert api.stats()["answered_by_prompt"] == {"vote": 3}


def test_an_item_waiting_for_budget_does_not_block_a_rate_limited_retry(engine, api):
    # Room for one worst case: item B waits for item A to settle. A is answered 429, which halves the batch's
    # requests in flight to one; its retry must get a slot even though B is still waiting.
    api.configure(latency=0.05)
    engine.ledger.set_limits(max_usd=worst_usd(engine, "item 0") * 1.5)
    api.fail_next(1, status=429, retry_after=0)
    results = in_thread(lambda: engine.llm_query_batch(["item 0", "item 1"], concurrency=2))
    assert results == ["echo: item 0", "echo: item 1"]
    assert engine.ledger.budget()["reserved"]["usd"] == 0


def test_a_rerun_exec_gets_a_child_loops_root_replies_from_the_ledger(api, tmp_path):
    # The child's first block fails: its traceback, shown to the root, must not name anything that changes
    # from one exec to the next, or every later root request of the re-run is a new, paid request.
    def responder(body):
        if (body.get("system") or [{}])[0].get("text") != loop.SYSTEM_PROMPT:
            return None
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        return ["```repl\nprint(len(context)); 1/0\n```", "```repl\nFINAL('ok')\n```"][min(turn, 1)]

    api.set_responder(responder)
    (tmp_path / "in.txt").write_text("some text\n")
    sessions.start([str(tmp_path / "in.txt")], [], "t", None, {}, False, None)
    code = "print(rlm_query('What is it?', 'pelican'))"
    first = run("t", code)
    assert first["error"] is None and first["stdout"].strip() == "ok"
    sent = api.stats()["requests"]
    again = run("t", code)
    assert again["stdout"].strip() == "ok"
    assert api.stats()["requests"] == sent
    assert again["calls"]["reused"] == 2 and again["calls"]["usd"] == 0


def test_a_rerun_right_after_a_timeout_waits_for_the_calls_still_in_flight_instead_of_paying_again(api, tmp_path):
    api.configure(latency=2.0)  # still in flight when the first exec times out and when the second starts
    (tmp_path / "in.txt").write_text("some text\n")
    sessions.start([str(tmp_path / "in.txt")], [], "t", None, {}, False, None)
    code = "print(llm_query_batch(['a', 'b', 'c'], concurrency=3))"
    first = run("t", code, "--timeout", "0.5")
    assert first["timed_out"]
    again = run("t", code)
    assert again["stdout"].strip() == "['echo: a', 'echo: b', 'echo: c']"
    assert api.stats()["answered_by_prompt"] == {"a": 1, "b": 1, "c": 1}
    # The calls of the first exec are counted there, not in the exec that reused their answers.
    assert again["calls"]["count"] == 0 and again["calls"]["reused"] == 3 and again["calls"]["usd"] == 0
