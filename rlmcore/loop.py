"""The RLM loop: a root model drives the REPL through the Messages API.

``run_loop(question, executor, ...)`` is the loop of the Recursive Language
Models paper, once. The root model gets the question and a description of the
bound input (sizes, files, a short preview; never the input itself), answers
with ```repl blocks, and sees what they print, cut to ``OUTPUT_MAX``
characters. It finishes by calling ``FINAL(value)`` / ``FINAL_VAR("name")``
in a block (or, in a reply without code, on a line of its own). A reply with
no code and no final gets a reminder; a final given before any code touched
the input is sent back once ("look first"). After ``max_iterations`` replies
the root is asked once for its best answer.

An executor runs the code. ``SessionExecutor`` sends it to a session's worker,
exactly as Claude Code does (``rlm_repl.py run`` drives it from the CLI
process). ``LocalExecutor`` is the namespace of a child loop started by
``rlm_query`` inside a worker: its own dict, its own ``context``, the same
helpers, run in the exec that called it.

Money and the trace. Root calls go through ``Engine.converse``: the same
reservation, settlement and ledger as sub-calls, so they count against the
session's limits. A loop's root calls share a ``batch_id`` (``root-<id>``)
and carry their iteration in ``item``. Every call made by a block's code has
``parent_call_id`` = the root call that wrote the block, and a child loop's
root calls hang under the root call whose code called ``rlm_query``: the
ledger is the tree of the run.

Caching. The conversation only grows, so each request puts a breakpoint on
the system prompt and on the last two user turns (three of the four allowed):
the prefix written by one request is read by the next.

Depth. The top namespace is depth 0; ``rlm_query`` at depth d starts a child
at d + 1 unless d has reached the session's ``max_depth``, where it falls back
to one plain ``llm_query`` over the text.
"""
from __future__ import annotations

import builtins
import hashlib
import os
import re
import sys
import time
import uuid

from . import config
from .errors import InputError
from .helpers import make_helpers
from .inputs import BoundInput
from .runner import Captured, cut_middle, format_error, run_code

DEFAULT_ROOT_MODEL = "sonnet"
DEFAULT_MAX_ITERATIONS = 20
ROOT_MAX_TOKENS = 8192
OUTPUT_MAX = 8000  # characters of one block's report shown to the root
PREVIEW_CHARS = 500
FILES_SHOWN = 20
VARIABLES_SHOWN = 30

SYSTEM_PROMPT = """\
You are the root model of a Recursive Language Model (RLM). You answer one question about an input that is far \
too large to read at once. The input is not in this conversation: it is bound to the variable `context` in a \
persistent Python REPL, and you work on it by writing code.

How to reply
- Put code in ```repl blocks. They run in order in one namespace that persists between replies; variables you \
set stay set. You see what each block prints (stdout, stderr, errors), cut to about 8,000 characters, and \
nothing else. Print summaries, counts and short excerpts, never the whole input or a whole chunk.
- Take one step per reply, then read the output before the next step. Only ```repl blocks run.

Names in the REPL
- context: the whole input as one str. Several files are joined, each after a one-line header naming it.
- context_files: [{path, start, end, bytes}]; context[f["start"]:f["end"]] is that file's text.
- peek(start=0, length=2000) -> str: a window of the input (a negative start counts from the end).
- grep(pattern, *, ignore_case=False, context=0, max_matches=100, file=None): matching lines with line numbers \
(.line, .text, .start); the result also has .total.
- chunks(size=200_000, *, overlap=0, per_file=False) -> list[str]: line-aligned pieces of the input.
- llm_query(prompt, *, system=None, prefix=None, model=None, max_tokens=None) -> str: one call to a fast \
sub-model that reads what you send it (hundreds of thousands of characters are fine).
- llm_query_batch(prompts, *, system=None, prefix=None, ...) -> list[str]: many calls in parallel, answers in \
order. A failed item is a string starting with "[llm_query error". A `prefix` shared by all prompts is cached.
- rlm_query(question, context=None, *, model=None, max_iterations=None) -> str: a recursive call: a child RLM \
like you, with its own REPL, works on `context` (a str you pass, e.g. a slice; default: the whole input) and \
returns its answer. For a sub-problem that is itself too big or too intricate for one llm_query.
- SHOW_VARS(): your variables.  budget(): the spend so far and the limits.
- FINAL(value): hand over the answer and end.  FINAL_VAR("name"): the same with a variable you built.

How to work
1. Look first: len(context), peek(), grep() for the structure of the input and where the answer may be.
2. Narrow with code: slicing, regular expressions and counting in Python are exact and free.
3. Put meaning questions to sub-calls: cut the relevant text into fat chunks (100k-400k characters), ask each \
chunk the question with llm_query_batch, and ask for a short, strict answer format you can parse.
4. Keep results in variables and combine them in code (sum counts, merge lists, vote), then check the result.
5. Finish with FINAL(answer) or FINAL_VAR("name") in a ```repl block: the answer itself, complete and direct, \
not a description of your method.

Every sub-call costs money and time: prefer a few calls over many, and never call the sub-model once per line.
"""

