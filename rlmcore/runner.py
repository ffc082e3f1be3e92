"""Running one piece of user code in the session namespace.

The code is parsed once; a final bare expression is evaluated separately and
its repr printed, as a notebook does. ``sys.stdout``/``sys.stderr`` write
(through one switch object that outlives execs, so references kept by user
code follow) to captures that keep the head and tail in memory and stream
everything to a spill file once the output grows, so 100 MB of prints costs
disk, not memory, and the model sees a bounded excerpt with a marker. The
source is registered with ``linecache`` under a name like ``<exec 3>`` so
tracebacks show the user's own lines; the runner's frames are cut off.
"""
from __future__ import annotations

import ast
import collections
import linecache
import os
import sys
import threading
import traceback
import types

from .errors import RLMError
from .paths import private_open

MESSAGE_MAX = 2000  # an exception message longer than this is cut: a 50 KB message must not reach the model whole
TRACEBACK_MAX = 6000
# A deeper traceback shows its first and last frames only: formatting the million frames of a deep
# recursion (after sys.setrecursionlimit) would take many seconds, to be cut to TRACEBACK_MAX anyway.
FRAMES_SHOWN = 20
SPILL_AT = 1 << 20  # keep up to 1 MiB in memory before streaming to disk
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ExecTimeout(BaseException):
    """Raised in the exec thread when ``--timeout`` expires."""


class OutputCapture:
    """A text stream that keeps head and tail and spills the whole to a file."""

    def __init__(self, spill_path: str, max_chars: int):
        self.spill_path = spill_path
        self.head_max = max_chars // 2
        self.tail_max = max_chars - self.head_max
        self.max_chars = max_chars
        self.total = 0
        self._head: list = []
        self._head_len = 0
        self._tail: collections.deque = collections.deque()
        self._tail_len = 0
        self._buffer: list = []
        self._buffer_len = 0
        self._spill = None
        self.spill_error = None  # why the full text could not be saved (a full disk), if so
        self._spill_at = max(SPILL_AT, max_chars + 1)  # so spilling always means truncated
        self._lock = threading.Lock()

    # the file-like surface libraries expect
    encoding = "utf-8"
    errors = "replace"

    def writable(self):
        return True

    def isatty(self):
        return False

    def flush(self):
        pass

    def fileno(self):
        raise OSError("captured output has no file descriptor")

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def write(self, s) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not s:
            return 0
        with self._lock:
            self.total += len(s)
            self._keep_head_and_tail(s)
            self._keep_all(s)
        return len(s)

    def _keep_head_and_tail(self, s: str) -> None:
        if self._head_len < self.head_max:
            part = s[: self.head_max - self._head_len]
            self._head.append(part)
            self._head_len += len(part)
        self._tail.append(s)
        self._tail_len += len(s)
        while self._tail_len - len(self._tail[0]) >= self.tail_max:
            self._tail_len -= len(self._tail.popleft())

    def _keep_all(self, s: str) -> None:
        if self.spill_error is not None:
            return
        if self._spill is not None:
            self._spill_step(self._spill.write, s)
            return
        self._buffer.append(s)
        self._buffer_len += len(s)
        if self._buffer_len > self._spill_at:
            self._open_spill()

    def _open_spill(self) -> None:
        def open_and_write(text):
            os.makedirs(os.path.dirname(self.spill_path), mode=0o700, exist_ok=True)
            self._spill = private_open(self.spill_path, "w", encoding="utf-8", errors="replace")
            self._spill.write(text)
        self._spill_step(open_and_write, "".join(self._buffer))
        self._buffer = []

    def _spill_step(self, step, *args) -> None:
        """Run one step of spilling; a full or unwritable disk must not fail the user's print.

        Head and tail are still kept; a partial spill file is removed, as it would pass for the whole text.
        """
        try:
            step(*args)
        except OSError as exc:
            self.spill_error = exc.strerror or str(exc)
            try:
                if self._spill is not None:
                    self._spill.close()
            except OSError:
                pass
            self._spill = None
            self._buffer = []
            try:
                os.unlink(self.spill_path)
            except OSError:
                pass

    def result(self) -> dict:
        """``{text, truncated, chars, path}``; closes the spill file."""
        with self._lock:
            if self.total <= self.max_chars:
                return {"text": last_frames("".join(self._buffer)), "truncated": False, "chars": self.total,
                        "path": None}
            if self._spill is None and self.spill_error is None:
                self._open_spill()
            if self._spill is not None:
                self._spill_step(self._spill.close)
            path = None if self.spill_error else self.spill_path
            return {"text": self._excerpt(), "truncated": True, "chars": self.total, "path": path}

    def _excerpt(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)[-self.tail_max:]
        left_out = self.total - len(head) - len(tail)
        head, tail = last_frames(head), last_frames(tail)
        where = (f"the full text could not be saved ({self.spill_error})" if self.spill_error
                 else f"the full text is in {self.spill_path}")
        marker = f"\n[... {left_out:,} of {self.total:,} characters left out here; {where} ...]\n"
        return head + marker + tail


