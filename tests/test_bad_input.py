"""Bad input of every kind, through the real CLI: each gets a clear error and leaves the session usable.

Inputs that cannot be bound, session ids that must never reach the filesystem, user code that exits, loops,
floods stdout, recurses without end or breaks the names the REPL relies on, sub-calls the API refuses, budget
flags that are not limits, and an RLM_HOME that is full or read-only. Sub-calls go to the fake Messages API
on 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from clitools import CLI, ok, rlm, run, start, worker_pid
from conftest import kill_workers


@pytest.fixture
def session(data):
    """A started session 's' with one variable; returns its folder."""
    sdir = start(data, "s")["session_dir"]
    run("s", "earlier = 'kept'")
    return sdir


def usable(session_id="s"):
    """The session still answers and still has its earlier variable."""
    out = run(session_id, "print(earlier, len(context) > 0)")
    assert out["ok"] is True and out["stdout"] == "kept True\n", out




# ---- inputs ---------------------------------------------------------------------------------------------------

def test_a_missing_path_is_refused_and_does_not_replace_an_existing_session_even_with_force(session, tmp_path):
    result = rlm("start", "--input", tmp_path / "missing.log", "--session", "s", "--force")
    assert result.code == 1 and result["error"]["type"] == "input_error"
    assert "missing.log" in result["error"]["message"]
    usable()


def test_an_input_that_binds_nothing_does_not_cost_the_session_it_would_have_replaced(session, tmp_path):
    run("s", "FINAL('the old answer')")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("x\n")
    result = rlm("start", "--input", tmp_path / "logs", "--glob", "*.py", "--session", "s", "--force")
    assert result.code == 1 and result["error"]["type"] == "input_error"
    usable()
    assert rlm("final", "--session", "s").stdout == b"the old answer"
    assert sorted(os.listdir(os.path.dirname(session))) == ["s"]  # nothing left aside


def test_a_folder_with_no_matching_files_names_the_glob_and_leaves_no_session(tmp_path, isolated_home):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("x\n")
    result = rlm("start", "--input", tmp_path / "logs", "--glob", "*.py", "--session", "g")
    assert result.code == 1 and result["error"]["type"] == "input_error"
    assert "'*.py'" in result["error"]["message"] and "a.log" not in result["error"]["message"]
    assert "matched no --glob" in result["error"]["hint"]
    assert ok("list")["sessions"] == []


def test_an_empty_file_binds_an_empty_context_with_a_warning(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = start(empty, "e")
    assert out["chars"] == 0 and any("empty file" in w for w in out["warnings"])
    assert run("e", "print(repr(context), context_files[0]['end'])")["stdout"] == "'' 0\n"


def test_a_binary_file_is_refused_alone_and_skipped_beside_text(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    blob = folder / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 40)
    alone = rlm("start", "--input", blob, "--session", "b")
    assert alone.code == 1 and alone["error"]["type"] == "input_error"
    assert "blob.bin (binary)" in alone["error"]["hint"]
    (folder / "notes.txt").write_text("text\n")
    out = start(folder, "b")
    assert out["files"] == 1 and {"path": "blob.bin", "reason": "binary"} in [
        {"path": os.path.basename(s["path"]), "reason": s["reason"]} for s in out["skipped"]]
    assert run("b", "print(context.endswith('text\\n'))")["stdout"] == "True\n"


def test_invalid_utf8_is_replaced_visibly_and_warned_about(tmp_path):
    latin = tmp_path / "latin.log"
    latin.write_bytes(b"caf\xe9 ok\nna\xefve\n")
    out = start(latin, "u")
    assert any("invalid UTF-8" in w and "U+FFFD" in w for w in out["warnings"])
    assert run("u", "print(context.count('\\ufffd'))")["stdout"] == "2\n"


def test_a_symlink_loop_is_named_as_one_given_directly_or_met_in_a_folder(tmp_path):
    folder = tmp_path / "tree"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    os.symlink("loop2", str(folder / "loop1"))
    os.symlink("loop1", str(folder / "loop2"))
    direct = rlm("start", "--input", folder / "loop1", "--session", "l")
    assert direct.code == 1 and direct["error"]["type"] == "input_error"
    assert "loop" in direct["error"]["message"] and "does not exist" not in direct["error"]["message"]
    out = start(folder, "l")
    reasons = {os.path.basename(s["path"]): s["reason"] for s in out["skipped"]}
    assert reasons == {"loop1": "symlink loop", "loop2": "symlink loop"} and out["files"] == 1


def without_root_privilege() -> list:
    """A command prefix that takes away root's right to read any file, or [] when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    probe = [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", "pass"] if setpriv else None
    if not probe or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("running as root, which reads any file, and setpriv cannot drop that right here")
    return probe[:2]


