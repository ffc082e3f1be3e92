"""The session namespace: the bound input, the injected names, and exec reports.

The namespace is the ``__dict__`` of a module registered as ``__main__`` in the
worker, so classes defined by user code pickle by reference like in a script.
Injected names (``context``, ``llm_query``, ``FINAL`` ...) are checked after
every exec: code that deletes or rebinds one gets the original back and the
report says so, because a model that clobbered ``llm_query`` should not be
stuck for the rest of the session.
"""
from __future__ import annotations

import builtins
import inspect
import json
import os
import sys
import time
import types

from . import config
from .errors import LedgerError, RLMError
from .helpers import make_helpers
from .inputs import bind_inputs
from .paths import atomic_write, ledger_path, read_json_or
from .runner import format_error

VARIABLES_SHOWN = 50
FINAL_PREVIEW = 500


def final_text(value) -> str:
    """Strings as they are; other values as JSON where possible, else their repr."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, indent=2)
    except (TypeError, ValueError):
        return repr(value)


def find_var(name, caller_locals: dict, ns: dict, skip) -> object:
    """FINAL_VAR's look-up: the variable called ``name``, locals first; a clear error when there is none."""
    if not isinstance(name, str):
        raise TypeError("FINAL_VAR takes the variable's NAME as a string, e.g. FINAL_VAR('answer'); "
                        "to hand over a value directly use FINAL(value)")
    for scope in (caller_locals, ns):
        if name in scope:
            return scope[name]
    names = sorted(n for n, v in ns.items()
                   if not n.startswith("_") and n not in skip and not isinstance(v, types.ModuleType))
    raise NameError(f"FINAL_VAR: no variable named {name!r}. Variables that exist: "
                    f"{', '.join(names[:40]) or '(none)'}")


def size_of(value):
    if isinstance(value, (types.ModuleType, types.FunctionType, type)):
        return None
    try:
        return len(value)
    except Exception:
        return sys.getsizeof(value, None)


def _dry_run_notes(calls, budget, session: str) -> list:
    """Warn when the plan a dry run priced would not fit the remaining budget."""
    estimate = (calls or {}).get("dry_run_usd") or 0
    left = ((budget or {}).get("remaining") or {}).get("usd")
    if left is None or estimate <= left:
        return []
    return [f"the dry run's estimated cost ${estimate:.4f} is above the remaining budget ${left:.4f}: "
            f"raise it with 'rlm_repl.py budget --session {session} --max-usd X', or narrow the plan first"]


