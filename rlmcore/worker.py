"""The session worker: one long-lived process per session that holds the namespace.

It reads the bound input once, restores the last checkpoint, and listens on
``worker.sock`` (a Unix socket in the owner-only session folder; every request
must also carry the session's random key). Requests are JSON lines.

User code runs in the MAIN thread, so a timeout can interrupt it with a real
signal (which also wakes ``time.sleep`` and blocking I/O); connections are
served by other threads, so ``status`` and ``wait`` answer while code runs.
Code that ignores the interrupt for ``GRACE_S`` seconds gets the process
replaced: its report is published, then the worker exits and the client starts a
new one from the checkpoint.

Lifetime: the worker holds an exclusive ``flock`` on ``worker.lock`` while it
lives, so two workers never serve one session; it exits after ``RLM_IDLE_EXIT``
seconds without a request.
"""
from __future__ import annotations

import hmac
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback

from . import config
from .checkpoint import Checkpointer
from .errors import CheckpointError, RLMError
from .paths import EXIT_LOCKED, atomic_write, read_json, read_json_or, read_key, try_lock
from .runner import Captured, ExecTimeout, run_code
from .namespace import Namespace

GRACE_S = 5.0
PROGRESS_EVERY_S = 0.5


class Job:
    def __init__(self, code: str, timeout: float, dry_run: bool, stdout_max: int, parent_call_id=None):
        self.code = code
        self.parent_call_id = parent_call_id  # the root call that wrote this code (rlm_repl.py run)
        self.stdout_max = stdout_max
        self.timeout = timeout
        self.dry_run = dry_run
        self.exec_id = None
        self.started = time.time()
        self.report = None
        self.capture = None
        self.done = threading.Event()