def test_an_unreadable_file_is_named_given_directly_and_skipped_in_a_folder(tmp_path):
    prefix = without_root_privilege()
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "ok.txt").write_text("ok\n")
    secret = folder / "secret.txt"
    secret.write_text("secret\n")
    os.chmod(secret, 0)

    def cli(*args):
        proc = subprocess.run([*prefix, sys.executable, CLI, *map(str, args)], capture_output=True, timeout=60)
        return proc.returncode, json.loads(proc.stdout)

    try:
        code, direct = cli("start", "--input", secret, "--session", "r")
        assert code == 1 and direct["error"]["type"] == "input_error"
        assert "permission denied" in (direct["error"]["message"] + direct["error"]["hint"]).lower()
        code, out = cli("start", "--input", folder, "--session", "r")
        assert code == 0, out
        assert {os.path.basename(s["path"]): s["reason"] for s in out["skipped"]} == {
            "secret.txt": "unreadable: permission denied"}
        code, report = cli("exec", "--session", "r", "-c", "print(context, end='')")
        assert code == 0 and report["stdout"] == "ok\n"
    finally:
        os.chmod(secret, 0o600)


# ---- session ids ----------------------------------------------------------------------------------------------

BAD_IDS = ["..", "../s", "a/b", "", "/etc", "s/../../x"]
SESSION_COMMANDS = [("exec", "-c", "1"), ("wait",), ("final",), ("status",), ("budget", "--max-usd", "9"),
                    ("stop",)]


def test_bad_session_ids_are_refused_by_every_command_and_touch_nothing(session, isolated_home):
    before = sorted(os.listdir(isolated_home / "sessions"))
    for command, *rest in SESSION_COMMANDS:
        for bad in BAD_IDS:
            result = rlm(command, "--session", bad, *rest)
            assert result.code == 1, (command, bad, result)
            assert result["error"]["type"] == "invalid_session_id", (command, bad)
            assert repr(bad) in result["error"]["message"]
    assert sorted(os.listdir(isolated_home / "sessions")) == before
    assert ok("budget", "--session", "s")["budget"]["limits"]["max_usd"] != 9
    usable()


def test_an_unknown_session_is_named_by_every_command_with_how_to_find_one(session):
    for command, *rest in SESSION_COMMANDS:
        result = rlm(command, "--session", "nosuch", *rest)
        assert result.code == 1 and result["error"]["type"] == "session_not_found", (command, result)
        assert "'nosuch'" in result["error"]["message"] and "list" in result["error"]["hint"]
    usable()


# ---- code that fails, exits, loops or floods -------------------------------------------------------------------

@pytest.mark.parametrize("code,kind,where", [
    ("x = 1\ny = (\nz = 3", "SyntaxError", "line "),  # line 2 from Python 3.10 on, line 3 before
    ("if True:\nprint(1)", "IndentationError", "line 2"),
    ("x = 1\0", "SyntaxError", "null"),
])
def test_code_that_does_not_parse_is_reported_with_where(session, code, kind, where):
    out = ok("exec", "--session", "s", stdin=code)
    assert out["ok"] is False and out["error"]["type"] in (kind, "ValueError")
    assert where in (out["error"]["message"] + out["error"]["traceback"])
    usable()