FIRST_TURN = """\
Question: {question}

{description}

{depth_note}
Nothing of the input has been looked at yet. Start by exploring it in a ```repl block."""

NO_CODE = ("Your reply had no ```repl block and no final answer, so nothing ran. Continue with a ```repl block, "
           "or give the answer with FINAL(value) or FINAL_VAR(\"name\").")
ONLY_REPL = " (Only ```repl blocks run; a ```python block is not run.)"
PREMATURE = ("A final answer was set before any of your code looked at the input ({answer!r}), so it was not "
             "accepted. Look at `context` first (peek, grep, chunks, llm_query_batch); then set the final answer "
             "again with FINAL or FINAL_VAR.")
LIMIT = ("You have used all {n} iterations. Reply now with your best answer to the question, as plain text, "
         "with no code: that reply is the final answer.")
FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
FINAL_LINE = re.compile(r"^[ \t]*(FINAL_VAR|FINAL)[ \t]*\(", re.MULTILINE)
# Code that mentions one of these has looked at the input.
INPUT_NAMES = re.compile(r"\b(context|context_files|peek|grep|chunks|rlm_query)\b")


class Step:
    """What running one piece of code gave: its report for the root, and the final answer it set."""

    def __init__(self, report: str, final=None):
        self.report, self.final = report, final


class LoopResult:
    def __init__(self, answer: str, iterations: int, stopped: str, loop_id: str):
        self.answer, self.iterations, self.stopped, self.loop_id = answer, iterations, stopped, loop_id

    def to_json(self) -> dict:
        return {"answer": self.answer, "iterations": self.iterations, "stopped": self.stopped,
                "loop": self.loop_id}


# ---------------------------------------------------------------- the loop

def run_loop(question: str, executor, *, engine, model=None, max_iterations=None, depth: int = 0,
             max_depth: int = config.DEFAULT_MAX_DEPTH, max_tokens: int = ROOT_MAX_TOKENS) -> LoopResult:
    """Let the root ``model`` answer ``question`` by driving ``executor``; root calls go through ``engine``."""
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"the question must be non-empty text, got {question!r}", "pass the question as a str")
    limit = DEFAULT_MAX_ITERATIONS if max_iterations is None else int(max_iterations)
    if limit < 1:
        raise InputError(f"max_iterations must be at least 1, got {max_iterations!r}", "give 1 or more")
    model = model or DEFAULT_ROOT_MODEL
    loop_id = "root-" + uuid.uuid4().hex[:12]
    first = FIRST_TURN.format(question=question.strip(), description=describe(executor.summary()),
                              depth_note=depth_note(depth, max_depth))
    messages = [_turn("user", first)]
    looked, warned = False, False
    for iteration in range(1, limit + 1):
        text, call_id = _ask(engine, messages, model, max_tokens, loop_id, iteration)
        messages.append(_turn("assistant", text))
        feedback, final, touched = take_step(text, executor, call_id)
        looked = looked or touched
        if final is not None:
            if looked or warned:
                return LoopResult(final, iteration, "final", loop_id)
            warned = True
            feedback = (feedback + "\n\n" if feedback else "") + PREMATURE.format(answer=cut_middle(final, 200))
        messages.append(_turn("user", feedback))
    messages[-1] = _turn("user", messages[-1]["content"][0]["text"] + "\n\n" + LIMIT.format(n=limit))
    text, call_id = _ask(engine, messages, model, max_tokens, loop_id, limit + 1)
    return LoopResult(best_answer(text, executor, call_id), limit, "iteration_limit", loop_id)


def take_step(text: str, executor, call_id):
    """Run a reply: (feedback for the root, final answer set or None, whether code touched the input)."""
    fenced = FENCE.findall(text)
    blocks = [code for lang, code in fenced if lang.lower() == "repl" and code.strip()]
    if not blocks:
        call = final_call(text)
        if call is None:
            wrong = any(lang.lower() in ("python", "py") for lang, _ in fenced)
            return NO_CODE + (ONLY_REPL if wrong else ""), None, False
        step = executor.run(call, call_id)
        return _feedback([step]), step.final, False
    steps, touched = [], False
    for code in blocks:
        touched = touched or bool(INPUT_NAMES.search(code))
        steps.append(executor.run(code, call_id))
        if steps[-1].final is not None:
            break  # the answer is in; later blocks would run after it
    skipped = len(blocks) - len(steps)
    feedback = _feedback(steps)
    if skipped:
        feedback += f"\n\n({skipped} later block(s) not run: the final answer was set.)"
    return feedback, steps[-1].final, touched


