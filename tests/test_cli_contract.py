"""The CLI contract of SPEC.md at its edges, through the real CLI: unusual but legitimate inputs, and settings
given where a user gives them (the shell that runs the command)."""
from __future__ import annotations

import os

import pytest

from fake_api import FakeAPI

from clitools import ok, rlm, run, start, worker_pid


def session_dir(name: str) -> str:
    return os.path.join(os.environ["RLM_HOME"], "sessions", name)


# ---- output that is not valid UTF-8 --------------------------------------------------------------------------

def test_printed_lone_surrogates_come_back_as_json_escapes_in_valid_utf8(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "u")
    out = run("u", r'print("a\udc80b"); import sys; sys.stderr.write("\ud800\n"); raise KeyError("\udcff")')
    assert out["stdout"] == "a\udc80b\n" and out["stderr"] == "\ud800\n"  # clitools decodes stdout strictly
    assert out["error"]["type"] == "KeyError" and "udcff" in out["error"]["message"]
    assert run("u", "print('next')")["stdout"] == "next\n"


def test_code_with_bytes_that_are_not_utf8_runs_with_replacement_characters_from_every_source(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "b")
    pid = worker_pid(session_dir("b"))
    code = tmp_path / "code é.py"
    code.write_bytes(b'print("\xff ok")\n')
    assert run("b", "x = 1")["error"] is None
    assert ok("exec", "--session", "b", "--file", code)["stdout"] == "\ufffd ok\n"
    out = ok("exec", "--session", "b", "-c", os.fsdecode(b'print("\x80 argv", x)'))
    assert out["stdout"] == "\ufffd argv 1\n" and "worker_restarted" not in out
    assert worker_pid(session_dir("b")) == pid


# ---- settings from the shell that runs exec ---------------------------------------------------------------

def test_a_key_and_base_url_exported_after_start_reach_the_running_worker(tmp_path, monkeypatch):
    (tmp_path / "in.txt").write_text("hello\n")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    start(tmp_path / "in.txt", "e")  # no key, and the conftest's dead base URL
    pid = worker_pid(session_dir("e"))
    assert run("e", "llm_query('q')")["error"]["type"] == "ConfigError"
    with FakeAPI(keys={"sk-exported-later"}) as api:
        out = run("e", "print(llm_query('q'))",
                  env={"ANTHROPIC_API_KEY": "sk-exported-later", "ANTHROPIC_BASE_URL": api.base_url})
        assert out["error"] is None and out["stdout"] == "echo: q\n" and api.stats()["requests"] == 1
    assert worker_pid(session_dir("e")) == pid
    # Unset again in the shell of the next exec: unset for the worker too.
    assert run("e", "llm_query('q2')")["error"]["type"] == "ConfigError"


def test_rlm_concurrency_of_the_exec_shell_bounds_its_batch(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    with FakeAPI(latency=0.2) as api:
        env = {"ANTHROPIC_BASE_URL": api.base_url}
        start(tmp_path / "in.txt", "c", env=env)
        out = run("c", "print(len(llm_query_batch([f'q{i}' for i in range(6)])))",
                  env=dict(env, RLM_CONCURRENCY="2"))
        assert out["stdout"] == "6\n" and api.stats()["peak_concurrency"] == 2


# ---- errors the caller can act on, never an internal error -------------------------------------------------

def test_a_limit_that_is_not_a_finite_number_is_a_usage_error(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "n")
    for value in ("nan", "inf", "-inf"):
        result = rlm("budget", "--session", "n", f"--max-usd={value}")
        assert result.code == 2 and "not a finite number" in result["error"]["message"], result
    assert ok("budget", "--session", "n", "--max-usd", "none")["budget"]["limits"]["max_usd"] is None


def test_list_skips_stray_files_and_names_a_session_whose_json_is_damaged(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "good")
    start(tmp_path / "in.txt", "bad")
    ok("stop", "--session", "bad", "--keep")
    sessions = os.path.dirname(session_dir("good"))
    with open(os.path.join(sessions, "bad", "session.json"), "w") as f:
        f.write("{half")
    with open(os.path.join(sessions, "notes"), "w") as f:
        f.write("a file someone left here\n")
    listed = {row["session"]: row for row in ok("list")["sessions"]}
    assert set(listed) == {"good", "bad"} and "damaged" in listed["bad"] and "damaged" not in listed["good"]
    result = rlm("status", "--session", "bad")
    assert result.code == 1 and result["error"]["type"] == "session_error", result
    assert "session.json" in result["error"]["message"] and "damaged" in result["error"]["message"]
    assert ok("stop", "--session", "bad")["removed"] is True


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a folder nobody can create files in")
def test_trace_html_into_a_folder_that_refuses_files_is_an_input_error(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "h")
    result = rlm("trace", "--session", "h", "--html", "/proc/report.html")
    assert result.code == 1 and result["error"]["type"] == "input_error", result
    assert "/proc/report.html" in result["error"]["message"]


# ---- the REPL's own manual ------------------------------------------------------------------------------------

def test_help_of_the_sub_call_functions_shows_their_keywords_and_a_manual(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "m")
    text = run("m", "help(llm_query); help(llm_query_batch)")["stdout"]
    assert "llm_query(prompt, *, system=None, prefix=None" in text and "self" not in text
    assert "llm_query_batch(prompts, *, system=None" in text
    assert "prompt caching" in text and "[llm_query error" in text and "BatchError" in text


def test_input_meets_end_of_file_also_after_an_exec_called_exit(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "i")
    assert run("i", "input('name? ')")["error"]["type"] == "EOFError"
    assert run("i", "exit()")["error"]["type"] == "SystemExit"
    assert run("i", "input('name? ')")["error"]["type"] == "EOFError"


def test_logging_set_up_in_one_exec_reaches_the_reports_of_later_execs(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n")
    start(tmp_path / "in.txt", "l")
    out = run("l", "import logging, sys\nlogging.basicConfig(level=logging.INFO)\nlog = logging.getLogger('app')\n"
                   "log.info('first')\nkept = sys.stdout")
    assert out["stderr"] == "INFO:app:first\n"
    out = run("l", "log.info('second'); _ = kept.write('through a kept reference\\n')")
    assert out["stderr"] == "INFO:app:second\n" and out["stdout"] == "through a kept reference\n"
    assert run("l", "import sys; sys.stdout = open('/dev/null', 'w')")["error"] is None
    assert run("l", "print('the next exec prints again')")["stdout"] == "the next exec prints again\n"