def last_frames(text: str) -> str:
    """Text as a terminal leaves it: a line redrawn with carriage returns (a progress bar) shows only its last
    frame. Only what the model is shown is collapsed; the spill file and ``*_chars`` keep every character."""
    if "\r" not in text:
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(([part for part in line.split("\r") if part] or [""])[-1] for line in lines)


def cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half:,} characters left out ...]\n{text[-half:]}"


def format_error(exc: BaseException, filename: str) -> dict:
    """``{type, message, traceback}`` showing only frames from the user's code onwards, and the
    ``hint`` of rlm's own errors (how to fix a missing key, a refused request, a damaged ledger)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        tb = None
    if isinstance(exc, RLMError):
        tb = _before_rlm_frames(tb)
    try:
        message = str(exc)
    except Exception as broken:  # a user exception whose __str__ fails must not fail the report
        message = f"<str() of the exception failed: {type(broken).__name__}: {broken}>"
    if isinstance(exc, SystemExit):
        message = f"SystemExit({exc.code!r}): the code called sys.exit(); the session keeps running"
    out = {
        "type": type(exc).__name__,
        "message": cut_middle(message, MESSAGE_MAX),
        "traceback": cut_middle(_format_traceback(exc, tb), TRACEBACK_MAX),
    }
    if isinstance(exc, RLMError) and exc.hint:
        out["hint"] = cut_middle(str(exc.hint), MESSAGE_MAX)
    return out


def _before_rlm_frames(tb):
    """The frames of ``tb`` up to the first one inside rlm's own package. rlm's errors name what to fix in
    their message and hint; the helper internals below the user's call are noise in the model's context."""
    kept = []
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR):
        kept.append(tb)
        tb = tb.tb_next
    if tb is None:
        return kept[0] if kept else None
    head = None
    for entry in reversed(kept):
        head = types.TracebackType(head, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return head


def _format_traceback(exc: BaseException, tb) -> str:
    depth, frame = 0, tb
    while frame is not None:
        depth, frame = depth + 1, frame.tb_next
    if depth <= 2 * FRAMES_SHOWN:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    tail = tb
    for _ in range(depth - FRAMES_SHOWN):
        tail = tail.tb_next
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(traceback.extract_tb(tb, limit=FRAMES_SHOWN))
    lines.append(f"  [... {depth - 2 * FRAMES_SHOWN:,} frames left out ...]\n")
    lines += traceback.format_list(traceback.extract_tb(tail))
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def split_last_expression(tree: ast.Module):
    """Return (body module, last expression or None)."""
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        return tree, ast.Expression(body=last.value)
    return tree, None


def run_code(code: str, namespace: dict, filename: str) -> BaseException | None:
    """Execute ``code`` in ``namespace``; return the exception it raised, if any.

    Output goes to whatever ``sys.stdout`` is at the time (the caller installs
    the captures). ``ExecTimeout`` is returned like any other exception.
    """
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename, "exec")
        body, last = split_last_expression(tree)
        exec(compile(body, filename, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, filename, "eval"), namespace)
            if value is not None:
                print(repr_limited(value))
    except BaseException as exc:  # noqa: B902 - user code may raise anything, SystemExit included
        return exc
    return None


def repr_limited(value, limit: int = 100_000) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the exec
        text = f"<{type(value).__name__} object; repr() failed: {exc}>"
    return cut_middle(text, limit)


class StreamSwitch:
    """What ``sys.stdout`` / ``sys.stderr`` are while captures are in use: one object that writes to the
    running exec's capture (to the stream it replaced between execs). A reference kept by user code, such as
    the handler of ``logging.basicConfig()`` or ``out = sys.stdout``, so reaches later execs' reports
    instead of the capture of the exec that made it, whose text was already reported."""

    def __init__(self, target):
        self.target = target

    def write(self, s):
        return self.target.write(s)

    def __getattr__(self, name):
        if name == "target":  # not set yet (an unpickled or copied one): no endless recursion
            raise AttributeError(name)
        return getattr(self.target, name)


_SWITCHES: dict = {}


def _switch_to(name: str, target):
    """Make ``sys.<name>`` the switch of that stream, pointing at ``target``; return what it pointed at."""
    switch = _SWITCHES.get(name)
    if switch is None:
        switch = _SWITCHES[name] = StreamSwitch(getattr(sys, name))
    previous, switch.target = switch.target, target
    setattr(sys, name, switch)  # also undoes a `sys.stdout = ...` of the user's code
    return previous


class Captured:
    """Context manager pointing stdout/stderr at captures for one exec (nested ones restore the outer)."""

    def __init__(self, out_dir: str, exec_id, max_chars: int):
        self.stdout = OutputCapture(os.path.join(out_dir, f"exec-{exec_id}.stdout.txt"), max_chars)
        self.stderr = OutputCapture(os.path.join(out_dir, f"exec-{exec_id}.stderr.txt"), max_chars)

    def __enter__(self):
        self._saved = _switch_to("stdout", self.stdout), _switch_to("stderr", self.stderr)
        return self

    def __exit__(self, *exc):
        _switch_to("stdout", self._saved[0])
        _switch_to("stderr", self._saved[1])
        return False