class Worker:
    def __init__(self, session_dir: str):
        self.dir = session_dir
        self.meta = read_json(os.path.join(session_dir, "session.json"))
        self.key = read_key(session_dir).encode()
        self.cond = threading.Condition()
        self.jobs: queue.Queue = queue.Queue()
        self.running: Job | None = None
        self.last_report = None
        self.last_activity = time.monotonic()
        self.timeout_hit = False
        self.in_user_code = False
        self.restart_info = None
        self.listener: socket.socket | None = None
        self.checkpoint = Checkpointer(os.path.join(session_dir, "checkpoint"), config.checkpoint_max_bytes())

    # -- boot ---------------------------------------------------------------

    def boot(self) -> None:
        self.space = Namespace(self.dir, self.meta)
        info = {"restored": [], "not_restored": [], "errors": []}
        try:
            info.update(self.checkpoint.restore(self.space.ns))
        except CheckpointError as exc:
            info["errors"].append(self._set_aside_checkpoint(exc))
        self.space.protect()
        interrupted = self.space.interrupted_execs()
        if interrupted:
            self.last_report = self._died_report(interrupted[-1])
            self.last_report["calls"], self.last_report["budget"] = self.space.spend(interrupted[-1])
        else:
            self.last_report = read_json_or(os.path.join(self.dir, "last_report.json"), None)
        self.restart_info = info
        signal.signal(signal.SIGINT, self._on_sigint)

    def _set_aside_checkpoint(self, exc: CheckpointError) -> str:
        aside = f"{self.checkpoint.folder}.corrupt-{int(time.time())}"
        os.replace(self.checkpoint.folder, aside)
        return f"{exc.message}; it was moved to {aside} and the session goes on with an empty namespace"

    def _died_report(self, exec_id: int) -> dict:
        return {
            "ok": False, "exec_id": exec_id, "timed_out": False,
            "error": {
                "type": "WorkerDied",
                "message": (f"the worker stopped while exec {exec_id} was running (killed, crashed, os._exit() "
                            "or the machine restarted); variables are back from the last checkpoint"),
                "traceback": "",
            },
            "hint": "run the exec again: sub-calls that were already answered are reused at no cost",
        }

    def _on_sigint(self, signum, frame):
        if not self.in_user_code:
            return
        if self.timeout_hit:
            raise ExecTimeout(f"the code ran past its timeout of {self.running.timeout:g} s and was interrupted")
        raise KeyboardInterrupt

    # -- executing ----------------------------------------------------------

    def main_loop(self) -> None:
        idle = config.idle_exit()
        while True:
            try:
                job = self.jobs.get(timeout=5.0)
            except queue.Empty:
                if self.running is None and time.monotonic() - self.last_activity > idle:
                    self.shutdown("idle")
                continue
            if job is None:
                return
            self.execute(job)

    def execute(self, job: Job) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)  # earlier user code may have replaced or ignored it
        if sys.stdin is None or sys.stdin.closed:  # exit() closes it: input() must meet EOF, not a closed file
            sys.stdin = open(os.devnull)
        job.exec_id = self.space.begin_exec(job.code, job.dry_run, job.parent_call_id)
        threading.Thread(target=self._watch, args=(job,), daemon=True).start()
        job.capture = Captured(os.path.join(self.dir, "out"), job.exec_id, job.stdout_max)
        with job.capture:
            self.in_user_code = True
            try:
                exc = run_code(job.code, self.space.ns, f"<exec {job.exec_id}>")
            except ExecTimeout as late:  # the signal landed just after the code returned
                exc = late
            finally:
                self.in_user_code = False
        restored = self.space.restore_builtins()  # first: even job.done.set() needs len()
        job.done.set()
        self.timeout_hit = False
        try:
            fixed = restored + self.space.protect()
            dropped = self.save_checkpoint(job.code)
            report = self.space.report(job, job.capture, exc, timed_out=isinstance(exc, ExecTimeout),
                                       dropped=dropped, fixed=fixed)
        except Exception as bug:  # the session must never stay busy because a report failed
            traceback.print_exc()
            report = {"ok": False, "exec_id": job.exec_id, "timed_out": False,
                      "error": {"type": "worker_error", "message": f"the exec ran, but its report failed: "
                                f"{type(bug).__name__}: {bug}", "traceback": ""}}
        self.publish(job, report)

    def save_checkpoint(self, code: str) -> list:
        """Checkpoint the namespace; a failure to write is named, not fatal."""
        try:
            self.checkpoint.record_definitions(code, self.space.ns)
            return self.checkpoint.save(self.space.ns, self.space.injected_names(), code)
        except (OSError, RLMError) as exc:
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            return [{"name": "*", "reason": f"the checkpoint could not be written ({reason}); "
                                            "variables live on in memory but would be lost if the worker restarts"}]

    def _watch(self, job: Job) -> None:
        if job.done.wait(job.timeout):
            return
        self.timeout_hit = True
        os.kill(os.getpid(), signal.SIGINT)
        if job.done.wait(GRACE_S):
            return
        # The code ignored the interrupt: hand its report over and let a new worker take the session.
        report = self.space.report(job, job.capture, ExecTimeout(
            f"the code ran past its timeout of {job.timeout:g} s and ignored the interrupt for {GRACE_S:g} s"),
            timed_out=True, dropped=[], fixed=[])
        report["worker_replaced"] = True
        self.stop_listening()  # new commands must reach the next worker, not this dying one
        self.publish(job, report)
        time.sleep(0.2)  # let waiting clients receive the report
        os._exit(3)

    def publish(self, job: Job, report: dict) -> None:
        with self.cond:
            if job.report is not None:
                return
            job.report = report
            self.last_report = report
            self.running = None
            self.cond.notify_all()
        try:
            atomic_write(os.path.join(self.dir, "last_report.json"), json.dumps(report).encode())
        except OSError:
            pass  # the report was delivered; a full disk must not stop the session

    # -- serving ------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        self.listener = listener
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # stop_listening closed it
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def stop_listening(self) -> None:
        try:
            os.unlink(os.path.join(self.dir, "worker.sock"))
        except OSError:
            pass
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of serve()
            except OSError:
                pass
            self.listener.close()

    def _handle(self, conn: socket.socket) -> None:
        self.last_activity = time.monotonic()
        try:
            with conn, conn.makefile("rwb") as stream:
                request = json.loads(stream.readline() or b"{}")
                if not hmac.compare_digest(str(request.get("key", "")).encode(), self.key):
                    return send(stream, {"error": {"type": "unauthorized", "message": "wrong session key",
                                                    "hint": None}})
                self._dispatch(request, stream)
        except (OSError, ValueError):
            pass  # the client went away or sent garbage; nothing to answer
        finally:
            self.last_activity = time.monotonic()

    def _dispatch(self, request: dict, stream) -> None:
        op = request.get("op")
        if op == "hello":
            send(stream, {"ok": True, "pid": os.getpid(), "summary": self.space.summary,
                          "restart": self.restart_info})
        elif op == "exec":
            self._exec_request(request, stream)
        elif op == "wait":
            self._wait_request(request, stream)
        elif op == "status":
            send(stream, self.status())
        elif op == "stop":
            send(stream, {"ok": True})
            self.shutdown("stop")
        else:
            send(stream, {"error": {"type": "bad_request", "message": f"unknown op {op!r}", "hint": None}})

    def _exec_request(self, request: dict, stream) -> None:
        timeout = float(request.get("timeout") or config.exec_timeout())
        job = Job(request.get("code", ""), timeout, bool(request.get("dry_run")),
                  int(request.get("stdout_max") or config.stdout_max()), request.get("parent_call_id"))
        with self.cond:
            busy = self.running
            if busy is None:
                self.running = job
        if busy is not None:
            return send(stream, {"error": {
                "type": "session_busy",
                "message": f"exec {busy.exec_id} is still running (for {time.time() - busy.started:.0f} s)",
                "hint": f"collect it with 'rlm_repl.py wait --session {self.meta['id']}', or wait for it to finish"}})
        use_env(request.get("env") or {})
        self.jobs.put(job)
        self._await(job, request, stream)

    def _wait_request(self, request: dict, stream) -> None:
        job = self.running
        if job is not None:
            return self._await(job, request, stream)
        if self.last_report is None:
            return send(stream, {"error": {"type": "nothing_running", "message": "no exec has run in this session",
                                           "hint": f"run code with 'rlm_repl.py exec --session {self.meta['id']} -c CODE'"}})
        send(stream, {"report": self.last_report})

    def _await(self, job: Job, request: dict, stream) -> None:
        deadline = time.monotonic() + float(request.get("wait") or config.DEFAULT_WAIT)
        want_progress = bool(request.get("progress"))
        if want_progress and job.report is None and self.space.progress() is not None:
            # at once, not after the first interval: a wait that joins a batch late still shows it
            send(stream, {"progress": self.space.progress(), "elapsed_s": round(time.time() - job.started, 2)})
        while True:
            with self.cond:
                left = deadline - time.monotonic()
                if job.report is None and left > 0:
                    self.cond.wait(min(left, PROGRESS_EVERY_S))
                report = job.report
            if report is not None:
                return send(stream, {"report": report})
            if time.monotonic() >= deadline:
                return send(stream, {"running": True, "exec_id": job.exec_id,
                                     "elapsed_s": round(time.time() - job.started, 2),
                                     "progress": self.space.progress()})
            if want_progress:
                send(stream, {"progress": self.space.progress(), "elapsed_s": round(time.time() - job.started, 2)})

    def status(self) -> dict:
        job = self.running
        return {"ok": True, "pid": os.getpid(), "busy": job is not None,
                "exec_id": job.exec_id if job else None,
                "elapsed_s": round(time.time() - job.started, 2) if job else None,
                "progress": self.space.progress(),
                "variables": self.space.variables()}

    def shutdown(self, why: str) -> None:
        try:
            if self.running is None:
                self.checkpoint.save(self.space.ns, self.space.injected_names())
        except Exception:
            traceback.print_exc()
        self.stop_listening()
        print(f"worker exiting: {why}", file=sys.__stderr__, flush=True)
        os._exit(0)


