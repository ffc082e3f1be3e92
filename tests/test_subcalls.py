"""llm_query / llm_query_batch: reuse, budgets, retries, warm-up, dry runs, progress, library mode."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import pytest

from rlmcore import errors, models
from rlmcore.api import Client
from rlmcore.batch import AdaptiveLimiter, run_ordered
from rlmcore.ledger import Ledger
from rlmcore.subcalls import ERROR_MARK, Engine, _Item

KEY = "sk-ant-test-subcalls-SECRET-7c1f"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def env(fake_api, tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_api.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for name in ("RLM_DRY_RUN", "RLM_MODEL", "RLM_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def make_engine(env):
    opened = []

    def make(limits=None, *, client=None, **kw):
        ledger = Ledger(str(env / f"ledger{len(opened)}.sqlite"), create=True)
        if limits:
            ledger.set_limits(**limits)
        opened.append(ledger)
        return Engine(ledger, client=client or Client(sleep=lambda s: None), **kw)

    yield make
    for ledger in opened:
        ledger.close()


def billed_usd(fake_api, model):
    return models.cost_usd(model, fake_api.stats()["billed"])


# ---- one call ------------------------------------------------------------

def test_llm_query_returns_the_answer_and_records_the_call(make_engine, fake_api):
    eng = make_engine()
    eng.exec_id = 7
    assert eng.llm_query("hello") == "echo: hello"
    calls = eng.ledger.exec_calls(7)
    assert calls["count"] == 1 and calls["usd"] > 0 and calls["input_tokens"] > 0
    body = fake_api.stats()["received"][0]
    assert body["model"] == "claude-haiku-5-5" and body["max_tokens"] == 4096


def test_a_paid_request_is_answered_from_the_ledger_without_a_second_request(make_engine, fake_api):
    eng = make_engine()
    first = eng.llm_query("same question")
    assert eng.llm_query("same question") == first
    assert fake_api.stats()["requests"] == 1
    totals = eng.ledger.totals()
    assert totals["reused"] == 1 and totals["count"] == 1


def test_reuse_false_sends_the_request_again(make_engine, fake_api):
    eng = make_engine()
    eng.llm_query("same question")
    eng.llm_query("same question", reuse=False)
    assert fake_api.stats()["requests"] == 2


def test_any_change_of_parameters_is_a_different_request(make_engine, fake_api):
    eng = make_engine()
    eng.llm_query("q")
    eng.llm_query("q", max_tokens=100)
    eng.llm_query("q", system="be brief")
    eng.llm_query("q", cache_ttl="1h", system="be brief")
    eng.llm_query("q", model="haiku-4.5")
    assert fake_api.stats()["requests"] == 5


def test_an_answer_cut_at_max_tokens_says_so_visibly(make_engine, fake_api):
    fake_api.set_responder(lambda body: "word " * 100)
    answer = make_engine().llm_query("long please", max_tokens=5)
    assert answer.endswith("\n[llm_query: answer cut at max_tokens=5]")
    assert answer.startswith("word")


def test_max_tokens_above_the_models_limit_gets_the_apis_400(make_engine):
    with pytest.raises(errors.BadRequestError, match="max_tokens"):
        make_engine().llm_query("q", model="haiku-4.5", max_tokens=100_000)


def test_a_failed_call_raises_the_error_that_names_the_cause(make_engine, fake_api):
    fake_api.fail_next(3, status=529)
    with pytest.raises(errors.OverloadedError, match="after 3 attempts"):
        make_engine().llm_query("q")


def test_no_key_is_a_config_error_and_nothing_is_reserved(make_engine, fake_api, monkeypatch):
    eng = make_engine()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(errors.ConfigError, match="ANTHROPIC_API_KEY"):
        eng.llm_query("q")
    with pytest.raises(errors.ConfigError):
        eng.llm_query_batch(["a", "b"])
    assert fake_api.stats()["requests"] == 0
    assert eng.ledger.budget()["reserved"]["usd"] == 0


# ---- batches -------------------------------------------------------------

def test_batch_keeps_the_input_order(make_engine, fake_api):
    rng = random.Random(1)
    fake_api.configure(latency=lambda body: rng.random() * 0.02)
    prompts = [f"item {i}" for i in range(60)]
    assert make_engine().llm_query_batch(prompts, concurrency=10) == [f"echo: {p}" for p in prompts]


def test_batch_keeps_finished_results_when_one_item_fails(make_engine, fake_api):
    fake_api.fail_next(1, status=400, match="item 3")
    results = make_engine().llm_query_batch([f"item {i}" for i in range(6)])
    assert results[3].startswith(ERROR_MARK) and "invalid_request_error" in results[3]
    assert [r for i, r in enumerate(results) if i != 3] == [f"echo: item {i}" for i in (0, 1, 2, 4, 5)]


def test_a_failed_item_names_the_cause_and_the_attempts(make_engine, fake_api):
    fake_api.fail_next(100, status=429, retry_after=0.01, match="item 1")
    results = make_engine().llm_query_batch(["item 0", "item 1"])
    assert results[1].startswith("[llm_query error: rate_limit_error after 9 attempts")
    assert results[0] == "echo: item 0"


def test_errors_raise_gives_every_result_and_the_failed_indexes(make_engine, fake_api):
    fake_api.fail_next(2, status=400, match="bad")
    with pytest.raises(errors.BatchError) as info:
        make_engine().llm_query_batch(["ok 0", "bad 1", "ok 2", "bad 3"], errors="raise")
    assert info.value.failed == [1, 3]
    assert info.value.results[0] == "echo: ok 0" and info.value.results[1].startswith(ERROR_MARK)


def test_a_rerun_pays_only_for_the_items_that_failed(make_engine, fake_api):
    eng = make_engine()
    prompts = [f"item {i}" for i in range(10)]
    fake_api.fail_next(1, status=400, match="item 4")
    first = eng.llm_query_batch(prompts)
    second = eng.llm_query_batch(prompts)
    assert first[4].startswith(ERROR_MARK) and second[4] == "echo: item 4"
    assert fake_api.stats()["answered_by_prompt"] == {p: 1 for p in prompts}


def test_rate_limit_storm_lowers_the_requests_in_flight(make_engine, fake_api):
    seen = []
    fake_api.configure(latency=0.03)
    fake_api.set_responder(lambda body: seen.append(fake_api.stats()["in_flight"]))
    fake_api.fail_next(20, status=429, retry_after=0.01)
    # Real 10 ms waits between retries: with none, one item could retry fast enough to meet every 429 itself.
    results = make_engine(client=Client()).llm_query_batch([f"item {i}" for i in range(60)], concurrency=20)
    assert [r for r in results if r.startswith(ERROR_MARK)] == []
    assert max(seen[:20]) <= 11  # halved once for the whole wave of 429s, then grows back slowly


def test_adaptive_limiter_halves_once_per_wave_and_grows_back():
    limiter = AdaptiveLimiter(16, grow_every=2)
    wave = threading.Barrier(4)

    def rate_limited_request():
        limiter.acquire()
        wave.wait()  # all four were sent before any 429 came back
        limiter.rate_limited()
        limiter.release()

    threads = [threading.Thread(target=rate_limited_request) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert limiter.limit == 8
    rate_limited_request_after_the_cut = threading.Thread(target=lambda: (
        limiter.acquire(), limiter.rate_limited(), limiter.release()))
    rate_limited_request_after_the_cut.start()
    rate_limited_request_after_the_cut.join()
    assert limiter.limit == 4
    limiter.succeeded()
    limiter.succeeded()
    assert limiter.limit == 5 and limiter.in_flight == 0


def test_run_ordered_keeps_order_and_captures_exceptions():
    def fn(x):
        time.sleep(random.random() / 200)
        if x == 3:
            raise ValueError("three")
        return x * 2

    done = []
    results = run_ordered(range(8), fn, concurrency=4, on_done=lambda i, r: done.append(i))
    assert results[:3] == [0, 2, 4] and isinstance(results[3], ValueError) and results[7] == 14
    assert sorted(done) == list(range(8))


# ---- budgets -------------------------------------------------------------

def test_a_budget_refusal_sends_nothing(make_engine, fake_api):
    eng = make_engine({"max_usd": 1e-6})
    with pytest.raises(errors.BudgetExceeded):
        eng.llm_query("q")
    results = eng.llm_query_batch(["a", "b"])
    assert all(r.startswith("[llm_query error: budget_exceeded") for r in results)
    assert fake_api.stats()["requests"] == 0
    assert eng.ledger.totals()["failed"] == 3


def test_calls_in_flight_hold_back_their_worst_case_only_until_they_settle(make_engine, fake_api):
    fake_api.configure(latency=0.05)
    prompts = [f"{i} " + "x" * 4000 for i in range(10)]
    limit = round(models.worst_case_usd("claude-haiku-5-5", 4400, 64) * 5, 9)  # 5 worst cases, ~15 real costs
    eng = make_engine({"max_usd": limit})
    results = eng.llm_query_batch(prompts, max_tokens=64, concurrency=10)
    assert not [r for r in results if r.startswith(ERROR_MARK)]
    assert fake_api.stats()["requests"] == 10
    assert eng.ledger.budget()["spent"]["usd"] <= limit


def test_twenty_threads_never_overshoot_the_spend_cap(make_engine, fake_api):
    one = models.worst_case_usd("claude-haiku-4-5", 700, 64)
    limit = round(one * 12.5, 9)
    eng = make_engine({"max_usd": limit}, model="haiku-4.5")

    def work(n):
        for i in range(10):
            try:
                eng.llm_query(f"thread {n} call {i} " + "x" * 400, max_tokens=64)
            except errors.BudgetExceeded:
                pass

    threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    batch = eng.llm_query_batch(["more " * 80 + str(i) for i in range(100)], max_tokens=64, concurrency=20)
    budget = eng.ledger.budget()
    assert budget["spent"]["usd"] <= limit and budget["reserved"]["usd"] == 0
    assert billed_usd(fake_api, "haiku-4.5") <= limit
    assert any(r.startswith("[llm_query error: budget_exceeded") for r in batch)


def test_a_timed_out_request_is_settled_at_its_worst_case(make_engine, fake_api):
    eng = make_engine(client=Client(timeout=1.0, max_retries=0))
    fake_api.fail_next(1, kind="slow", slow_s=2.5)
    with pytest.raises(errors.APITimeoutError):
        eng.llm_query("q", max_tokens=100)
    worst = _Item(eng, "q", system=None, prefix=None, model=None, max_tokens=100, cache=True,
                  cache_ttl=None, reuse=True).worst_usd
    assert eng.ledger.budget()["spent"]["usd"] == pytest.approx(worst, abs=1e-9)


def test_a_retry_after_a_timeout_is_sent_only_if_another_worst_case_fits(make_engine, fake_api):
    fake_api.fail_next(1, kind="slow", slow_s=2.5)
    eng = make_engine(client=Client(timeout=1.0, max_retries=2, sleep=lambda s: None))
    assert eng.llm_query("q", max_tokens=100) == "echo: q"
    assert eng.ledger.budget()["reserved"]["usd"] == 0
    worst = eng.ledger.budget()["spent"]["usd"]
    # Room for one worst case only: the timeout uses it, so no retry is sent.
    fake_api.fail_next(1, kind="slow", slow_s=1.0)
    tight = make_engine({"max_usd": worst}, client=Client(timeout=0.2, max_retries=2, sleep=lambda s: None))
    before = fake_api.stats()["requests"]
    with pytest.raises(errors.APITimeoutError, match="after 1 attempt"):
        tight.llm_query("other", max_tokens=100)
    assert fake_api.stats()["requests"] == before + 1
    assert tight.ledger.budget()["spent"]["usd"] <= worst


# ---- cache warm-up -------------------------------------------------------

def _warm_batch(make_engine, fake_api, prefix_tokens, n=10):
    fake_api.configure(latency=0.2)
    prefix = ("abcd" * prefix_tokens)  # 4 bytes a fake token on claude-haiku-4-5
    results = make_engine(model="haiku-4.5").llm_query_batch([f"q{i}" for i in range(n)], prefix=prefix)
    assert not any(r.startswith(ERROR_MARK) for r in results)
    return fake_api.stats()


def test_a_long_shared_prefix_is_written_to_the_cache_once_then_read(make_engine, fake_api):
    stats = _warm_batch(make_engine, fake_api, 5000)
    assert stats["billed"]["cache_creation_input_tokens"] == 5000
    assert stats["billed"]["cache_read_input_tokens"] == 9 * 5000
    assert stats["peak_concurrency"] == 9  # the first went alone, the rest together


def test_a_prefix_below_the_models_minimum_gets_no_warm_up(make_engine, fake_api):
    stats = _warm_batch(make_engine, fake_api, 1000)
    assert stats["peak_concurrency"] == 10
    assert stats["billed"]["cache_creation_input_tokens"] == 0


def test_warm_up_goes_on_past_items_answered_from_the_ledger(make_engine, fake_api):
    eng = make_engine(model="haiku-4.5")
    prefix = "abcd" * 5000
    eng.llm_query("q0", prefix=prefix)
    fake_api.reset_stats()
    fake_api.clear_cache()
    eng.llm_query_batch([f"q{i}" for i in range(6)], prefix=prefix)
    assert fake_api.stats()["billed"]["cache_creation_input_tokens"] == 5000


# ---- dry run and progress --------------------------------------------------

def test_dry_run_sends_nothing_needs_no_key_and_records_the_expected_cost(make_engine, fake_api, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    eng = make_engine()
    eng.dry_run = True
    eng.exec_id = 1
    answer = eng.llm_query("x" * 400)
    # 130 input tokens at $0.10/M and a full 4096-token answer at $0.50/M
    assert answer == "[dry run: claude-haiku-5-5, ~130 input tokens, max 4096 output, about $0.0021]"
    assert abs(eng.ledger.exec_calls(1)["dry_run_usd"] - (130 * 0.10 + 4096 * 0.50) / 1e6) < 1e-12
    assert len(eng.llm_query_batch(["a", "b"], prefix="p" * 5000)) == 2
    calls = eng.ledger.exec_calls(1)
    assert calls["dry_run"] == 3 and calls["dry_run_usd"] > 0 and calls["usd"] == 0
    assert fake_api.stats()["requests"] == 0


def test_rlm_dry_run_in_the_environment_is_a_dry_run(make_engine, fake_api, monkeypatch):
    monkeypatch.setenv("RLM_DRY_RUN", "1")
    assert make_engine().llm_query("q").startswith("[dry run: ")
    assert fake_api.stats()["requests"] == 0


def test_progress_counts_items_as_they_finish(make_engine, fake_api):
    eng = make_engine()
    snapshots = []
    fake_api.fail_next(1, status=500, match="item 2")
    fake_api.fail_next(1, status=400, match="item 5")
    fake_api.set_responder(lambda body: snapshots.append(eng.progress))
    eng.llm_query_batch([f"item {i}" for i in range(8)], concurrency=1)
    assert eng.progress is None
    last = snapshots[-1]
    assert last["total"] == 8 and last["done"] == 7 and last["failed"] == 1 and last["retries"] == 1
    assert last["usd"] > 0 and last["eta_s"] is not None and last["elapsed_s"] >= 0
    assert [s["done"] for s in snapshots] == sorted(s["done"] for s in snapshots)


# ---- library mode and the key --------------------------------------------

@pytest.fixture
def helper(env):
    import rlm_helper
    yield rlm_helper
    eng = rlm_helper._engine
    rlm_helper.use_engine(None)
    if eng is not None:
        eng.ledger.close()


def test_import_rlm_helper_gives_llm_query_on_the_library_ledger(helper, env, fake_api):
    assert helper.llm_query("hi") == "echo: hi"
    assert helper.llm_query_batch(["a", "b"]) == ["echo: a", "echo: b"]
    path = env / "home" / "library" / "ledger.sqlite"
    assert path.exists()
    assert helper.engine().ledger.limits()["max_usd"] == 2.0
    assert helper.RLMError is errors.RLMError and helper.Engine is Engine


def test_configure_points_the_library_at_another_ledger(helper, env):
    helper.configure(ledger_path=str(env / "mine.sqlite"), model="haiku-4.5")
    helper.llm_query("hi")
    assert Ledger(str(env / "mine.sqlite")).totals()["count"] == 1


def test_a_plain_python_program_can_import_rlm_helper(env, fake_api):
    code = "import rlm_helper; print(rlm_helper.llm_query_batch(['x', 'y']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['echo: x', 'echo: y']"


def test_the_key_is_in_no_file_under_rlm_home_after_errors_and_retries(helper, env, fake_api):
    fake_api.fail_next(2, status=429, retry_after=0.01)
    fake_api.fail_next(1, kind="reset")
    fake_api.fail_next(3, status=500, match="item 4")
    fake_api.fail_next(1, status=400, match="item 5")
    helper.configure(client=Client(sleep=lambda s: None))
    helper.llm_query_batch([f"item {i}" for i in range(8)])
    with pytest.raises(errors.AuthenticationError):
        fake_api.configure(keys={"another"})
        helper.llm_query("refused")
    helper.engine().ledger.close()
    files = [os.path.join(d, f) for d, _, fs in os.walk(env / "home") for f in fs]
    assert files
    for path in files:
        with open(path, "rb") as f:
            assert KEY.encode() not in f.read(), path