@pytest.mark.parametrize("code", ["import sys; sys.exit()", "exit()", "quit()", "raise SystemExit('bye')"])
def test_exiting_from_user_code_is_reported_and_the_session_keeps_running(session, code):
    pid = worker_pid(session)
    out = run("s", code)
    assert out["error"]["type"] == "SystemExit" and "session keeps running" in out["error"]["message"]
    usable()
    assert worker_pid(session) == pid


@pytest.mark.parametrize("code", ["import os; os._exit(0)", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
def test_killing_the_worker_from_user_code_restarts_it_with_the_variables(session, code):
    out = run("s", code)
    assert out["error"]["type"] == "WorkerDied"
    assert "earlier" in out["worker_restarted"]["restored"]
    usable()


def test_an_infinite_loop_is_stopped_at_the_timeout_and_the_state_stays(session):
    out = run("s", "n = 0\nwhile True:\n    n += 1", "--timeout", "1")
    assert out["timed_out"] is True and out["error"]["type"] == "ExecTimeout"
    assert "worker_restarted" not in out
    assert run("s", "print(n > 0)")["stdout"] == "True\n"
    usable()


def test_code_that_ignores_sigint_for_good_is_still_stopped_at_the_next_timeout(session):
    run("s", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)")
    out = run("s", "while True:\n    pass", "--timeout", "1")
    assert out["timed_out"] is True
    assert "worker_restarted" not in out  # interrupted, not replaced after the grace period
    usable()


def test_a_hundred_megabytes_printed_give_a_small_report_and_the_whole_in_a_spill_file(session):
    with open(f"/proc/{worker_pid(session)}/status") as f:
        rss_before = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    out = run("s", "line = 'x' * 99\nfor i in range(1_000_000):\n    print(line)")
    assert out["ok"] is True and out["stdout_truncated"] is True
    assert out["stdout_chars"] == 100_000_000
    assert os.path.getsize(out["stdout_path"]) == 100_000_000
    assert out["stdout_path"].startswith(session)
    assert len(json.dumps(out)) < 20_000
    assert "left out" in out["stdout"]
    with open(f"/proc/{worker_pid(session)}/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert peak - rss_before < 64 * 1024, "the output was held in memory"  # kB
    usable()


def test_exceptions_with_huge_or_broken_messages_are_reported_bounded(session):
    big = run("s", "raise KeyError('k' * 50_000)")
    assert big["error"]["type"] == "KeyError" and len(json.dumps(big)) < 20_000
    broken = run("s", "class Odd(Exception):\n    def __str__(self):\n        raise RuntimeError('no text')\n"
                      "raise Odd()")
    assert broken["error"]["type"] == "Odd" and broken["stdout"] == ""
    assert "variables" in broken
    usable()


def test_final_var_of_a_missing_name_keeps_the_earlier_answer_and_lists_a_bounded_set_of_names(session):
    run("s", "FINAL('first answer')")
    out = run("s", "for i in range(300):\n    globals()[f'var{i}'] = i\nFINAL_VAR('answr')")
    assert out["error"]["type"] == "NameError" and "'answr'" in out["error"]["message"]
    assert "var0" in out["error"]["message"] and len(out["error"]["message"]) < 3000
    wrong = run("s", "FINAL_VAR(42)")
    assert wrong["error"]["type"] == "TypeError" and "FINAL_VAR('answer')" in wrong["error"]["message"]
    assert rlm("final", "--session", "s").stdout == b"first answer"
    usable()


@pytest.mark.parametrize("code,restored", [
    ("del llm_query, FINAL\ncontext = None\nprint = None", {"llm_query", "FINAL", "context", "print"}),
    ("globals().clear()", {"llm_query", "context", "__builtins__"}),
    ("__builtins__ = None", {"__builtins__"}),
    ("import builtins\nbuiltins.print = None\ndel builtins.len", {"builtins.print", "builtins.len"}),
    ("import sys\nsys.stdout = None\nsys.stderr = None", set()),
])
def test_code_that_breaks_the_names_the_repl_relies_on_gets_them_back(session, code, restored):
    out = run("s", code)
    assert restored <= set(out.get("restored_names", [])) if restored else "restored_names" not in out, out
    after = run("s", "print(len(context), callable(llm_query), callable(FINAL))")
    assert after["ok"] is True and after["stdout"] == "690 True True\n", after
    if "clear" not in code:
        usable()


def test_deep_recursion_is_a_recursion_error_with_a_bounded_traceback(session):
    out = run("s", "def down(n):\n    return down(n + 1)\ndown(0)")
    assert out["error"]["type"] == "RecursionError" and len(out["error"]["traceback"]) <= 6200
    deeper = run("s", "import sys\nsys.setrecursionlimit(200_000)\ndef down(n):\n    return down(n + 1)\ndown(0)")
    if sys.version_info < (3, 11) and deeper["error"]["type"] == "WorkerDied":
        # Before 3.11 Python calls use the C stack: 200,000 frames crash the interpreter, and the worker comes back.
        assert "worker_restarted" in deeper
    else:
        assert deeper["error"]["type"] == "RecursionError" and "frames left out" in deeper["error"]["traceback"]
    usable()


def test_recursion_that_crashes_the_interpreter_restarts_the_worker_with_the_variables(session):
    out = run("s", "import sys\nsys.setrecursionlimit(10 ** 6)\n"
                   "def down(n):\n    return list(map(down, [n + 1]))\ndown(0)")
    assert out["error"]["type"] == "WorkerDied" and "earlier" in out["worker_restarted"]["restored"]
    usable()


# ---- sub-calls the API refuses -------------------------------------------------------------------------------

def test_no_api_key_is_a_config_error_in_the_exec_nothing_is_sent_and_the_hint_works(data, api, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    start(data, "k")
    run("k", "earlier = 'kept'")
    for code in ("llm_query('q')", "llm_query_batch(['a', 'b'])"):
        out = run("k", code)
        assert out["error"]["type"] == "ConfigError" and "ANTHROPIC_API_KEY" in out["error"]["message"]
        assert "export ANTHROPIC_API_KEY" in out["error"]["hint"]
    assert api.stats()["requests"] == 0 and out["calls"]["count"] == 0
    usable("k")
    # The way out the hint gives: set the key in the shell of the next exec; the same worker uses it.
    pid = worker_pid(os.path.join(os.environ["RLM_HOME"], "sessions", "k"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-now-set")
    out = run("k", "print(llm_query('q'), earlier)")
    assert out["stdout"] == "echo: q kept\n" and "worker_restarted" not in out
    assert worker_pid(os.path.join(os.environ["RLM_HOME"], "sessions", "k")) == pid


def test_a_wrong_key_says_to_check_the_key(api, session):
    api.configure(keys={"sk-the-right-one"})
    out = run("s", "llm_query('q')")
    assert out["error"]["type"] == "AuthenticationError" and "401" in out["error"]["message"]
    assert "check ANTHROPIC_API_KEY" in out["error"]["hint"]
    usable()


def test_an_unknown_model_is_named_with_how_to_choose_another(api, session):
    out = run("s", "llm_query('q', model='claude-nonexistent-9')")
    assert "claude-nonexistent-9" in out["error"]["message"]
    assert "model=" in out["error"]["hint"] and "claude-haiku-5-5" in out["error"]["hint"]
    usable()


def test_max_tokens_above_the_models_limit_passes_the_apis_400_on(api, session):
    out = run("s", "llm_query('q', max_tokens=1_000_000)")
    assert out["error"]["type"] == "BadRequestError"
    assert "max_tokens: 1000000 > 128000" in out["error"]["message"]
    assert api.stats()["by_prompt"]["q"] == 1  # not retried
    usable()


def test_a_413_with_an_html_body_is_request_too_large_and_not_retried(api, session):
    api.fail_next(1, kind="non_json_413")
    out = run("s", "llm_query('too big')")
    assert out["error"]["type"] == "RequestTooLargeError" and "413" in out["error"]["message"]
    assert "split" in out["error"]["hint"]
    assert api.stats()["by_prompt"]["too big"] == 1
    usable()


# ---- budget flags ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [("--max-usd", "-1"), ("--max-usd", "abc"), ("--max-usd", "nan"),
                                        ("--max-usd", "inf"), ("--max-calls", "1.5"), ("--max-calls", "-3"),
                                        ("--max-tokens", "lots")])
def test_negative_or_non_numeric_budget_flags_are_refused_and_change_nothing(session, flag, value):
    before = ok("budget", "--session", "s")["budget"]["limits"]
    result = rlm("budget", "--session", "s", flag, value)
    assert result.code in (1, 2) and result["error"]["type"] in ("usage_error", "input_error"), result
    assert value in result["error"]["message"]
    assert ok("budget", "--session", "s")["budget"]["limits"] == before


# ---- RLM_HOME that cannot be written -----------------------------------------------------------------------------

def test_rlm_home_under_a_file_is_a_config_error_naming_the_folder(data, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RLM_HOME", str(blocker / "home"))
    result = rlm("start", "--input", data, "--session", "h")
    assert result.code == 1 and result["error"]["type"] == "config_error"
    assert str(blocker / "home") in result["error"]["message"] and "RLM_HOME" in result["error"]["hint"]


@contextlib.contextmanager
def mounted_tmpfs(path, options):
    """A tmpfs at ``path`` (root only); skips the test where it cannot be mounted."""
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield path
    finally:
        kill_workers(path / "home")
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_rlm_home_is_a_config_error_naming_the_folder(data, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        home = tmp_path / "ro"
        home.mkdir(mode=0o500)
        context = contextlib.nullcontext(home)
    else:
        context = mounted_tmpfs(tmp_path / "ro", "ro,mode=0700")
    with context as home:
        monkeypatch.setenv("RLM_HOME", str(home))
        result = rlm("start", "--input", data, "--session", "h")
    assert result.code == 1 and result["error"]["type"] == "config_error", result
    assert str(home) in result["error"]["message"] and "RLM_HOME" in result["error"]["hint"]


def fill(folder) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    fd = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_a_full_rlm_home_gives_clear_errors_and_the_session_goes_on(data, tmp_path, monkeypatch, api):
    with mounted_tmpfs(tmp_path / "small", "size=4m,mode=0700") as fs:
        monkeypatch.setenv("RLM_HOME", str(fs / "home"))
        sdir = start(data, "f")["session_dir"]
        run("f", "earlier = 'kept'")
        fill(fs)

        plain = run("f", "print(earlier)")
        assert plain["ok"] is True and plain["stdout"] == "kept\n"
        flood = run("f", "for i in range(30_000):\n    print('y' * 99)")
        assert flood["ok"] is True and flood["stdout_truncated"] is True and flood["stdout_path"] is None
        assert "could not be saved" in flood["stdout"]
        new = run("f", "later = list(range(100_000))")
        assert new["ok"] is True and any("could not be written" in d["reason"] for d in new["dropped"])
        call = run("f", "llm_query('q')")
        assert call["error"]["type"] == "LedgerError" and "full" in call["error"]["message"]
        assert api.stats()["requests"] == 0

        os.kill(worker_pid(sdir), signal.SIGKILL)
        down = rlm("exec", "--session", "f", "-c", "1")
        assert down.code == 1 and "full" in down["error"]["message"], down

        os.unlink(fs / "filler")  # the way out: free some space
        usable("f")
        assert run("f", "print(llm_query('q'))")["stdout"] == "echo: q\n"
