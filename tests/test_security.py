"""Security: owner-only files whatever the umask, a socket that demands the key, untrusted checkpoints refused,
the API key in no file of RLM_HOME, and `stop` that removes nothing outside its session.

Through the real CLI, with the fake Messages API on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from clitools import CLI, kill_worker, ok, rlm, run, start

KEY = "sk-ant-api03-SECURITY-TEST-9f8e7d6c5b4a"


@pytest.fixture
def api(api, monkeypatch):
    """The shared fake API, accepting only this test's key."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    api.configure(keys={KEY})
    return api


def rlm_with_umask(umask, *args) -> dict:
    proc = subprocess.run([sys.executable, CLI, *map(str, args)], capture_output=True, timeout=120,
                          preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc
    return json.loads(proc.stdout)


def everything_under(root):
    for folder, dirs, files in os.walk(root):
        yield folder
        for name in files:
            yield os.path.join(folder, name)


# ---- owner-only ---------------------------------------------------------------------------------------------------

def test_everything_in_rlm_home_is_owner_only_even_under_umask_zero(data, api, isolated_home):
    isolated_home.mkdir(mode=0o755)  # a home made by hand, too open: tightened on first use
    os.chmod(isolated_home, 0o755)
    out = rlm_with_umask(0, "start", "--input", data, "--session", "open")
    sdir = out["session_dir"]
    rlm_with_umask(0, "exec", "--session", "open", "-c",
                   "x = [1, 2]\ndef f():\n    return 1\nr = llm_query('q')\n"
                   "for i in range(3000):\n    print('spill line', i)\nFINAL('done')", )
    rlm_with_umask(0, "trace", "--session", "open", "--html", os.path.join(sdir, "report.html"))
    assert os.path.exists(os.path.join(sdir, "out")) and os.path.exists(os.path.join(sdir, "report.html"))
    for path in everything_under(isolated_home):
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))
    assert stat.S_IMODE(os.stat(os.path.join(sdir, "worker.sock")).st_mode) & 0o077 == 0


# ---- the socket demands the session key ---------------------------------------------------------------------------

def ask(sdir, payload: bytes) -> bytes:
    cwd = os.getcwd()
    os.chdir(sdir)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect("worker.sock")
            sock.sendall(payload)
            return sock.makefile("rb").readline()
    finally:
        os.chdir(cwd)


def test_the_socket_refuses_every_request_without_the_right_key_and_runs_nothing(data, tmp_path):
    sdir = start(data, "sock")["session_dir"]
    other = start(data, "other")["session_dir"]
    with open(os.path.join(other, "key")) as f:
        other_key = f.read().strip()
    attempts = [{"op": "exec", "code": "pwned = 1"},
                {"op": "exec", "code": "pwned = 1", "key": ""},
                {"op": "exec", "code": "pwned = 1", "key": None},
                {"op": "exec", "code": "pwned = 1", "key": other_key},
                {"op": "status", "key": "0" * 64},
                {"op": "stop", "key": "guess"}]
    for request in attempts:
        answer = json.loads(ask(sdir, json.dumps(request).encode() + b"\n"))
        assert answer["error"]["type"] == "unauthorized", request
    for garbage in (b"not json\n", b"\n", b"[1, 2]\n", b"\xff\xfe\n"):
        assert ask(sdir, garbage) in (b"", b'{"error": {"type": "unauthorized", "message": "wrong session key", '
                                           b'"hint": null}}\n')
    assert run("sock", "print('pwned' in globals())")["stdout"] == "False\n"
    assert ok("status", "--session", "sock")["worker"]["alive"] is True


# ---- untrusted checkpoints ------------------------------------------------------------------------------------------

def test_a_checkpoint_folder_writable_by_others_is_refused_until_fixed(data):
    sdir = start(data, "cp")["session_dir"]
    run("cp", "x = 41")
    kill_worker(sdir)
    folder = os.path.join(sdir, "checkpoint")
    os.chmod(folder, 0o777)
    refused = rlm("exec", "--session", "cp", "-c", "print(x)")
    assert refused.code == 1 and "writable by other users" in refused["error"]["message"]
    assert folder in refused["error"]["message"] and f"chmod 700 {folder}" in refused["error"]["hint"]
    os.chmod(folder, 0o700)
    assert run("cp", "print(x + 1)")["stdout"] == "42\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_checkpoint_folder_of_another_user_is_refused(data):
    sdir = start(data, "cp")["session_dir"]
    run("cp", "x = 41")
    kill_worker(sdir)
    folder = os.path.join(sdir, "checkpoint")
    os.chown(folder, 65534, 65534)
    refused = rlm("exec", "--session", "cp", "-c", "print(x)")
    assert refused.code == 1 and "belongs to another user" in refused["error"]["message"]


