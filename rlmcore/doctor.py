"""``rlm_repl.py doctor``: is this machine ready to run sessions?

Each check returns a small dict with ``ok`` and what it saw; ``diagnose``
gathers them into one report with the ``problems`` to fix first (each with a
hint) and ``warnings`` that do not stop anything. The report is the answer, so
the command succeeds (exit 0) even when a check fails; ``ok`` says whether all
passed.

The API key is never shown, not even in part: the report says only whether
it is set. ``--live`` sends one tiny request (a few dozen tokens, a cost well
under a thousandth of a cent at Haiku prices) to prove the key, the base URL
and the model work together; it is not charged to any session's budget.
"""
from __future__ import annotations

import os
import stat
import sys
import time

from . import config, models
from .errors import ConfigError, RLMError

MIN_PYTHON = (3, 9)
LIVE_PROMPT = "Reply with the single word: ready"
LIVE_MAX_TOKENS = 16


def diagnose(live: bool = False) -> dict:
    report = {
        "python": check_python(),
        "api_key": check_key(),
        "base_url": check_base_url(),
        "rlm_home": check_home(),
        "settings": check_settings(),
        "model": check_model(),
    }
    if live:
        report["live"] = check_live(report["api_key"]["ok"])
    problems = [f"{name}: {c['problem']}. Fix: {c['hint']}" for name, c in report.items() if not c["ok"]]
    warnings = [f"{name}: {c['warning']}" for name, c in report.items() if c.get("warning")]
    return {"ok": not problems, "problems": problems, "warnings": warnings, **report}


def _failed(problem: str, hint: str, **seen) -> dict:
    return {"ok": False, **seen, "problem": problem, "hint": hint}


def check_python() -> dict:
    version = ".".join(map(str, sys.version_info[:3]))
    seen = {"version": version, "executable": sys.executable, "required": ">= 3.9"}
    if sys.version_info[:2] < MIN_PYTHON:
        return _failed(f"Python {version} is too old", "install Python 3.9 or newer", **seen)
    return {"ok": True, **seen}


def check_key() -> dict:
    if not config.api_key():
        return _failed("ANTHROPIC_API_KEY is not set", "export ANTHROPIC_API_KEY=<a key from the Anthropic "
                       "Console>; without a key, 'exec --dry-run' still prices the sub-calls", set=False)
    return {"ok": True, "set": True}


def check_base_url() -> dict:
    url = config.base_url()
    seen = {"url": url, "default": url == config.DEFAULT_BASE_URL}
    if not url.startswith(("http://", "https://")):
        return _failed(f"ANTHROPIC_BASE_URL={url!r} is not an http(s) URL",
                       "set it to e.g. https://api.anthropic.com, or unset it", **seen)
    return {"ok": True, **seen}


def check_home() -> dict:
    from .paths import rlm_home
    home = rlm_home(create=False)
    seen = {"path": home, "exists": os.path.isdir(home)}
    if not seen["exists"]:
        parent = _existing_parent(home)
        if not os.access(parent, os.W_OK | os.X_OK):
            return _failed(f"cannot create {home}: {parent} is not writable",
                           "set RLM_HOME to a folder you can write to", **seen)
        return {"ok": True, **seen, "note": "created owner-only (0700) by the first 'start'"}
    st = os.stat(home)
    seen["mode"] = oct(stat.S_IMODE(st.st_mode))
    if st.st_uid != os.getuid():
        return _failed(f"{home} belongs to another user (uid {st.st_uid})",
                       "set RLM_HOME to a folder of your own", **seen)
    if not os.access(home, os.W_OK | os.X_OK):
        return _failed(f"{home} is not writable", f"run 'chmod 700 {home}' or set RLM_HOME", **seen)
    if stat.S_IMODE(st.st_mode) & 0o077:
        return _failed(f"{home} is open to other users (mode {seen['mode']})",
                       f"run 'chmod 700 {home}': sessions hold your data and worker keys", **seen)
    return {"ok": True, **seen}


def _existing_parent(path: str) -> str:
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def check_settings() -> dict:
    """The effective RLM_* settings; a malformed variable is a problem, not a crash."""
    try:
        seen = {
            "limits": config.default_limits(),
            "concurrency": config.concurrency(),
            "stdout_max": config.stdout_max(),
            "exec_timeout_s": config.exec_timeout(),
            "dry_run": config.dry_run(),
        }
    except ConfigError as exc:
        return _failed(exc.message, exc.hint)
    if seen["dry_run"]:
        seen["warning"] = "RLM_DRY_RUN is on: sub-calls send nothing and return a marker"
    return {"ok": True, **seen}


def check_model() -> dict:
    info = models.resolve(config.default_model())
    seen = {
        "id": info["id"], "known": info["known"], "context": info["context"], "max_output": info["max_output"],
        "usd_per_million_tokens": [_tier(t) for t in info["tiers"]],
        "cache_read_x": info["cache_read"], "cache_write_x": dict(models.CACHE_WRITE),
    }
    if not info["known"]:
        seen["warning"] = (f"model {info['id']!r} is not in the registry: it is sent as given and priced at "
                           f"the dearest known prices; known ids: {', '.join(models.known_ids())}")
    return {"ok": True, **seen}


def _tier(tier) -> dict:
    limit, price_in, price_out = tier
    return {"up_to_input_tokens": limit, "input": price_in, "output": price_out}


def check_live(key_ok: bool) -> dict:
    """One tiny real request: latency, usage and cost, or the error it met."""
    if not key_ok:
        return _failed("no request sent: there is no API key", "set ANTHROPIC_API_KEY first")
    from .api import Client, build_body
    info = models.resolve(config.default_model())
    body = build_body(info, LIVE_PROMPT, max_tokens=LIVE_MAX_TOKENS, cache=False)
    started = time.monotonic()
    try:
        response = Client(timeout=60, max_retries=1).send(body)
    except RLMError as exc:
        return _failed(exc.message, exc.hint or "see the message", model=info["id"],
                       error_type=exc.type, latency_s=round(time.monotonic() - started, 3))
    return {"ok": True, "model": info["id"], "latency_s": round(response.latency_s, 3),
            "attempts": response.attempts, "usage": response.usage,
            "usd": round(models.cost_usd(info, response.usage), 8), "stop_reason": response.stop_reason,
            "reply": response.text[:200], "request_id": response.request_id}