class Namespace:
    def __init__(self, session_dir: str, meta: dict):
        self.dir = session_dir
        self.meta = meta
        bound = bind_inputs(meta["inputs"], meta.get("globs") or [], cwd=meta.get("cwd"))
        self.context = bound.context
        self.context_files = bound.context_files
        self.summary = bound.summary()
        atomic_write(os.path.join(session_dir, "summary.json"), json.dumps(self.summary).encode())
        self._open_ledger()
        self.final = read_json_or(os.path.join(session_dir, "final.json"), None)
        self.exec_counter = 0
        module = types.ModuleType("__main__")
        sys.modules["__main__"] = module
        self.ns = module.__dict__
        self.ns["__builtins__"] = builtins
        self._builtins = dict(vars(builtins))  # what `import builtins; builtins.print = None` must not change
        self.injected = self._make_injected()
        self._booted = False
        self.protect()
        self._booted = True

    # -- ledger and sub-calls --------------------------------------------------

    def _open_ledger(self) -> None:
        from .ledger import Ledger
        from .subcalls import Engine
        self.ledger, self.ledger_error, self.engine = None, None, None
        try:
            self.ledger = Ledger(ledger_path(self.dir))
            self.engine = Engine(self.ledger, model=self.meta.get("model"))
            import rlm_helper  # code in the REPL that imports the library gets this session's engine
            rlm_helper.use_engine(self.engine)
        except LedgerError as exc:
            self.ledger_error = exc  # execs still work; sub-calls refuse until the ledger is mended

    def _engine(self):
        if self.engine is None:
            raise self.ledger_error
        return self.engine

    def interrupted_execs(self) -> list:
        """Ids of execs a dead worker left 'running'; they are marked interrupted."""
        if self.ledger is None:
            return []
        return self.ledger.interrupt_running_execs()

    def begin_exec(self, code: str, dry_run: bool, parent_call_id=None) -> int:
        if self.ledger is None:
            self._open_ledger()  # it may have been mended since (moved aside, a fresh one started)
        exec_id = None
        if self.ledger is not None:
            try:
                exec_id = self.exec_counter = self.ledger.begin_exec(code)
            except LedgerError:
                pass  # a full disk: the code still runs; sub-calls and the report's budget show the error
        if exec_id is None:
            self.exec_counter += 1
            exec_id = self.exec_counter
        if self.engine is not None:
            self.engine.exec_id = exec_id
            self.engine.dry_run = dry_run
            self.engine.parent_call_id = parent_call_id
        return exec_id

    def progress(self):
        return getattr(self.engine, "progress", None)

    # -- injected names --------------------------------------------------------

    def _make_injected(self) -> dict:
        from .loop import make_rlm_query
        from .subcalls import Engine

        def llm_query(prompt, **kwargs):
            """Ask a sub-model one question; return its answer as a str.

            prompt      the question and the text it is about (e.g. a chunk of `context`).
            system      instructions for the sub-model.
            prefix      text shared by many calls, placed before the prompt and marked
                        for prompt caching, so repeats of it cost a tenth.
            model       a model id or alias ('haiku', 'sonnet'); default: the session's.
            max_tokens  the longest answer (default 4096); an answer cut there ends
                        with a line '[llm_query: answer cut at max_tokens=N]'.
            cache       False: no cache marks on system and prefix.
            cache_ttl   '1h' keeps the cache entry longer (its writes cost more).
            reuse       False: send even when the same request was already paid for
                        (by default it is answered from the session's ledger, free).

            A call that still fails after retries raises an RLMError (an APIError,
            BudgetExceeded, ...) whose message names the cause and .hint what to do.
            Every call counts against the session's limits: see budget().
            """
            return self._engine().llm_query(prompt, **kwargs)

        def llm_query_batch(prompts, **kwargs):
            """Ask many questions in parallel; return the answers, a list of str in the order of `prompts`.

            prompts      a list of str, one sub-call each.
            system, prefix, model, max_tokens, cache, cache_ttl, reuse: as in llm_query
                         (a shared prefix is written to the cache by the first call,
                         then read by the rest).
            concurrency  sub-calls in flight at once (default RLM_CONCURRENCY, 20);
                         halved on rate limits, then grown back.
            errors       "marker" (default): an item that fails after retries becomes a
                         str starting '[llm_query error' that names the cause, and the
                         other answers are kept. "raise": a BatchError once the batch
                         is done, with .results (every answer) and .failed (indexes).

            Example:  answers = llm_query_batch([f"List the errors in:\n{c}" for c in chunks()])
            """
            return self._engine().llm_query_batch(prompts, **kwargs)

        for wrapper, method in ((llm_query, Engine.llm_query), (llm_query_batch, Engine.llm_query_batch)):
            signature = inspect.signature(method)  # help() shows the real keywords, without `self`
            wrapper.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
        names = make_helpers(lambda: self.context, lambda: self.context_files, lambda: self.ns)
        names.update(llm_query=llm_query, llm_query_batch=llm_query_batch,
                     FINAL=self.FINAL, FINAL_VAR=self.FINAL_VAR, budget=self.budget)
        names["rlm_query"] = make_rlm_query(
            self._engine, lambda: self.context, lambda: self.context_files, depth=0,
            max_depth=self.meta.get("max_depth", config.DEFAULT_MAX_DEPTH), root_model=self.meta.get("root_model"),
            out_dir=os.path.join(self.dir, "out"))
        return names

    def injected_names(self) -> set:
        return set(self.injected) | {"context", "context_files", "__builtins__"}

    def protect(self) -> list:
        """Put back injected names that user code deleted or rebound; return their names."""
        fixed = []
        expected = dict(self.injected, context=self.context, context_files=self.context_files,
                        __builtins__=builtins)
        for name, value in expected.items():
            if self.ns.get(name) is not value:
                if self._booted:
                    fixed.append(name)
                self.ns[name] = value
        if "print" in self.ns:
            del self.ns["print"]
            fixed.append("print")
        return fixed

    def restore_builtins(self) -> list:
        """Put back builtins that user code deleted or rebound (``builtins.len``); return their names.

        Called as soon as the code returns: the worker's own code (even ``threading``) needs them.
        """
        fixed = []
        current = vars(builtins)
        for name, value in self._builtins.items():
            if current.get(name, self) is not value:
                setattr(builtins, name, value)
                fixed.append(f"builtins.{name}")
        return fixed

    def FINAL(self, value) -> None:
        """Set the final answer. Strings are kept as they are; other values become JSON (else their repr)."""
        text = final_text(value)
        if getattr(self.engine, "dry_run", False):
            # A dry run's sub-calls return placeholders: an answer built from them is not an answer.
            print(f"[dry run: the final answer ({len(text):,} characters) was NOT set; "
                  "run without --dry-run to set it]")
            return
        self.final = {"text": text, "set_at": time.time(), "exec_id": getattr(self.engine, "exec_id", None)}
        atomic_write(os.path.join(self.dir, "final.json"), json.dumps(self.final, ensure_ascii=False).encode())
        print(f"[final answer set: {len(text):,} characters]")

    def FINAL_VAR(self, name) -> None:
        """Set the final answer to the variable called ``name`` (a string): locals first, then globals."""
        self.FINAL(find_var(name, sys._getframe(1).f_locals, self.ns, self.injected_names()))

    def budget(self) -> dict:
        """The spend so far and the limits of this session (calls, USD, tokens)."""
        if self.ledger is None:
            raise self.ledger_error
        return self.ledger.budget()

    # -- reporting ---------------------------------------------------------

    def user_names(self) -> list:
        skip = self.injected_names()
        return [n for n, v in self.ns.items()
                if not n.startswith("_") and n not in skip and not isinstance(v, types.ModuleType)]

    def variables(self):
        names = sorted(self.user_names())
        shown = [{"name": n, "type": type(self.ns[n]).__name__, "size": size_of(self.ns[n])}
                 for n in names[:VARIABLES_SHOWN]]
        return shown, len(names)

    def report(self, job, capture, exc, *, timed_out: bool, dropped: list, fixed: list) -> dict:
        report = {"ok": exc is None, "exec_id": job.exec_id}
        for stream in ("stdout", "stderr"):
            out = getattr(capture, stream).result() if capture else {"text": "", "truncated": False,
                                                                     "chars": 0, "path": None}
            report.update({stream: out["text"], f"{stream}_truncated": out["truncated"],
                           f"{stream}_chars": out["chars"], f"{stream}_path": out["path"]})
        report["error"] = format_error(exc, f"<exec {job.exec_id}>") if exc is not None else None
        report["timed_out"] = timed_out
        report["variables"], report["variables_total"] = self.variables()
        report["final"] = self.final_summary()
        report["calls"], report["budget"] = self.spend(job.exec_id)
        report["dropped"] = dropped
        if fixed:
            report["restored_names"] = fixed
            report["notes"] = [f"the code deleted or rebound {', '.join(fixed)}; the original was put back "
                               "(keep your own values under other names)"]
        if job.dry_run:
            report["dry_run"] = True
            report.setdefault("notes", []).extend(_dry_run_notes(report["calls"], report["budget"], self.meta["id"]))
        report["elapsed_s"] = round(time.time() - job.started, 3)
        self._end_exec(job.exec_id, report)
        return report

    def final_summary(self):
        if not self.final:
            return None
        text = self.final["text"]
        return {"chars": len(text), "preview": text[:FINAL_PREVIEW]}

    def spend(self, exec_id):
        """(calls, budget) of one exec from the ledger; a ledger error in place of the budget."""
        if self.ledger is None:
            return None, {"error": self.ledger_error.to_json()}
        try:
            return self.ledger.exec_calls(exec_id), self.ledger.budget()
        except RLMError as exc:
            return None, {"error": exc.to_json()}

    def _end_exec(self, exec_id, report) -> None:
        if self.ledger is None:
            return
        error = report["error"]
        outcome = "timeout" if report["timed_out"] else ("error" if error else "ok")
        try:
            self.ledger.end_exec(exec_id, outcome=outcome, stdout_chars=report["stdout_chars"],
                                 error_type=error["type"] if error else None)
        except RLMError:
            pass  # the report still reaches the user; the ledger's own error shows in budget