# ---- the API key in no file ------------------------------------------------------------------------------------------

def test_the_api_key_is_in_no_file_of_rlm_home_after_a_run_with_errors_and_retries(data, api, isolated_home):
    outputs = []

    def cli(*args, **kw):
        result = rlm(*args, **kw)
        outputs.append(result.stdout + result.stderr)
        return result

    sdir = cli("start", "--input", data, "--session", "k").json["session_dir"]
    api.set_faults(rate_429=0.15, rate_529=0.05, rate_500=0.05, rate_reset=0.03, retry_after=0.01, seed=3)
    api.fail_next(3, status=500, match="doomed")
    api.fail_next(1, kind="non_json_413", match="too big")
    cli("exec", "--session", "k", "-c",
        "r = llm_query_batch([f'item {i}' for i in range(60)] + ['doomed', 'too big'])\n"
        "print(sum(x.startswith('[llm_query error') for x in r))\n"
        "try:\n    llm_query('doomed again', max_tokens=10**6)\nexcept Exception as e:\n    print(e)\n"
        "big = 'x' * 100\nfor i in range(4000):\n    print('line', i)\nFINAL(r)")
    api.clear_faults()
    api.configure(keys={"sk-some-other-key"})  # now every request is refused with a 401
    cli("exec", "--session", "k", "-c", "llm_query('refused')")
    cli("exec", "--session", "k", "-c", "raise RuntimeError('boom')")
    kill_worker(sdir)  # a crash and a restart write the log and the checkpoint again
    cli("exec", "--session", "k", "-c", "print(len(big))")
    cli("status", "--session", "k")
    cli("trace", "--session", "k", "--html", os.path.join(sdir, "trace.html"))
    cli("doctor")
    cli("list")

    assert api.stats()["by_status"].get(401) and api.stats()["by_status"].get(429)
    names = set()
    for path in everything_under(isolated_home):
        if os.path.isfile(path):
            names.add(os.path.basename(path))
            with open(path, "rb") as f:
                assert KEY.encode() not in f.read(), path
    assert {"worker.log", "ledger.sqlite", "trace.html", "last_report.json"} <= names
    assert any(name.startswith("exec-") for name in names)  # a spill file was scanned too
    assert any(name.endswith(".pkl") for name in names)
    for text in outputs:
        assert KEY.encode() not in text


# ---- stop with a crafted id ---------------------------------------------------------------------------------------------

def test_stop_with_a_crafted_id_removes_nothing_outside_its_session(data, tmp_path, isolated_home):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me\n")
    start(data, "neighbour")
    for crafted in ("..", ".", "../victim", "../../victim", "neighbour/..", str(victim), "sessions", "*", "~"):
        result = rlm("stop", "--session", crafted)
        assert result.code == 1, (crafted, result)
    assert (victim / "precious.txt").read_text() == "keep me\n"
    assert ok("status", "--session", "neighbour")["worker"]["alive"] is True


def test_stop_of_a_session_folder_that_is_a_link_or_holds_links_removes_only_the_links(data, tmp_path, isolated_home):
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (victim / "precious.txt").write_text("keep me\n")
    sdir = start(data, "inner")["session_dir"]
    os.symlink(str(victim), os.path.join(sdir, "out-link"))
    ok("stop", "--session", "inner")
    assert not os.path.exists(sdir) and (victim / "precious.txt").exists()

    os.symlink(str(victim), str(isolated_home / "sessions" / "linked"))
    result = rlm("stop", "--session", "linked")
    assert (victim / "precious.txt").read_text() == "keep me\n"
    assert result.code == 0 or result["error"]["type"] in ("session_error", "worker_error"), result
    assert os.path.isdir(victim)


# ---- the docs say what the REPL is ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", ["README.md", "SKILL.md"])
def test_the_docs_say_plainly_that_the_repl_runs_code_with_the_users_rights_and_is_not_a_sandbox(doc):
    with open(os.path.join(os.path.dirname(CLI), doc), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    assert "not a sandbox" in text
    assert "with your rights" in text or "with the user's rights" in text
