"""Every example runs end to end offline (the fake API's reader answers its sub-calls) and gets the answer
right; the dry run sends nothing; without a key or a flag an example says what to do.

The answers are checked against the generated inputs, read here independently of the example's own code.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def example(name: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))


def answer_of(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SIMULATED" in proc.stdout.splitlines()[0]
    match = re.search(r"===== SIMULATED ANSWER \(offline fake API\) =====\n(.*)\n===== END =====", proc.stdout,
                      re.DOTALL)
    assert match, proc.stdout
    return match.group(1)


def test_log_triage_finds_every_error_pattern_with_its_count_first_line_and_trail(tmp_path):
    answer = answer_of(example("log_triage.py", "--offline", "--workdir", tmp_path))
    with open(tmp_path / "shop.log", encoding="utf-8") as f:
        log = f.read().splitlines()
    blocks = answer.split("\n- ")[1:]
    assert len(blocks) == 4
    for kind in ("upstream timeout", "connection pool exhausted", "token signature invalid", "KeyError"):
        lines = [n for n, line in enumerate(log, 1) if " ERROR " in line and kind in line]
        block = next(b for b in blocks if kind in b.splitlines()[0])
        assert f"count: {len(lines)}\n" in block
        assert f"first: line {lines[0]} at {log[lines[0] - 1][:20]}" in block
        assert log[lines[0] - 1].strip() in block  # the trail ends with the failing line itself


def test_code_review_reports_each_planted_problem_at_its_file_and_line(tmp_path):
    answer = answer_of(example("code_review.py", "--offline", "--workdir", tmp_path))
    found, path = set(), None
    for row in answer.splitlines():
        if row.startswith("shop/"):
            path = row.strip()
        elif row.startswith("  line "):
            found.add((path, int(row.split()[1].rstrip(":"))))
    assert found == {("shop/calc.py", 6), ("shop/db.py", 4), ("shop/orders.py", 9), ("shop/payments.py", 4),
                     ("shop/payments.py", 12)}
    assert "No findings: shop/__init__.py, shop/models.py" in answer


def test_needle_search_finds_the_one_number_among_distractors(tmp_path):
    answer = answer_of(example("needle_search.py", "--offline", "--workdir", tmp_path, "--city", "Kyoto"))
    haystack = (tmp_path / "haystack.txt").read_text(encoding="utf-8")
    numbers = dict(re.findall(r"special magic number for (\w+) is: (\d+)", haystack))
    assert len(numbers) == 5
    assert answer.startswith(f"The special magic number for Kyoto is {numbers['Kyoto']}.\n")
    assert not any(n in answer for city, n in numbers.items() if city != "Kyoto")


@pytest.mark.parametrize("name", ["log_triage.py", "code_review.py", "needle_search.py"])
def test_a_dry_run_prices_the_sub_calls_and_needs_no_key(name, tmp_path):
    proc = example(name, "--dry-run", "--workdir", tmp_path, env={"ANTHROPIC_API_KEY": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("DRY RUN")
    assert re.search(r"\[dry run: \d+ sub-calls priced, estimated \$\d", proc.stdout)
    assert "ANSWER" not in proc.stdout


def test_without_a_key_an_example_names_the_flags_that_work_offline(tmp_path):
    proc = example("needle_search.py", "--workdir", tmp_path, env={"ANTHROPIC_API_KEY": ""})
    assert proc.returncode != 0
    assert "--offline" in proc.stderr and "--dry-run" in proc.stderr
