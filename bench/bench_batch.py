#!/usr/bin/env python3
"""Sub-call fan-out against the fake Messages API (tests/fake_api.py) on 127.0.0.1.

1. throughput: 1,000 prompts at concurrency 20, fake latency 100 ms; the
   ideal is 1000 / 20 x 0.1 s = 5 s. Target: wall time <= 1.10 x ideal.
2. cache warm-up: 100 prompts sharing a 5,000-token prefix on
   claude-haiku-4-5 (minimum cacheable 4,096). Billed prefix cost (cache
   writes x 1.25 + reads x 0.1 of the input price) with warm-up, against an
   all-parallel cold wave with warm-up off. Target: <= 15% of the cold wave.
3. spend caps: 100 trials at concurrency 20, each with a random limit, random
   prompt sizes and max_tokens, and random resets and 500s. Target: spend
   (both the ledger's and what the fake billed) never above the limit.
4. rate limit: 2,000 prompts against a fake limited to 600 requests per
   (sliding) minute. Time is scaled: the fake's clock runs SCALE times
   faster than real time and the client's retry waits are divided by SCALE,
   so a minute lasts 60/SCALE real seconds and every wait keeps its meaning.
   The limit admits request n no earlier than floor(n / 600) minutes in, so
   2,000 requests need at least 3 minutes. Target: no item lost, and done
   within 1.15 x that time.

    python3 bench/bench_batch.py [--only 1,2,3,4] [--trials 100]

Prints a table; exits 1 if a target is missed.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from fake_api import FakeAPI  # noqa: E402
from rlmcore import models  # noqa: E402
from rlmcore.api import Client  # noqa: E402
from rlmcore.ledger import Ledger  # noqa: E402
from rlmcore.subcalls import ERROR_MARK, Engine  # noqa: E402

KEY = "sk-bench-not-a-real-key"
SCALE = 20.0


def engine(tmp: str, name: str, api, *, limits=None, sleep=time.sleep, model="claude-haiku-5-5", **kw) -> Engine:
    ledger = Ledger(os.path.join(tmp, name + ".sqlite"), create=True)
    if limits:
        ledger.set_limits(**limits)
    return Engine(ledger, client=Client(KEY, api.base_url, sleep=sleep, **kw), model=model)


def lost(results) -> int:
    return sum(r.startswith(ERROR_MARK) for r in results)


def bench_throughput(tmp: str) -> tuple:
    with FakeAPI(latency=0.1) as api:
        eng = engine(tmp, "throughput", api)
        t0 = time.perf_counter()
        results = eng.llm_query_batch([f"question {i}" for i in range(1000)], concurrency=20)
        wall = time.perf_counter() - t0
    ideal = 1000 / 20 * 0.1
    return ("1 throughput 1,000 x 100 ms @20", f"{wall:.2f} s ({wall / ideal:.3f}x ideal 5 s, lost {lost(results)})",
            "<= 1.10x", wall <= 1.10 * ideal and not lost(results))


def prefix_cost(billed: dict) -> float:
    """USD of the shared prefix on claude-haiku-4-5: cache writes and reads."""
    price = models.MODELS["claude-haiku-4-5"]["tiers"][0][1]
    return (billed["cache_creation_input_tokens"] * 1.25 + billed["cache_read_input_tokens"] * 0.1) * price / 1e6


def bench_warm_up(tmp: str) -> tuple:
    prefix = "".join(f"Line {i:05d} of the shared document, the same for every prompt.\n" for i in range(400))
    prefix = prefix[:20_000]  # 5,000 fake tokens on claude-haiku-4-5 (4 bytes a token)
    prompts = [f"Question {i}: what does line {i} say?" for i in range(100)]
    costs, writes = {}, {}
    for warm in (True, False):
        # 0.5 s of latency: every request of the cold wave is in flight before the first answer.
        with FakeAPI(latency=0.5) as api:
            eng = engine(tmp, f"warm{warm}", api, model="claude-haiku-4-5")
            eng.warm_up = warm
            results = eng.llm_query_batch(prompts, prefix=prefix, concurrency=100)
            assert not lost(results), results[:3]
            billed = api.stats()["billed"]
            costs[warm] = prefix_cost(billed)
            writes[warm] = billed["cache_creation_input_tokens"] // 5000
    ratio = costs[True] / costs[False]
    return ("2 warm-up 100 x 5,000-token prefix", f"${costs[True]:.5f} vs cold ${costs[False]:.5f} = {ratio:.1%} "
            f"(cache writes {writes[True]} vs {writes[False]})",
            "<= 15%", ratio <= 0.15)


def fake_billed_usd(model: str, billed: dict) -> float:
    return models.cost_usd(model, billed)


def bench_spend_caps(tmp: str, trials: int) -> tuple:
    rng = random.Random(7)
    worst_over, spent_total, limit_hits = 0.0, 0, 0
    with FakeAPI(latency=0.0) as api:
        for trial in range(trials):
            api.reset_stats()
            api.clear_faults()
            api.set_faults(rate_reset=rng.choice([0, 0.05]), rate_500=rng.choice([0, 0.05]), seed=trial)
            max_tokens = rng.choice([16, 64, 256])
            prompts = ["x" * rng.randint(10, 3000) + f" #{trial}-{i}" for i in range(rng.randint(20, 80))]
            one = models.worst_case_usd("claude-haiku-4-5", 3300, max_tokens)
            limit = round(one * rng.uniform(0.5, 15), 6)
            eng = engine(tmp, f"cap{trial}", api, model="claude-haiku-4-5", limits={"max_usd": limit},
                         sleep=lambda s: None)
            results = eng.llm_query_batch(prompts, max_tokens=max_tokens, concurrency=20)
            spent = eng.ledger.budget()["spent"]["usd"]
            billed = fake_billed_usd("claude-haiku-4-5", api.stats()["billed"])
            worst_over = max(worst_over, spent - limit, billed - limit)
            spent_total += 1
            limit_hits += any("budget_exceeded" in r for r in results)
            eng.ledger.close()
    overshoot = max(0.0, worst_over)
    return (f"3 spend caps, {trials} trials @20", f"overshoot ${overshoot:.9f} ({limit_hits} trials hit the cap)",
            "exactly 0", overshoot == 0.0)


def bench_rate_limit(tmp: str) -> tuple:
    n, rpm = 2000, 600
    with FakeAPI(latency=0.0, rpm_limit=rpm, clock=lambda: time.monotonic() * SCALE) as api:
        eng = engine(tmp, "rpm", api, sleep=lambda s: time.sleep(s / SCALE))
        t0 = time.perf_counter()
        results = eng.llm_query_batch([f"item {i}" for i in range(n)], concurrency=20)
        wall = (time.perf_counter() - t0) * SCALE  # in the fake's seconds
        answered = len(api.stats()["answered_by_prompt"])
        by_status = api.stats()["by_status"]
    allowed = (n - 1) // rpm * 60.0
    missing = lost(results) + (n - answered)
    return (f"4 rate limit {n} @ {rpm}/min", f"{wall:.0f} s vs {allowed:.0f} s allowed ({wall / allowed:.3f}x), "
            f"lost {missing}, 429s {by_status.get(429, 0)}", "<= 1.15x, lost 0",
            wall <= 1.15 * allowed and missing == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="1,2,3,4", help="which benchmarks to run, e.g. 1,3")
    parser.add_argument("--trials", type=int, default=100, help="spend-cap trials")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RLM_HOME"] = tmp
        if "1" in chosen:
            rows.append(bench_throughput(tmp))
        if "2" in chosen:
            rows.append(bench_warm_up(tmp))
        if "3" in chosen:
            rows.append(bench_spend_caps(tmp, args.trials))
        if "4" in chosen:
            rows.append(bench_rate_limit(tmp))
    width = max(len(r[0]) for r in rows)
    for name, figure, target, ok in rows:
        print(f"{name:<{width}}  {'ok  ' if ok else 'MISS'}  {figure}  (target {target})")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
