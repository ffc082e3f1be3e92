"""Session commands as library calls: each returns the dict the CLI prints.

``start`` writes the session folder (key, ``session.json``, ledger with its
limits) and starts the worker, which binds the input and answers with the
summary. ``exec``/``wait`` go through the worker; ``status``, ``list``,
``budget`` and ``final`` read the files directly, so they answer even while a
long batch runs or when no worker lives.
"""
from __future__ import annotations

import json
import os
import time

from . import client, config, paths
from .errors import ConfigError, InputError, LedgerError, NoFinal, RLMError, SessionExists, WorkerError

RESTART_GONE = ("the worker was not running (idle exit, killed, crash or reboot); "
                "it was started again from the last checkpoint")
RESTART_MID_EXEC = ("the worker exited while the exec ran (os._exit(), a crash or a kill); "
                    "it was started again from the last checkpoint")
RESTART_REPLACED = ("the code ignored the timeout interrupt, so its worker was replaced by a new one "
                    "started from the last checkpoint")


def new_session_id() -> str:
    import secrets
    return time.strftime("s%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def start(inputs: list, globs: list, session_id=None, model=None, limits=None, force=False,
          max_depth=None, root_model=None) -> dict:
    session_id = new_session_id() if session_id is None else paths.validate_session_id(session_id)
    sdir = paths.session_dir(session_id, must_exist=False)
    for path in inputs:  # before --force removes anything: a typo must not cost the old session
        if not os.path.exists(path):
            what = "is a symbolic link that loops or leads nowhere" if os.path.islink(path) else "does not exist"
            raise InputError(f"input path {path!r} {what}",
                             "check the path (relative paths are taken from the current folder)")
    old = None
    if os.path.lexists(sdir):
        if not force:
            raise SessionExists(f"a session named {session_id!r} already exists",
                                "pass --force to replace it, choose another --session, or 'stop' it first")
        client.stop_worker(sdir)
        old = _set_aside(sdir)  # removed only once the new session is up: a bad input must not cost it
    try:
        budget, hello = _create(sdir, session_id, inputs, globs, model, limits, max_depth, root_model)
    except BaseException:
        if old is not None:
            os.rename(old, sdir)
        raise
    if old is not None:
        remove_session_dir(old)
    out = {"session": session_id, "session_dir": sdir, "model": _read_meta(sdir)["model"]}
    out.update(hello["summary"])
    out["budget"] = budget
    return out


def _create(sdir, session_id, inputs, globs, model, limits, max_depth, root_model) -> tuple:
    """Write the session folder, its ledger, and start its worker (which binds the input); undone on failure."""
    try:
        _write_session(sdir, session_id, inputs, globs, model, max_depth, root_model)
    except OSError as exc:  # a full disk: the folder could be made, its files not
        remove_session_dir(sdir)
        raise ConfigError(f"cannot write the session folder {sdir}: {exc.strerror or exc}",
                          "free some disk space, or set RLM_HOME to a folder you can write to") from None
    try:
        return _create_ledger(sdir, limits or {}), client.spawn_worker(sdir)
    except BaseException:
        remove_session_dir(sdir)
        raise


def _set_aside(sdir: str) -> str:
    """Rename a stopped session's folder out of the way (a name no session id can take); return the new path."""
    import secrets
    aside = os.path.join(os.path.dirname(sdir), f".{os.path.basename(sdir)}.replaced-{secrets.token_hex(4)}")
    os.rename(sdir, aside)
    return aside


def _write_session(sdir, session_id, inputs, globs, model, max_depth, root_model=None) -> None:
    import secrets
    paths.ensure_private_dir(sdir)
    paths.atomic_write(os.path.join(sdir, "key"), secrets.token_hex(32).encode())
    meta = {
        "id": session_id, "created": time.time(), "cwd": os.getcwd(),
        "inputs": [os.path.abspath(p) for p in inputs], "globs": list(globs or []),
        "model": model or config.default_model(),
        "max_depth": config.DEFAULT_MAX_DEPTH if max_depth is None else max_depth,
        "root_model": root_model,  # of rlm_query's child loops; None: loop.DEFAULT_ROOT_MODEL
    }
    paths.atomic_write(os.path.join(sdir, "session.json"), json.dumps(meta, indent=1).encode())


def _create_ledger(sdir: str, limits: dict) -> dict:
    from .ledger import Ledger
    merged = config.default_limits()
    merged.update(limits)  # None lifts a limit
    ledger = Ledger(paths.ledger_path(sdir), create=True)
    try:
        ledger.set_limits(**merged)
        return ledger.budget()
    finally:
        ledger.close()


def remove_session_dir(sdir: str) -> None:
    """Remove one session folder; never follow a link out of RLM_HOME."""
    sessions = os.path.join(paths.rlm_home(), "sessions")
    if os.path.dirname(os.path.abspath(sdir)) != sessions:
        raise WorkerError(f"refusing to remove {sdir!r}: not a session folder of {sessions}")
    if os.path.islink(sdir):
        os.unlink(sdir)
    elif os.path.isdir(sdir):
        import shutil
        shutil.rmtree(sdir)


def _read_meta(sdir: str) -> dict:
    return paths.read_json(os.path.join(sdir, "session.json"), {})


# -- exec and wait --------------------------------------------------------------

def execute(session_id: str, code: str, wait=None, timeout=None, dry_run=False, on_progress=None,
            parent_call_id=None) -> dict:
    sdir = paths.session_dir(session_id)
    message = {"op": "exec", "code": code, "wait": wait or config.DEFAULT_WAIT,
               "timeout": timeout or config.exec_timeout(), "dry_run": dry_run or config.dry_run(),
               "stdout_max": config.stdout_max(),
               "progress": on_progress is not None, "parent_call_id": parent_call_id,
               "env": {name: os.environ.get(name) for name in config.EXEC_ENV}}
    return _through_worker(sdir, message, on_progress)


