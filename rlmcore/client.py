"""The CLI's side of a session: create it, find or revive its worker, talk to it.

This module is on the path of every ``exec``, so it imports only what a
round trip needs: ``json``, ``os`` and the C-level ``_socket`` (the ``socket``
module would cost a few milliseconds of imports on every command); starting a
worker pulls in ``subprocess`` when it happens.

A worker that is gone (idle exit, killed, crashed, machine restarted) is
started again transparently from the last checkpoint, and the command's JSON
says so under ``worker_restarted``.
"""
from __future__ import annotations

import _socket
import json
import os
import sys
import time

from . import paths
from .errors import WorkerError, from_json

HELLO_TIMEOUT_S = 900.0  # binding a gigabyte input on a slow disk takes a while


class WorkerGone(Exception):
    """No worker answers on the session's socket."""


class WorkerDied(Exception):
    """The worker closed the connection before answering (it exited mid-request)."""


def _connect(session_dir: str, timeout):
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    path = os.path.join(session_dir, "worker.sock")
    try:
        if len(path.encode()) < 100:
            sock.connect(path)
        else:  # socket paths are limited to 108 bytes: connect relative to the folder
            cwd = os.getcwd()
            os.chdir(session_dir)
            try:
                sock.connect("worker.sock")
            finally:
                os.chdir(cwd)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise WorkerGone(str(exc)) from None
    return sock


def _lines(sock):
    """The JSON lines the worker sends, until it closes the connection."""
    pending = b""
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return
        pending += data
        *complete, pending = pending.split(b"\n")
        yield from complete


def talk(session_dir: str, message: dict, *, timeout=None, on_progress=None) -> dict:
    """Send one request; return the worker's final answer (progress lines go to ``on_progress``)."""
    sock = _connect(session_dir, timeout)
    message = dict(message, key=paths.read_key(session_dir))
    try:
        sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
        for line in _lines(sock):
            answer = json.loads(line)
            if "progress" in answer and len(answer) <= 2:
                if on_progress:
                    on_progress(answer)
                continue
            return answer
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise WorkerDied(str(exc)) from None
    except _socket.timeout:
        raise WorkerError("the worker did not answer in time",
                          "try 'rlm_repl.py status --session ID'; 'stop' then 'exec' restarts the worker") from None
    finally:
        sock.close()
    raise WorkerDied("connection closed without an answer")


def raise_worker_error(answer: dict) -> dict:
    """Turn an ``{"error": ...}`` answer from the worker into the matching exception."""
    error = answer.get("error")
    if isinstance(error, dict) and "report" not in answer:
        raise from_json(error, "worker_error")
    return answer


# -- starting workers ----------------------------------------------------------

def spawn_worker(session_dir: str) -> dict:
    """Make sure a worker serves the session and return its hello answer.

    Several commands may find the worker gone at once: each launches one, the
    first to take the session's lock serves, the others exit with EXIT_LOCKED
    and their commands talk to the winner. A lock still held by a worker that is
    exiting is waited out, then the launch is tried again.
    """
    proc = _launch(session_dir)
    deadline = time.monotonic() + HELLO_TIMEOUT_S
    delay = 0.005
    while time.monotonic() < deadline:
        try:
            return talk(session_dir, {"op": "hello"}, timeout=30)
        except (WorkerGone, WorkerDied):
            pass
        code = proc.poll()
        if code == paths.EXIT_LOCKED and not _locked(session_dir):
            proc = _launch(session_dir)  # the worker that held the lock has exited since
        elif code is not None and code != paths.EXIT_LOCKED:
            _raise_boot_error(session_dir, code)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    raise WorkerError(f"the worker did not start within {HELLO_TIMEOUT_S:.0f} s",
                      f"see {os.path.join(session_dir, 'worker.log')}")


def _launch(session_dir: str):
    import subprocess

    meta = paths.read_json(os.path.join(session_dir, "session.json"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = f"import sys; sys.path.insert(0, {root!r}); from rlmcore.worker import main; main({session_dir!r})"
    cwd = meta.get("cwd") if meta and os.path.isdir(meta.get("cwd") or "") else session_dir
    # Dry run is chosen per exec by the environment of the command that sends it, not frozen at start.
    env = {k: v for k, v in os.environ.items() if k != "RLM_DRY_RUN"}
    with paths.private_open(os.path.join(session_dir, "worker.log"), "a") as log:
        return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True)


def _raise_boot_error(session_dir: str, code: int):
    error = paths.read_json(os.path.join(session_dir, "worker.error.json"))
    if error:
        raise from_json(error, "worker_error")
    if _disk_full(session_dir):  # then neither the error file nor the log could be written
        raise WorkerError(f"the worker could not start: the disk holding {session_dir} is full",
                          "free some disk space and run the command again")
    raise WorkerError(f"the worker exited with status {code} while starting",
                      f"see {os.path.join(session_dir, 'worker.log')}")


def _disk_full(path: str) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def restart_note(hello: dict, why: str) -> dict:
    info = dict(hello.get("restart") or {})
    info["reason"] = why
    return info


def _locked(session_dir: str) -> bool:
    """Whether a worker (booting, serving or exiting) holds the session's lock."""
    try:
        fd = paths.try_lock(session_dir)
    except OSError:  # the folder is gone: nothing holds it
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


def wait_for_exit(session_dir: str, timeout: float = 10.0) -> None:
    """Wait until no worker holds the session's lock (the old one has exited)."""
    deadline = time.monotonic() + timeout
    while _locked(session_dir) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_worker(session_dir: str) -> bool:
    """Ask the worker to exit (kill it if it does not); return whether one was running."""
    try:
        talk(session_dir, {"op": "stop"}, timeout=10)
    except (WorkerGone, WorkerDied):
        return False
    except WorkerError:
        pid = paths.read_json(os.path.join(session_dir, "worker.pid"))
        if isinstance(pid, int):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    wait_for_exit(session_dir)
    return True
