"""Where sessions live, and the owner-only rules for everything written there.

``RLM_HOME`` (default ``~/.rlm``) holds one folder per session under
``sessions/``. Folders are created 0700 and files 0600; a session folder is only
trusted (its checkpoint loaded, its key read) when it belongs to the current
user and nobody else can write to it. Session ids are validated before any path
is built from them, so ``../x`` or ``/etc`` never reach the filesystem.
"""
from __future__ import annotations

import json
import os
import re
import stat

from .errors import ConfigError, InvalidSessionId, SessionError, SessionNotFound

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def rlm_home(create: bool = True) -> str:
    home = os.environ.get("RLM_HOME") or os.path.join(os.path.expanduser("~"), ".rlm")
    home = os.path.abspath(home)
    if create:
        ensure_private_dir(home)
        ensure_private_dir(os.path.join(home, "sessions"))
    return home


def validate_session_id(session_id) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_RE.match(session_id):
        raise InvalidSessionId(
            f"invalid session id {session_id!r}",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return session_id


def session_dir(session_id: str, must_exist: bool = True) -> str:
    validate_session_id(session_id)
    path = os.path.join(rlm_home(), "sessions", session_id)
    if must_exist:
        if not os.path.isdir(path):
            raise SessionNotFound(
                f"no session {session_id!r} in {os.path.dirname(path)}",
                "run 'rlm_repl.py list' to see the sessions, or 'rlm_repl.py start --input PATH' to make one",
            )
        check_trusted_dir(path)
    return path


def ensure_private_dir(path: str) -> None:
    """Create ``path`` (and parents) owner-only; tighten an existing one we own."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create or use the folder {path!r}: {exc.strerror or exc}",
            "set RLM_HOME to a folder you can write to, or free some disk space",
        ) from exc


def check_trusted_dir(path: str) -> None:
    """Refuse a folder that another user owns or others can write to."""
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise SessionError(
            f"the session folder {path!r} belongs to another user (uid {st.st_uid})",
            "use a session folder of your own (set RLM_HOME)",
        )
    if stat.S_IMODE(st.st_mode) & 0o022:
        raise SessionError(
            f"the session folder {path!r} is writable by other users (mode {oct(stat.S_IMODE(st.st_mode))}); "
            "its checkpoint and key are not trusted",
            f"if you trust its content, run 'chmod 700 {path}' and try again",
        )


def ledger_path(session_dir: str) -> str:
    return os.path.join(session_dir, "ledger.sqlite")


EXIT_LOCKED = 75  # a worker's exit status when another worker already holds the session's lock


def try_lock(session_dir: str):
    """Take the session's worker lock without waiting: its fd (held for life), or None if a worker holds it."""
    import fcntl  # not on the CLI's start-up path: only starting or checking a worker needs it
    fd = os.open(os.path.join(session_dir, "worker.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def read_json(path: str, default=None):
    """A session file's JSON value, ``default`` when it is missing; SessionError when it is damaged."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default
    except ValueError as exc:  # written atomically, so only a hand edit or a disk fault gets here
        raise SessionError(f"the session file {path} is damaged: {exc}",
                           "restore it, or 'rlm_repl.py stop --session ID' to remove the session") from None


def read_key(session_dir: str) -> str:
    with open(os.path.join(session_dir, "key"), "rb") as f:
        return f.read().decode().strip()


def read_json_or(path: str, default):
    """A JSON file's value, or ``default`` when it is missing, unreadable or not JSON.

    For files whose loss only costs a convenience (the last report, the final answer's cache); a file
    the session cannot do without is read strictly (``read_json``).
    """
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return default


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` owner-only, replacing it in one step."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def private_open(path: str, mode: str = "w", **kwargs):
    """``open`` that creates the file 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode, **kwargs)
