"""Progress of a running batch: one updating stderr line, in `status` and in the `running` JSON, never on stdout."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from clitools import CLI, ok, rlm, start
from fake_api import FakeAPI

BATCH = "r = llm_query_batch([f'question {i}' for i in range(16)], concurrency=2)\nprint(len(r))"
PROGRESS_KEYS = {"done", "total", "failed", "retries", "usd", "elapsed_s", "eta_s"}


@pytest.fixture
def slow_api(tmp_path):
    """A session whose 16-call batch takes about two seconds, so progress is published a few times."""
    logfile = tmp_path / "in.txt"
    logfile.write_text("hello\n")
    with FakeAPI(latency=0.25) as api:
        env = {"ANTHROPIC_BASE_URL": api.base_url}
        start(logfile, "p", env=env)
        yield env


def test_progress_goes_to_stderr_with_RLM_PROGRESS_1_and_never_into_the_stdout_json(slow_api):
    result = rlm("exec", "--session", "p", "-c", BATCH, env=dict(slow_api, RLM_PROGRESS="1"))
    assert result.code == 0, result
    stderr = result.stderr.decode()
    assert "[rlm] " in stderr and "/16 done" in stderr, stderr
    assert "\x1b" not in stderr  # no terminal codes when stderr is not a terminal
    assert stderr.endswith("\n")  # the line is ended once the batch is over
    stdout = result.stdout.decode()
    assert json.loads(stdout)["stdout"] == "16\n" and stdout.count("\n") == 1 and "[rlm]" not in stdout


def test_progress_is_silent_when_stderr_is_not_a_terminal(slow_api):
    result = rlm("exec", "--session", "p", "-c", BATCH, env=slow_api)
    assert result.code == 0 and result.stderr == b""


def _run_on_a_terminal(args, env) -> tuple:
    """Run the CLI with stderr on a pseudo-terminal; return (stdout bytes, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, CLI, *args], stdout=subprocess.PIPE, stderr=slave,
                            env=dict(os.environ, **env))
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout = proc.stdout.read()
    proc.wait(timeout=60)
    os.close(master)
    return stdout, seen.decode()


def test_progress_updates_one_line_in_place_on_a_terminal_and_erases_it_at_the_end(slow_api):
    stdout, terminal = _run_on_a_terminal(["exec", "--session", "p", "-c", BATCH], slow_api)
    assert json.loads(stdout)["stdout"] == "16\n"
    assert "\r[rlm] " in terminal and "/16 done" in terminal
    assert "\n" not in terminal.replace("\r\n", "")  # never a new line: the same line is rewritten
    assert terminal.endswith("\r\x1b[K")  # erased once the batch is over


def test_RLM_PROGRESS_0_silences_a_terminal(slow_api):
    stdout, terminal = _run_on_a_terminal(["exec", "--session", "p", "-c", BATCH], dict(slow_api, RLM_PROGRESS="0"))
    assert json.loads(stdout)["ok"] is True and terminal == ""


def test_a_long_exec_answers_running_with_its_progress_and_status_shows_it(slow_api):
    longer = BATCH.replace("concurrency=2", "concurrency=1")  # about 4 s: still running when wait joins
    running = ok("exec", "--session", "p", "--wait", "0.8", "-c", longer, env=dict(slow_api, RLM_PROGRESS="1"))
    assert running["running"] is True
    assert PROGRESS_KEYS <= set(running["progress"]) and running["progress"]["total"] == 16
    assert running["progress"]["done"] < 16
    status = ok("status", "--session", "p")["worker"]
    assert status["busy"] is True and status["progress"]["total"] == 16
    assert status["progress"]["done"] >= running["progress"]["done"]
    result = rlm("wait", "--session", "p", env=dict(slow_api, RLM_PROGRESS="1"))
    assert json.loads(result.stdout)["calls"]["count"] == 16
    assert "[rlm] " in result.stderr.decode()
    assert ok("status", "--session", "p")["worker"]["progress"] is None