def wait(session_id: str, wait=None, on_progress=None) -> dict:
    sdir = paths.session_dir(session_id)
    message = {"op": "wait", "wait": wait or config.DEFAULT_WAIT, "progress": on_progress is not None}
    return _through_worker(sdir, message, on_progress)


def _through_worker(sdir: str, message: dict, on_progress) -> dict:
    restarted = None
    long_enough = float(message["wait"]) + 60
    try:
        answer = client.talk(sdir, message, timeout=long_enough, on_progress=on_progress)
    except client.WorkerGone:
        restarted = _revive(sdir, RESTART_GONE)
        answer = client.talk(sdir, message, timeout=long_enough, on_progress=on_progress)
    except client.WorkerDied:
        restarted = _revive(sdir, RESTART_MID_EXEC)
        answer = client.talk(sdir, {"op": "wait", "wait": 0.01}, timeout=60)
    client.raise_worker_error(answer)
    out = answer.get("report") or answer
    if out.get("worker_replaced"):
        restarted = _revive(sdir, RESTART_REPLACED)
    if restarted:
        out["worker_restarted"] = restarted
    return out


def _revive(sdir: str, why: str) -> dict:
    """Start a new worker once the old one is gone; return the ``worker_restarted`` note."""
    return client.restart_note(client.spawn_worker(sdir), why)


# -- reading the session folder ---------------------------------------------------

def final_text(session_id: str) -> str:
    sdir = paths.session_dir(session_id)
    final = paths.read_json(os.path.join(sdir, "final.json"))
    if not final:
        raise NoFinal(f"session {session_id!r} has no final answer yet",
                      "set one inside the REPL with FINAL(value) or FINAL_VAR('name')")
    return final["text"]


def _ledger(sdir: str):
    from .ledger import Ledger
    return Ledger(paths.ledger_path(sdir))


def status(session_id: str) -> dict:
    sdir = paths.session_dir(session_id)
    meta = _read_meta(sdir)
    out = {"session": session_id, "session_dir": sdir, "created": meta.get("created"),
           "model": meta.get("model"), "inputs": meta.get("inputs"), "globs": meta.get("globs"),
           "input": paths.read_json(os.path.join(sdir, "summary.json"))}
    for key in ("preview", "files_preview"):
        (out["input"] or {}).pop(key, None)
    try:
        ledger = _ledger(sdir)
    except LedgerError as exc:  # shown, never replaced by a zero spend; the rest of the status still helps
        out["budget"], out["totals"] = {"error": exc.to_json()}, None
    else:
        try:
            out["budget"], out["totals"] = ledger.budget(), ledger.totals()
        finally:
            ledger.close()
    out["final"] = os.path.exists(os.path.join(sdir, "final.json"))
    out["worker"] = _worker_status(sdir)
    return out


def _worker_status(sdir: str) -> dict:
    try:
        answer = client.talk(sdir, {"op": "status"}, timeout=10)
    except (client.WorkerGone, client.WorkerDied, WorkerError):
        manifest = paths.read_json(os.path.join(sdir, "checkpoint", "manifest.json"), {})
        return {"alive": False, "checkpointed_variables": sorted((manifest.get("vars") or {}))}
    answer.pop("ok", None)
    variables, total = answer.pop("variables", ([], 0))
    return dict(answer, alive=True, variables=variables, variables_total=total)


def list_sessions() -> dict:
    root = os.path.join(paths.rlm_home(), "sessions")
    rows = []
    for name in sorted(os.listdir(root)):
        sdir = os.path.join(root, name)
        if not paths.SESSION_ID_RE.match(name) or not os.path.isdir(sdir):
            continue  # a stray file or a leftover of a removal, not a session
        try:
            meta = paths.read_json(os.path.join(sdir, "session.json"))
        except RLMError:
            meta = {"damaged": True}  # listed, so it can be found and stopped
        if not meta:
            continue
        rows.append({"session": name, "created": meta.get("created"), "last_used": _last_used(sdir),
                     "usd": _spent_usd(sdir), "final": os.path.exists(os.path.join(sdir, "final.json"))})
        if meta.get("damaged"):
            rows[-1]["damaged"] = "session.json cannot be read"
    return {"sessions": rows, "count": len(rows)}


def _last_used(sdir: str) -> float:
    times = []
    for name in ("session.json", "last_report.json", "ledger.sqlite-wal", "ledger.sqlite"):
        try:
            times.append(os.stat(os.path.join(sdir, name)).st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def _spent_usd(sdir: str):
    try:
        ledger = _ledger(sdir)
    except Exception:
        return None
    try:
        return ledger.budget()["spent"]["usd"]
    finally:
        ledger.close()


def budget(session_id: str, limits: dict) -> dict:
    sdir = paths.session_dir(session_id)
    notes = []
    path = paths.ledger_path(sdir)
    if limits and not os.path.lexists(path):
        # The way out of a damaged ledger (moved aside): a fresh one, made only when limits are given.
        _create_ledger(sdir, limits)
        notes.append(f"started a fresh ledger {path}: spend recorded before it does not count")
    ledger = _ledger(sdir)
    try:
        if limits:
            ledger.set_limits(**limits)
        out = {"session": session_id, "budget": ledger.budget(), "totals": ledger.totals()}
    finally:
        ledger.close()
    if notes:
        out["notes"] = notes
    return out


def stop(session_id: str, keep: bool = False) -> dict:
    sdir = paths.session_dir(session_id)
    was_running = client.stop_worker(sdir)
    if not keep:
        remove_session_dir(sdir)
    return {"session": session_id, "stopped": was_running, "removed": not keep}