def use_env(env: dict) -> None:
    """Take the exec's own ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, ... (``config.EXEC_ENV``): set or unset."""
    for name in config.EXEC_ENV:
        if name not in env:
            continue
        if env[name] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(env[name])


def send(stream, message: dict) -> None:
    # backslashreplace: a lone surrogate the user's code printed travels as its JSON escape, not as an error.
    stream.write(json.dumps(message, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace") + b"\n")
    stream.flush()


def listen(session_dir: str) -> socket.socket:
    """Bind ``worker.sock`` owner-only; a stale socket file from a dead worker is replaced."""
    path = os.path.join(session_dir, "worker.sock")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    cwd = os.getcwd()
    try:
        os.chdir(session_dir)  # a relative bind sidesteps the 108-byte limit of socket paths
        sock.bind("worker.sock")
    finally:
        os.chdir(cwd)
        os.umask(old_umask)
    sock.listen(64)
    return sock


def take_lock(session_dir: str):
    fd = try_lock(session_dir)
    if fd is None:
        os._exit(EXIT_LOCKED)
    return fd


def write_boot_error(session_dir: str, error: dict) -> None:
    atomic_write(os.path.join(session_dir, "worker.error.json"), json.dumps(error).encode())


def main(session_dir: str) -> None:
    lock_fd = take_lock(session_dir)  # noqa: F841 - held for the life of the process
    try:
        os.unlink(os.path.join(session_dir, "worker.error.json"))
    except FileNotFoundError:
        pass
    worker = Worker(session_dir)
    try:
        worker.boot()
    except RLMError as exc:
        write_boot_error(session_dir, exc.to_json())
        sys.exit(1)
    except Exception as exc:
        write_boot_error(session_dir, {"type": "worker_error", "message": f"{type(exc).__name__}: {exc}",
                                       "hint": f"see {os.path.join(session_dir, 'worker.log')}"})
        raise
    atomic_write(os.path.join(session_dir, "worker.pid"), str(os.getpid()).encode())
    listener = listen(session_dir)
    threading.Thread(target=worker.serve, args=(listener,), daemon=True).start()
    worker.main_loop()
