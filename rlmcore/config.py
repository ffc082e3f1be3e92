"""Settings read from the environment, with the project's defaults.

Every variable is read when it is needed (not at import), so a test or a user
can change it between calls. A malformed value is a ConfigError that names the
variable and the value instead of a silent fallback.
"""
from __future__ import annotations

import os

from .errors import ConfigError

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-haiku-5-5"
DEFAULT_CONCURRENCY = 20
DEFAULT_MAX_CALLS = 1000
DEFAULT_MAX_USD = 2.0
DEFAULT_MAX_TOKENS = 20_000_000
DEFAULT_STDOUT_MAX = 8000
DEFAULT_EXEC_TIMEOUT = 1800.0
DEFAULT_WAIT = 90.0  # a Claude Code shell command gets two minutes
DEFAULT_IDLE_EXIT = 4 * 3600.0
DEFAULT_MAX_DEPTH = 2
DEFAULT_API_TIMEOUT = 120.0
# Read by the worker when a sub-call is made. Each exec brings their values from the shell that runs it (set
# or unset), so a key exported after 'start' is used at once; the rest are fixed when the worker starts.
EXEC_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "RLM_CONCURRENCY", "RLM_API_TIMEOUT")


def _number(name: str, default, kind=float, minimum=0):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a {'whole number' if kind is int else 'number'}",
            f"set {name} to a {'whole number' if kind is int else 'number'} >= {minimum}, or unset it",
        ) from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is below {minimum}", f"set {name} to at least {minimum}, or unset it")
    return value


def api_key() -> str | None:
    return os.environ.get("ANTHROPIC_API_KEY") or None


def base_url() -> str:
    return (os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def default_model() -> str:
    return os.environ.get("RLM_MODEL") or DEFAULT_MODEL


def concurrency() -> int:
    return _number("RLM_CONCURRENCY", DEFAULT_CONCURRENCY, int, 1)


def default_limits() -> dict:
    return {
        "max_calls": _number("RLM_MAX_CALLS", DEFAULT_MAX_CALLS, int),
        "max_usd": _number("RLM_MAX_USD", DEFAULT_MAX_USD, float),
        "max_tokens": _number("RLM_MAX_TOKENS", DEFAULT_MAX_TOKENS, int),
    }


def stdout_max() -> int:
    return _number("RLM_STDOUT_MAX", DEFAULT_STDOUT_MAX, int, 200)


def exec_timeout() -> float:
    return _number("RLM_EXEC_TIMEOUT", DEFAULT_EXEC_TIMEOUT, float, 0.1)


def idle_exit() -> float:
    return _number("RLM_IDLE_EXIT", DEFAULT_IDLE_EXIT, float, 1)


def dry_run() -> bool:
    return os.environ.get("RLM_DRY_RUN", "0").strip().lower() in ("1", "true", "yes", "on")


def checkpoint_max_bytes() -> int:
    """Per-variable pickle limit; a value over it is kept in memory but named in ``dropped``."""
    return int(_number("RLM_CHECKPOINT_MAX_MB", 64, float, 0.001) * (1 << 20))


def api_timeout() -> float:
    """Seconds one HTTP request may take before it is abandoned (and retried)."""
    return _number("RLM_API_TIMEOUT", DEFAULT_API_TIMEOUT, float, 0.1)
