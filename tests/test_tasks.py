"""The task suite of bench/tasks: generators, scorers, and a fast offline run through `rlm_repl.py run`."""
from __future__ import annotations

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "tasks"))

import run_tasks  # noqa: E402
import tasks  # noqa: E402


def test_a_haystack_holds_its_needle_once_among_distractors_at_about_the_size_asked():
    task = tasks.make("needle", "32k", seed=3)
    assert abs(len(task.text) / tasks.CHARS_PER_TOKEN - 32_000) < 1_000
    magic = re.findall(r"The special magic number for (\S+) is: (\d{7})\.", task.text)
    assert len(magic) == 3 and (task.question.split(" for ")[1].rstrip("?"), task.expected) in magic
    assert tasks.make("needle", "32k", seed=3).text == task.text  # deterministic
    assert tasks.make("needle", "32k", seed=4).expected != task.expected


def test_record_tasks_expect_what_the_records_say():
    count = tasks.make("count", "8k")
    label = re.search(r'"(\w+)"', count.question).group(1)
    assert count.expected == count.text.count(f"label: {label} |")
    frequent = tasks.make("most_frequent", "8k")
    counts = {l: frequent.text.count(f"label: {l} |") for l in tasks.LABELS}
    assert frequent.expected == max(counts, key=counts.get)
    assert sorted(counts.values())[-1] > sorted(counts.values())[-2]
    pairs = tasks.make("pairs", "8k")
    users = sorted(set(re.findall(r"user=(u\d+) \| label: escalation", pairs.text)))
    assert len(pairs.expected) == len(users) * (len(users) - 1) // 2 > 0


@pytest.mark.parametrize("kind, right, wrong, partial", [
    ("needle", "{e}", "{e}, {d}", None),
    ("count", "{e}", "{e1}", 0.75),
    ("most_frequent", "{e}", "{e} or {other}", None),
])
def test_scorers_reward_the_right_answer_only(kind, right, wrong, partial):
    task = tasks.make(kind, "8k")
    other = next(l for l in tasks.LABELS if l != task.expected)
    fill = {"e": task.expected, "d": (task.info.get("distractors") or [""])[0], "other": other,
            "e1": task.expected + 1 if isinstance(task.expected, int) else ""}
    assert task.score(right.format(**fill)) == 1.0
    assert task.score(wrong.format(**fill)) == (partial or 0.0)
    assert task.score("") == 0.0


def test_pairs_are_scored_by_f1_in_either_order():
    task = tasks.make("pairs", "8k")
    pairs = sorted(task.expected)
    assert task.score(", ".join(p.split("-")[1] + " - " + p.split("-")[0] for p in pairs)) == 1.0
    half = pairs[: len(pairs) // 2]
    assert task.score(", ".join(half)) == pytest.approx(2 * 0.5 / 1.5, abs=0.05)
    assert task.score("u998-u999") == 0.0


def test_the_offline_suite_answers_every_kind_right_at_small_sizes(tmp_path):
    rows = run_tasks.run_suite(tasks.KINDS, ["8k", "32k"], home=str(tmp_path))
    assert [r["task"] for r in rows] == [f"{k}-{s}" for s in ("8k", "32k") for k in tasks.KINDS]
    for row in rows:
        assert row["score"] == 1.0, row
        assert row["iterations"] == 2 and row["calls"] >= 3 and row["usd"] > 0