def best_answer(text: str, executor, call_id) -> str:
    """The answer of the last reply: a FINAL/FINAL_VAR in it if that works, else its text."""
    call = final_call(text)
    if call is not None:
        step = executor.run(call, call_id)
        if step.final is not None:
            return step.final
    answer = FENCE.sub(lambda m: m.group(2), text).strip() or "(no answer)"
    executor.run(f"FINAL({answer!r})", call_id)
    return answer


def final_call(text: str):
    """Code for a ``FINAL(...)`` / ``FINAL_VAR(...)`` written as text, or None.

    ``FINAL_VAR(name)`` takes a name, quoted or not. What is inside
    ``FINAL(...)`` is used as Python when it parses (``FINAL(total)``,
    ``FINAL("42")``), else as the raw answer (``FINAL(The answer is 42)``).
    """
    match = FINAL_LINE.search(text)
    if match is None:
        return None
    end = text.rfind(")")
    inner = (text[match.end():end] if end >= match.end() else text[match.end():]).strip()
    if match.group(1) == "FINAL_VAR":
        return f"FINAL_VAR({inner.strip(chr(34) + chr(39))!r})"
    try:
        compile(f"FINAL({inner})", "<final>", "eval")
        return f"FINAL({inner})"
    except (SyntaxError, ValueError):
        return f"FINAL({inner!r})"


def _feedback(steps) -> str:
    if len(steps) == 1:
        return steps[0].report
    return "\n\n".join(f"[block {n}]\n{s.report}" for n, s in enumerate(steps, 1))


def _ask(engine, messages, model, max_tokens, loop_id, iteration):
    return engine.converse(_with_breakpoints(messages), system=_system_blocks(), model=model,
                           max_tokens=max_tokens, batch_id=loop_id, item=iteration)


def _turn(role: str, text: str) -> dict:
    # The API refuses an empty text block; an empty reply is still a turn.
    return {"role": role, "content": [{"type": "text", "text": text if text.strip() else "(empty)"}]}


def _system_blocks() -> list:
    return [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]


def _with_breakpoints(messages: list) -> list:
    """A copy with a cache breakpoint on the last two user turns (the system prompt holds the third)."""
    out = [dict(m) for m in messages]
    users = [i for i, m in enumerate(out) if m["role"] == "user"][-2:]
    for i in users:
        block = dict(out[i]["content"][-1], cache_control={"type": "ephemeral"})
        out[i]["content"] = out[i]["content"][:-1] + [block]
    return out


# ---------------------------------------------------------------- describing the input

def describe(summary: dict) -> str:
    """What the root is told about the input: sizes, files and a short preview."""
    lines = [f"The input is bound to `context`: {summary.get('chars', 0):,} characters, "
             f"{summary.get('lines', 0):,} lines, about {summary.get('est_tokens', 0):,} tokens, "
             f"in {summary.get('files', 0):,} file(s)."]
    files = summary.get("files_preview") or []
    if files and (summary.get("files", 0) > 1 or files[0].get("path") != "<text>"):
        lines.append("Files" + (f" (first {len(files)})" if summary.get("files", 0) > len(files) else "") + ":")
        lines += [f"- {f['path']} ({f['bytes']:,} bytes)" for f in files[:FILES_SHOWN]]
    preview = (summary.get("preview") or "")[:PREVIEW_CHARS]
    if preview:
        lines.append(f"The first {len(preview):,} characters:\n<<<\n{preview}\n>>>")
    return "\n".join(lines)


def depth_note(depth: int, max_depth: int) -> str:
    if depth == 0:
        where = "You are the top-level root"
    else:
        where = f"You are a child RLM at depth {depth}, started by rlm_query"
    if depth < max_depth:
        return f"{where}; rlm_query starts child RLMs (depth limit {max_depth})."
    return f"{where}; at the depth limit ({max_depth}) rlm_query makes one plain llm_query instead of a child."


def text_summary(text: str, files: list) -> dict:
    return BoundInput(text, files).summary()


# ---------------------------------------------------------------- executors

