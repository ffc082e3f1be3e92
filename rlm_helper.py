"""rlm as a library: ``import rlm_helper`` and call ``llm_query`` / ``llm_query_batch``.

Inside a session's REPL these names are bound to the session's engine. In any
other Python program they use a default engine, made on first use, whose
ledger is ``$RLM_HOME/library/ledger.sqlite`` with the project's default
limits (``RLM_MAX_CALLS``, ``RLM_MAX_USD``, ``RLM_MAX_TOKENS``): the same
budgets, retries, caching and paid-response reuse as a session.
``configure(...)`` points it at another ledger, a session's, or a model.

This module stays import-light: the HTTP client and the ledger are loaded on
the first sub-call, not on ``import rlm_helper``.
"""
from __future__ import annotations

import os
import threading

from rlmcore.errors import (  # noqa: F401  (re-exported)
    APIConnectionError, APIError, APITimeoutError, AuthenticationError, BadRequestError, BatchError,
    BillingError, BudgetExceeded, ConfigError, InputError, LedgerError, ModelNotFoundError,
    OverloadedError, PermissionDeniedError, RateLimitError, RequestTooLargeError, RLMError, ServerError,
    SpendLimitError,
)

__all__ = ["llm_query", "llm_query_batch", "configure", "engine", "Engine", "RLMError", "APIError",
           "BatchError", "BudgetExceeded", "ConfigError"]

_lock = threading.RLock()
_engine = None
_owned_ledger = None  # a ledger this module opened (closed when replaced)


def __getattr__(name):
    if name == "Engine":  # loaded on demand: it pulls in the HTTP client
        from rlmcore.subcalls import Engine
        return Engine
    raise AttributeError(f"module 'rlm_helper' has no attribute {name!r}")


def _library_ledger_path() -> str:
    from rlmcore import paths
    folder = os.path.join(paths.rlm_home(), "library")
    paths.ensure_private_dir(folder)
    return os.path.join(folder, "ledger.sqlite")


def _open_ledger(ledger_path=None, session=None):
    from rlmcore import config, paths
    from rlmcore.ledger import Ledger
    if session is not None:
        return Ledger(paths.ledger_path(paths.session_dir(session)))
    ledger = Ledger(ledger_path or _library_ledger_path(), create=True)
    if ledger.created:
        ledger.set_limits(**config.default_limits())
    return ledger


def configure(ledger_path=None, session=None, model=None, *, concurrency=None, dry_run=None,
              client=None, ledger=None):
    """Make (and return) the engine ``llm_query`` uses from now on.

    ``ledger_path``: a ledger file (created with the default limits if new);
    ``session``: the id of an existing session, to spend from its budget;
    ``ledger``: an open Ledger. With none of them, the library ledger.
    """
    global _engine, _owned_ledger
    from rlmcore.subcalls import Engine
    with _lock:
        new_ledger = ledger if ledger is not None else _open_ledger(ledger_path, session)
        if _owned_ledger is not None and _owned_ledger is not new_ledger:
            _owned_ledger.close()
        _owned_ledger = None if ledger is not None else new_ledger
        _engine = Engine(new_ledger, client=client, model=model, concurrency=concurrency, dry_run=dry_run)
        return _engine


def use_engine(eng) -> None:
    """Bind an existing engine (the session worker binds the session's)."""
    global _engine
    with _lock:
        _engine = eng


def engine():
    """The engine in use, made with the defaults on first use."""
    with _lock:
        if _engine is None:
            configure()
        return _engine


def llm_query(prompt, *, system=None, prefix=None, model=None, max_tokens=None, cache=True,
              cache_ttl=None, reuse=True) -> str:
    """One sub-call; raises an RLMError subclass that names the cause on failure."""
    return engine().llm_query(prompt, system=system, prefix=prefix, model=model, max_tokens=max_tokens,
                              cache=cache, cache_ttl=cache_ttl, reuse=reuse)


def llm_query_batch(prompts, *, system=None, prefix=None, model=None, max_tokens=None, concurrency=None,
                    cache=True, cache_ttl=None, reuse=True, errors="marker") -> list:
    """Parallel sub-calls, answers in input order; failed items are '[llm_query error ...]' strings."""
    return engine().llm_query_batch(prompts, system=system, prefix=prefix, model=model,
                                    max_tokens=max_tokens, concurrency=concurrency, cache=cache,
                                    cache_ttl=cache_ttl, reuse=reuse, errors=errors)
