"""Running the real CLI in a subprocess, as Claude Code does."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "rlm_repl.py")


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        text = proc.stdout.decode("utf-8")
        try:
            self.json = json.loads(text) if text.strip() else None
        except ValueError:
            self.json = None

    def __getitem__(self, key):
        return self.json[key]

    def __repr__(self):
        return f"<exit {self.code}: {self.stdout[:2000]!r} stderr={self.stderr[-2000:]!r}>"


def rlm(*args, stdin: str | None = None, env: dict | None = None, timeout: float = 120, cwd=None) -> Result:
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, CLI, *map(str, args)], input=stdin.encode() if stdin is not None else None,
                          capture_output=True, env=full_env, timeout=timeout, cwd=cwd)
    return Result(proc)


def ok(*args, **kwargs) -> dict:
    """Run a command that must succeed; return its JSON."""
    result = rlm(*args, **kwargs)
    assert result.code == 0, result
    return result.json


def start(path, session="t1", *extra, **kwargs) -> dict:
    return ok("start", "--input", path, "--session", session, *extra, **kwargs)


def run(session, code, *extra, **kwargs) -> dict:
    """exec CODE in SESSION; the command itself must succeed (user errors are in the JSON)."""
    return ok("exec", "--session", session, "-c", code, *extra, **kwargs)


def worker_pid(session_dir) -> int:
    with open(os.path.join(session_dir, "worker.pid")) as f:
        return int(f.read())


def kill_worker(session_dir) -> None:
    """SIGKILL the session's worker and wait until it is dead (a zombie counts: its parent is gone and the
    reaper may take a second, but its files and lock are already released)."""
    import signal
    import time
    pid = worker_pid(session_dir)
    os.kill(pid, signal.SIGKILL)
    for _ in range(500):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        except OSError:  # no /proc: ask the process table
            try:
                os.kill(pid, 0)
            except OSError:
                return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} did not die")