def _report(out: dict, err: dict, error: dict | None, variables=None, notes=()) -> str:
    """A block's report for the root: stdout, stderr, the error, variables; at most OUTPUT_MAX characters."""
    parts = []
    if out["text"]:
        parts.append(out["text"].rstrip("\n"))
    if err["text"].strip():
        parts.append("[stderr]\n" + err["text"].rstrip("\n"))
    if error:
        parts.append(error.get("traceback") or f"{error['type']}: {error['message']}")
    parts += list(notes)
    if not parts:
        parts.append("(no output)")
    if variables:
        parts.append("[variables] " + ", ".join(f"{v['name']}: {v['type']}" for v in variables[:VARIABLES_SHOWN]))
    return cut_middle("\n".join(parts), OUTPUT_MAX)


class SessionExecutor:
    """Runs code in a session's worker, as ``rlm_repl.py exec`` does."""

    def __init__(self, session_id: str):
        from . import paths
        self.session_id = session_id
        self.dir = paths.session_dir(session_id)
        self._read = paths.read_json

    def summary(self) -> dict:
        return self._read(os.path.join(self.dir, "summary.json"), {}) or {}

    def run(self, code: str, parent_call_id) -> Step:
        from . import sessions
        before = time.time()
        report = sessions.execute(self.session_id, code, parent_call_id=parent_call_id)
        while report.get("running"):
            report = sessions.wait(self.session_id)
        final = None
        if report.get("final"):
            saved = self._read(os.path.join(self.dir, "final.json"), {}) or {}
            if saved.get("set_at", 0) >= before:
                final = saved.get("text")
        notes = ["[timed out: the code was interrupted]"] if report.get("timed_out") else []
        notes += report.get("notes") or []
        text = _report({"text": report.get("stdout") or ""}, {"text": report.get("stderr") or ""},
                       report.get("error"), report.get("variables"), notes)
        return Step(text, final)


class LocalExecutor:
    """The namespace of a child loop: a dict with its own ``context`` and every helper.

    Its code runs inside the exec that called ``rlm_query`` (so that exec's
    timeout covers it); an interrupt or timeout is raised on, never kept as
    a block error.
    """

    def __init__(self, text: str, files: list, *, engine, depth: int, max_depth: int, root_model: str,
                 out_dir: str, label: str, stdout_max: int | None = None):
        self.context, self.context_files = text, files
        self.engine = engine
        self.out_dir, self.label = out_dir, label
        self.stdout_max = stdout_max or config.stdout_max()
        self.final = None
        self.runs = 0
        self.ns = {"__builtins__": builtins, "__name__": "__rlm_child__"}
        names = make_helpers(lambda: self.context, lambda: self.context_files, lambda: self.ns)
        names.update(
            context=text, context_files=files, FINAL=self.FINAL, FINAL_VAR=self.FINAL_VAR,
            llm_query=engine.llm_query, llm_query_batch=engine.llm_query_batch, budget=engine.ledger.budget,
            rlm_query=make_rlm_query(lambda: engine, lambda: self.context, lambda: self.context_files,
                                     depth=depth, max_depth=max_depth, root_model=root_model, out_dir=out_dir))
        self.injected = names
        self.ns.update(names)

    def summary(self) -> dict:
        return text_summary(self.context, self.context_files)

    def FINAL(self, value) -> None:
        from .namespace import final_text
        self.final = final_text(value)
        print(f"[final answer set: {len(self.final):,} characters]")

    def FINAL_VAR(self, name) -> None:
        from .namespace import find_var
        self.FINAL(find_var(name, sys._getframe(1).f_locals, self.ns, self.injected))

    def run(self, code: str, parent_call_id) -> Step:
        self.runs += 1
        self.engine.parent_call_id = parent_call_id  # this block's calls hang under the root call that wrote it
        filename = f"<rlm_query {self.label} #{self.runs}>"
        self.final = None
        capture = Captured(self.out_dir, f"{self.label}-{self.runs}", self.stdout_max)
        with capture:
            exc = run_code(code, self.ns, filename)
        if exc is not None and not isinstance(exc, (Exception, SystemExit)):
            raise exc  # the calling exec's timeout or an interrupt: stop the child too
        self.ns.update(self.injected)  # code that clobbered a helper gets it back
        error = format_error(exc, filename) if exc is not None else None
        return Step(_report(capture.stdout.result(), capture.stderr.result(), error), self.final)


# ---------------------------------------------------------------- rlm_query

def fork_engine(engine):
    """An engine on the same ledger and HTTP client, with its own ``parent_call_id``."""
    from .subcalls import Engine
    child = Engine(engine.ledger, client=engine.client, model=engine.model, concurrency=engine.concurrency,
                   dry_run=engine.dry_run, clock=engine.clock)
    child.exec_id, child.parent_call_id, child.warm_up = engine.exec_id, engine.parent_call_id, engine.warm_up
    return child


