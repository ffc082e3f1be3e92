"""The persistent session through the real CLI: start, exec, wait, final, status, list, stop."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time

import pytest

from clitools import ok, rlm, run, start


@pytest.fixture
def logfile(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("".join(f"line {i} INFO all good\n" for i in range(1, 1001)) + "ERROR disk full\n")
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "a.py").write_text("print('a')\n")
    (root / "src" / "pkg" / "b.py").write_text("def b():\n    return 'é'\n")
    (root / "README.md").write_text("# readme\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    return root


# -- start --------------------------------------------------------------------------

def test_start_binds_one_file_and_prints_the_summary(logfile):
    out = start(logfile)
    assert out["session"] == "t1"
    assert out["files"] == 1 and out["bytes"] == logfile.stat().st_size
    assert out["lines"] == 1001 and out["chars"] == out["bytes"] and out["est_tokens"] > 0
    assert out["preview"].startswith("line 1 INFO")
    assert out["files_preview"][0]["bytes"] == out["bytes"]
    assert out["budget"]["limits"]["max_usd"] > 0
    assert os.path.isdir(out["session_dir"])


def test_context_files_offsets_match_every_file_on_disk(tree):
    start(tree)
    out = run("t1", "import json; print(json.dumps(context_files))")
    files = json.loads(out["stdout"])
    assert len(files) == 3  # .git is skipped
    for f in files:
        got = run("t1", f"print(context[{f['start']}:{f['end']}], end='')")["stdout"]
        assert got == (tree / os.path.relpath(os.path.abspath(f["path"]), tree)).read_text()


def test_glob_with_double_star_selects_nested_files(tree):
    out = ok("start", "--input", tree, "--glob", "src/**/*.py", "--session", "g")
    assert out["files"] == 2
    assert sorted(os.path.basename(f["path"]) for f in out["files_preview"]) == ["a.py", "b.py"]


def test_existing_session_is_refused_without_force_and_replaced_clean_with_it(logfile):
    start(logfile)
    run("t1", "FINAL('old answer')")
    again = rlm("start", "--input", logfile, "--session", "t1")
    assert again.code == 1 and again["error"]["type"] == "session_exists"
    ok("start", "--input", logfile, "--session", "t1", "--force", "--max-usd", "0.5")
    assert rlm("final", "--session", "t1")["error"]["type"] == "no_final"
    status = ok("status", "--session", "t1")
    assert status["budget"]["limits"]["max_usd"] == 0.5 and status["budget"]["spent"]["calls"] == 0


@pytest.mark.parametrize("bad", ["../x", "/etc", "", "a/b", ".hidden", "x" * 65])
def test_bad_session_ids_are_refused_before_any_file_is_touched(logfile, bad, isolated_home):
    result = rlm("start", "--input", logfile, "--session", bad)
    assert result.code == 1 and result["error"]["type"] == "invalid_session_id"
    assert not isolated_home.exists() or os.listdir(isolated_home) == []


def test_unknown_session_is_a_clear_error():
    result = rlm("exec", "--session", "nope", "-c", "1")
    assert result.code == 1 and result["error"]["type"] == "session_not_found"
    assert "start" in result["error"]["hint"]


def test_missing_input_path_is_a_clear_error(tmp_path):
    result = rlm("start", "--input", tmp_path / "missing.log", "--session", "m")
    assert result.code == 1 and result["error"]["type"] == "input_error"
    assert "missing.log" in result["error"]["message"]


def test_negative_and_non_numeric_budget_flags_are_usage_errors(logfile):
    for flag, value in (("--max-usd", "-1"), ("--max-calls", "many"), ("--max-tokens", "1.5")):
        result = rlm("start", "--input", logfile, "--session", "b", flag, value)
        assert result.code == 2, result
        assert result["error"]["type"] == "usage_error" and value in result["error"]["message"]


# -- exec -----------------------------------------------------------------------------

def test_variables_persist_between_execs_and_code_comes_from_stdin_c_or_file(logfile, tmp_path):
    start(logfile)
    run("t1", "n = len(context)")
    assert ok("exec", "--session", "t1", stdin="m = n * 2\nprint(m)")["stdout"] == f"{2 * logfile.stat().st_size}\n"
    code_file = tmp_path / "code.py"
    code_file.write_text("print(m - n)")
    assert ok("exec", "--session", "t1", "--file", code_file)["stdout"] == f"{logfile.stat().st_size}\n"


def test_final_bare_expression_is_shown_like_a_notebook(logfile):
    start(logfile)
    assert run("t1", "x = 41\nx + 1")["stdout"] == "42\n"
    assert run("t1", "None")["stdout"] == ""


def test_all_output_is_captured_and_print_to_a_real_file_still_writes_it(logfile, tmp_path):
    start(logfile)
    target = tmp_path / "side.txt"
    out = run("t1", f"import sys, pprint\nprint('a')\nsys.stdout.write('b\\n')\npprint.pprint({{'k': 1}})\n"
                    f"print('to stderr', file=sys.stderr)\n"
                    f"with open({str(target)!r}, 'w') as f:\n    print('file text', file=f)\n")
    assert out["stdout"] == "a\nb\n{'k': 1}\n"
    assert out["stderr"] == "to stderr\n"
    assert target.read_text() == "file text\n"


def test_long_output_shows_head_and_tail_and_spills_the_whole_to_a_file(logfile):
    start(logfile)
    out = run("t1", "for i in range(20000): print(f'row {i}')", env={"RLM_STDOUT_MAX": "2000"})
    assert out["stdout_truncated"] is True
    assert out["stdout"].startswith("row 0\n") and out["stdout"].rstrip().endswith("row 19999")
    assert "left out" in out["stdout"] and len(out["stdout"]) < 2500
    full = open(out["stdout_path"], encoding="utf-8").read()
    assert full == "".join(f"row {i}\n" for i in range(20000))
    assert out["stdout_chars"] == len(full)


def test_long_stderr_follows_the_same_rules_as_stdout(logfile):
    start(logfile)
    out = run("t1", "import sys\nfor i in range(20000): print(f'warn {i}', file=sys.stderr)",
              env={"RLM_STDOUT_MAX": "2000"})
    assert out["stderr_truncated"] is True and out["stdout"] == ""
    assert out["stderr"].startswith("warn 0\n") and out["stderr"].rstrip().endswith("warn 19999")
    assert "left out" in out["stderr"] and len(out["stderr"]) < 2500
    assert open(out["stderr_path"], encoding="utf-8").read() == "".join(f"warn {i}\n" for i in range(20000))


def test_exception_reports_the_users_lines_and_keeps_earlier_variables(logfile):
    start(logfile)
    out = run("t1", "kept = 7\ndef f():\n    raise ValueError('boom')\nf()")
    assert out["ok"] is False and out["error"]["type"] == "ValueError"
    tb = out["error"]["traceback"]
    assert "raise ValueError('boom')" in tb and "<exec" in tb
    assert "rlmcore" not in tb and "worker.py" not in tb
    assert run("t1", "kept")["stdout"] == "7\n"


def test_an_rlm_error_shows_the_users_frames_and_hint_but_not_rlms_internals(logfile):
    start(logfile)
    out = run("t1", "def find(p):\n    return grep(p)\nfind('(unclosed')")
    error = out["error"]
    assert error["type"] == "InputError" and "(unclosed" in error["message"] and "re.escape" in error["hint"]
    assert "return grep(p)" in error["traceback"] and "find('(unclosed')" in error["traceback"]
    assert "helpers.py" not in error["traceback"]  # the final line names the class, no frame of rlm is shown


def test_huge_exception_message_is_bounded(logfile):
    start(logfile)
    out = run("t1", "raise RuntimeError('x' * 50000)")
    assert out["error"]["type"] == "RuntimeError"
    assert len(out["error"]["message"]) < 3000 and len(json.dumps(out)) < 20000


@pytest.mark.parametrize("code,kind", [("x = (", "SyntaxError"), ("import sys; sys.exit(3)", "SystemExit"),
                                       ("raise KeyboardInterrupt", "KeyboardInterrupt")])
def test_syntax_error_exit_and_interrupt_are_reported_and_the_session_survives(logfile, code, kind):
    start(logfile)
    run("t1", "before = 1")
    out = run("t1", code)
    assert out["error"]["type"] == kind
    assert run("t1", "before + 1")["stdout"] == "2\n"


def test_variables_listing_is_capped_with_a_total(logfile):
    start(logfile)
    out = run("t1", "for i in range(10000): globals()[f'v{i}'] = i")
    assert out["variables_total"] == 10001  # the loop's i too
    assert len(out["variables"]) <= 50 and {"name", "type", "size"} <= set(out["variables"][0])
    assert len(json.dumps(out)) < 20000


def test_rebinding_injected_names_is_undone_and_reported(logfile):
    start(logfile)
    out = run("t1", "del llm_query\ncontext = 'mine'\nprint = None")
    assert set(out["restored_names"]) >= {"llm_query", "context", "print"}
    after = run("t1", "print(len(context), callable(llm_query))")
    assert after["stdout"] == f"{logfile.stat().st_size} True\n"


# -- wait, busy, timeout ---------------------------------------------------------------

def test_long_exec_keeps_running_and_wait_collects_it_while_a_second_exec_is_busy(logfile):
    start(logfile)
    first = run("t1", "import time; time.sleep(6); done = 'yes'", "--wait", "1.5")
    assert first["running"] is True and first["exec_id"]
    busy = rlm("exec", "--session", "t1", "-c", "1")
    assert busy.code == 1 and busy["error"]["type"] == "session_busy"
    assert "wait --session t1" in busy["error"]["hint"]
    collected = ok("wait", "--session", "t1", "--wait", "30")
    assert collected["ok"] is True and collected["exec_id"] == first["exec_id"]
    assert run("t1", "done")["stdout"] == "'yes'\n"


def test_timeout_interrupts_the_code_and_keeps_the_state(logfile):
    start(logfile)
    run("t1", "state = [1, 2]")
    out = run("t1", "import time\nstate.append(3)\ntime.sleep(60)", "--timeout", "1")
    assert out["timed_out"] is True and out["error"]["type"] == "ExecTimeout"
    assert "worker_restarted" not in out
    assert run("t1", "state")["stdout"] == "[1, 2, 3]\n"


def test_code_that_ignores_the_interrupt_gets_its_worker_restarted_from_the_checkpoint(logfile):
    start(logfile)
    run("t1", "saved = {'a': 1}")
    out = run("t1", "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
              "--timeout", "1", timeout=60)
    assert out["timed_out"] is True
    assert "saved" in out["worker_restarted"]["restored"]
    assert run("t1", "saved")["stdout"] == "{'a': 1}\n"


# -- restarts and checkpoints ----------------------------------------------------------

def _kill_worker(session_dir):
    with open(os.path.join(session_dir, "worker.pid")) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)


def test_killed_worker_comes_back_with_variables_definitions_and_imports(logfile):
    sdir = start(logfile)["session_dir"]
    run("t1", "import collections as col\nclass Box:\n    def __init__(self, v):\n        self.v = v\n"
              "def double(x):\n    return 2 * x\nbox = Box(21)\ncounts = col.Counter('aab')\nlines = context.split('\\n')")
    _kill_worker(sdir)
    out = run("t1", "print(double(box.v), counts['a'], col.__name__, len(lines))")
    assert out["stdout"] == "42 2 collections 1002\n"
    assert {"box", "counts", "lines"} <= set(out["worker_restarted"]["restored"])


def test_values_over_the_checkpoint_limit_are_named_in_dropped(logfile):
    start(logfile, env={"RLM_CHECKPOINT_MAX_MB": "0.01"})
    out = run("t1", "big = 'x' * 100000\nsmall = 1\nf = lambda: 1")
    dropped = {d["name"]: d["reason"] for d in out["dropped"]}
    assert "big" in dropped and "limit" in dropped["big"]
    assert "f" in dropped and "small" not in dropped


def test_os_exit_in_user_code_restarts_the_worker_and_says_so(logfile):
    start(logfile)
    run("t1", "keep = 5")
    out = run("t1", "import os; os._exit(1)")
    assert out["error"]["type"] == "WorkerDied"
    assert "worker_restarted" in out
    assert run("t1", "keep")["stdout"] == "5\n"


def test_sigkill_during_an_exec_is_reported_by_wait(logfile):
    sdir = start(logfile)["session_dir"]
    first = run("t1", "import time; time.sleep(30)", "--wait", "0.3")
    assert first["running"]
    _kill_worker(sdir)
    out = ok("wait", "--session", "t1")
    assert out["error"]["type"] == "WorkerDied" and out["exec_id"] == first["exec_id"]
    assert out["calls"]["count"] == 0 and "limits" in out["budget"]
    assert "worker_restarted" in out


# -- final -------------------------------------------------------------------------------

def test_final_var_finds_locals_then_globals_and_prints_raw_utf8(logfile):
    start(logfile)
    run("t1", "answer = 'global'\ndef f():\n    answer = 'résumé ✓'\n    FINAL_VAR('answer')\nf()")
    result = rlm("final", "--session", "t1", env={"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": ""})
    assert result.code == 0 and result.stdout == "résumé ✓".encode("utf-8")


def test_final_of_a_non_string_is_json_and_the_report_previews_it(logfile):
    start(logfile)
    out = run("t1", "FINAL({'errors': 3})")
    assert out["final"]["chars"] > 0 and '"errors": 3' in out["final"]["preview"]
    assert json.loads(rlm("final", "--session", "t1").stdout) == {"errors": 3}


def test_final_var_of_a_missing_name_lists_the_variables(logfile):
    start(logfile)
    out = run("t1", "result_a = 1\nFINAL_VAR('answer')")
    assert out["error"]["type"] == "NameError" and "result_a" in out["error"]["message"]


def test_final_without_an_answer_is_an_error_of_type_no_final(logfile):
    start(logfile)
    result = rlm("final", "--session", "t1")
    assert result.code == 1 and result["error"]["type"] == "no_final"


# -- status, list, stop --------------------------------------------------------------------

def test_status_list_and_stop(logfile):
    start(logfile)
    run("t1", "x = 1")
    status = ok("status", "--session", "t1")
    assert status["worker"]["alive"] is True and status["final"] is False
    assert status["worker"]["variables"][0]["name"] == "x"
    run("t1", "FINAL('done')")
    (row,) = ok("list")["sessions"]
    assert row["session"] == "t1" and row["final"] is True and row["usd"] == 0
    assert row["created"] <= row["last_used"] <= time.time()
    stopped = ok("stop", "--session", "t1", "--keep")
    assert stopped["stopped"] is True and os.path.isdir(status["session_dir"])
    assert ok("status", "--session", "t1")["worker"]["alive"] is False
    ok("stop", "--session", "t1")
    assert not os.path.exists(status["session_dir"])
    assert ok("list")["sessions"] == []


# -- safety ---------------------------------------------------------------------------------

def test_everything_under_rlm_home_is_owner_only(logfile, isolated_home):
    start(logfile)
    run("t1", "x = [1]\nFINAL('done')")
    for folder, dirs, files in os.walk(isolated_home):
        assert stat.S_IMODE(os.stat(folder).st_mode) & 0o077 == 0, folder
        for name in files:
            path = os.path.join(folder, name)
            assert stat.S_IMODE(os.lstat(path).st_mode) & 0o077 == 0, path


def test_the_worker_socket_refuses_a_connection_without_the_key(logfile):
    sdir = start(logfile)["session_dir"]
    cwd = os.getcwd()
    os.chdir(sdir)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect("worker.sock")
            sock.sendall(json.dumps({"op": "exec", "code": "x = 1", "key": "guess"}).encode() + b"\n")
            answer = json.loads(sock.makefile("rb").readline())
    finally:
        os.chdir(cwd)
    assert answer["error"]["type"] == "unauthorized"


def test_a_session_folder_writable_by_others_is_refused(logfile):
    sdir = start(logfile)["session_dir"]
    os.chmod(sdir, 0o777)
    result = rlm("exec", "--session", "t1", "-c", "1")
    assert result.code == 1 and "writable by other users" in result["error"]["message"]
    os.chmod(sdir, 0o700)


def test_code_importing_rlm_helper_in_the_repl_spends_from_the_session_ledger(logfile, fake_api):
    start(logfile, env={"ANTHROPIC_BASE_URL": fake_api.base_url})
    out = run("t1", "import rlm_helper\nprint(rlm_helper.llm_query('say hi'))",
              env={"ANTHROPIC_BASE_URL": fake_api.base_url})
    assert out["error"] is None and out["calls"]["count"] == 1
    assert fake_api.stats()["requests"] == 1


def test_a_dry_run_never_sets_the_final_answer_and_warns_when_the_plan_does_not_fit(logfile):
    start(logfile, "t1", "--max-usd", "0.001")
    out = run("t1", "answers = llm_query_batch(['q ' * 2000] * 5)\nFINAL(answers)", "--dry-run")
    assert out["final"] is None and "NOT set" in out["stdout"]
    assert out["calls"]["dry_run"] == 5 and "above the remaining budget" in " ".join(out["notes"])
    assert rlm("final", "--session", "t1")["error"]["type"] == "no_final"


def test_an_exec_with_no_code_is_a_usage_error(logfile):
    start(logfile)
    for extra in (("-c", "  "), ()):
        result = rlm("exec", "--session", "t1", *extra, stdin="" if not extra else None)
        assert result.code == 2 and "no code" in result["error"]["message"]


def test_a_progress_bar_redrawn_with_carriage_returns_shows_its_last_frame(logfile):
    start(logfile)
    out = run("t1", "import sys\nfor i in range(101):\n    sys.stdout.write(f'\\rprogress {i}%')\nprint()\nprint('done')")
    assert out["stdout"] == "progress 100%\ndone\n"
    assert out["stdout_chars"] > 1000  # every frame was written; only the display is collapsed


def test_the_environment_variables_of_spec_are_honoured(logfile, fake_api):
    env = {"ANTHROPIC_BASE_URL": fake_api.base_url, "RLM_MODEL": "claude-haiku-4-5", "RLM_MAX_CALLS": "7",
           "RLM_MAX_USD": "0.25", "RLM_MAX_TOKENS": "900000"}
    out = start(logfile, "t1", env=env)
    assert out["model"] == "claude-haiku-4-5"
    assert out["budget"]["limits"] == {"max_calls": 7, "max_usd": 0.25, "max_tokens": 900000}
    run("t1", "llm_query('hi')", env={"ANTHROPIC_BASE_URL": fake_api.base_url})
    assert fake_api.stats()["received"][-1]["model"] == "claude-haiku-4-5"
    dry = run("t1", "print(llm_query('not sent'))", env={"RLM_DRY_RUN": "1"})
    assert dry["stdout"].startswith("[dry run: ") and fake_api.stats()["requests"] == 1
    slow = run("t1", "import time; time.sleep(30)", env={"RLM_EXEC_TIMEOUT": "0.5"})
    assert slow["timed_out"] is True