def child_label(question: str, text: str, depth: int) -> str:
    """A child loop's name in its tracebacks and spilled output, which its root reads. It is the same when an
    exec is run again (no exec id, nothing random), so the root's requests are too and come from the ledger."""
    seen = f"{question}\0{len(text)}\0{text[:4096]}\0{text[-4096:]}"
    return f"d{depth}-{hashlib.sha256(seen.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def make_rlm_query(get_engine, get_context, get_files, *, depth: int, max_depth: int, root_model=None,
                   out_dir: str):
    """``rlm_query`` for a namespace at ``depth``, whose sub-calls go through ``get_engine()``."""

    def rlm_query(question, context=None, *, model=None, max_iterations=None) -> str:
        """Ask a child RLM: a root model with its own REPL works on `context` and returns its answer.

        question        what to find out, as you would ask it of a person.
        context         the text it works on (a str; other values are turned into
                        JSON text). Default: the whole current input.
        model           the child's root model (default: this loop's root model).
        max_iterations  the child's replies before it must answer.

        The child's calls draw from this session's budget and show in the trace
        under the call that made them. At the session's depth limit (start
        --max-depth, default 2) it is one plain llm_query over context + question.
        """
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"rlm_query: the question must be non-empty text, got {question!r}",
                             'e.g. rlm_query("Which functions write to disk?", context[a:b])')
        engine = get_engine()
        if context is None:
            text, files = get_context(), get_files()
        else:
            from .namespace import final_text
            text = final_text(context)
            files = [{"path": "<text>", "start": 0, "end": len(text), "bytes": len(text.encode("utf-8"))}]
        if depth >= max_depth:
            return engine.llm_query(f"Question: {question.strip()}", prefix=text or None, model=model)
        root = fork_engine(engine)  # root calls hang under the call whose code called rlm_query
        executor = LocalExecutor(text, files, engine=fork_engine(engine), depth=depth + 1, max_depth=max_depth,
                                 root_model=model or root_model, out_dir=out_dir,
                                 label=child_label(question, text, depth + 1))
        result = run_loop(question, executor, engine=root, model=model or root_model,
                          max_iterations=max_iterations, depth=depth + 1, max_depth=max_depth)
        return result.answer

    return rlm_query


# ---------------------------------------------------------------- sessions and the CLI

def run_session(session_id: str, question: str, *, model=None, max_iterations=None, engine=None) -> dict:
    """Run the loop on an existing session; its worker runs the code. Returns the answer and the spend."""
    from . import paths
    from .ledger import Ledger
    from .subcalls import Engine
    sdir = paths.session_dir(session_id)
    meta = paths.read_json(os.path.join(sdir, "session.json"), {}) or {}
    started = time.time()
    ledger = None
    if engine is None:
        ledger = Ledger(paths.ledger_path(sdir))
        engine = Engine(ledger)
    try:
        result = run_loop(question, SessionExecutor(session_id), engine=engine,
                          model=model or meta.get("root_model"), max_iterations=max_iterations,
                          max_depth=meta.get("max_depth", config.DEFAULT_MAX_DEPTH))
        totals = engine.ledger.totals()
    finally:
        if ledger is not None:
            ledger.close()
    out = result.to_json()
    out.update(session=session_id, calls=totals["count"], failed=totals["failed"], usd=totals["usd"],
               input_tokens=totals["input_tokens"], output_tokens=totals["output_tokens"],
               cache_read_tokens=totals["cache_read_tokens"], cache_write_tokens=totals["cache_write_tokens"],
               elapsed_s=round(time.time() - started, 3))
    return out


def run_headless(inputs: list, question: str, *, globs=(), session_id=None, model=None, sub_model=None,
                 max_iterations=None, max_depth=None, limits=None, force=False) -> dict:
    """``rlm_repl.py run``: start a session, run the loop, stop the worker, keep the session."""
    from . import client, paths, sessions
    if not isinstance(question, str) or not question.strip():
        raise InputError("run needs a question: --query TEXT", 'e.g. --query "How many requests failed?"')
    began = time.time()
    started = sessions.start(inputs, list(globs), session_id, sub_model, limits or {}, force, max_depth,
                             root_model=model or DEFAULT_ROOT_MODEL)
    try:
        out = run_session(started["session"], question, max_iterations=max_iterations)
    finally:
        client.stop_worker(paths.session_dir(started["session"]))  # a later exec starts it again
    out["elapsed_s"] = round(time.time() - began, 3)
    return out
