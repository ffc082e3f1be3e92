"""rlm: work on inputs far larger than a context window from a persistent Python REPL.

Every command prints one JSON object on stdout (``final`` prints the raw answer).
Exit status: 0 success, 1 an error to act on, 2 a usage error.
Run ``python3 rlm_repl.py COMMAND --help`` for a command's options.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import RLMError, UsageError


def emit(obj) -> None:
    # A lone surrogate (user code printed one) is not UTF-8: it goes out as its JSON escape \udcXX.
    text = json.dumps(obj, ensure_ascii=False, default=str)
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace") + b"\n")
    sys.stdout.buffer.flush()


# -- argument types -----------------------------------------------------------------

def _limit(kind, what):
    def parse(text):
        if text.strip().lower() in ("none", "unlimited"):
            return "none"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; give {what} >= 0, or 'none' for no limit")
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give {what} >= 0, "
                                             "or 'none' for no limit")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} is negative; give {what} >= 0, or 'none' for no limit")
        return value
    return parse


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}", f"run '{self.prog} --help' for the options")


def add_budget_flags(p) -> None:
    p.add_argument("--max-calls", type=_limit(int, "a whole number"), help="most sub-calls this session may send")
    p.add_argument("--max-usd", type=_limit(float, "a number"), help="most USD this session may spend")
    p.add_argument("--max-tokens", type=_limit(int, "a whole number"), help="most tokens (all kinds) it may use")


def build_parser() -> Parser:
    parser = Parser(prog="rlm_repl.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("start", help="bind files and folders to a new session")
    p.add_argument("--input", action="append", required=True, metavar="PATH", help="file or folder (repeatable)")
    p.add_argument("--glob", action="append", default=[], metavar="PAT", help="e.g. 'src/**/*.py' (repeatable)")
    p.add_argument("--session", metavar="ID")
    p.add_argument("--model", metavar="M", help="default model of sub-calls")
    p.add_argument("--max-depth", type=int, metavar="D", help="recursion depth of rlm_query (default 2)")
    p.add_argument("--force", action="store_true", help="replace an existing session of that id")
    add_budget_flags(p)

    p = sub.add_parser("run", help="answer a question headless: a root model drives the REPL through the API")
    p.add_argument("--input", action="append", required=True, metavar="PATH", help="file or folder (repeatable)")
    p.add_argument("--glob", action="append", default=[], metavar="PAT", help="e.g. 'src/**/*.py' (repeatable)")
    p.add_argument("--query", required=True, metavar="TEXT", help="the question to answer")
    p.add_argument("--model", metavar="ROOT", help="root model (default sonnet)")
    p.add_argument("--sub-model", metavar="M", help="default model of sub-calls")
    p.add_argument("--max-iterations", type=int, metavar="N", help="root replies before it must answer (default 20)")
    p.add_argument("--max-depth", type=int, metavar="D", help="recursion depth of rlm_query (default 2)")
    p.add_argument("--session", metavar="ID", help="session id to keep the run under (default: a new one)")
    p.add_argument("--force", action="store_true", help="replace an existing session of that id")
    p.add_argument("--json", action="store_true", help="print answer, iterations, calls, usd, session as JSON")
    add_budget_flags(p)

    p = sub.add_parser("exec", help="run code in the session")
    p.add_argument("--session", required=True, metavar="ID")
    src = p.add_mutually_exclusive_group()
    src.add_argument("-c", dest="code", metavar="CODE")
    src.add_argument("--file", metavar="PATH")
    p.add_argument("--wait", type=_seconds, metavar="S", help="seconds to wait before answering 'running'")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="hard limit after which the code is interrupted")
    p.add_argument("--dry-run", action="store_true", help="send no request; price the sub-calls instead")

    p = sub.add_parser("wait", help="wait for the running exec and print its report")
    p.add_argument("--session", required=True, metavar="ID")
    p.add_argument("--wait", type=_seconds, metavar="S")

    for name, text in (("final", "print the final answer's raw text"), ("status", "show the session's state")):
        sub.add_parser(name, help=text).add_argument("--session", required=True, metavar="ID")
    sub.add_parser("list", help="all sessions")

    p = sub.add_parser("budget", help="show, raise or lower the limits")
    p.add_argument("--session", required=True, metavar="ID")
    add_budget_flags(p)

    p = sub.add_parser("trace", help="where the calls, tokens, money and time went; --html writes a report")
    p.add_argument("--session", required=True, metavar="ID")
    p.add_argument("--json", action="store_true", help="full detail: every exec, its code, batches and failures")
    p.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report to PATH")

    p = sub.add_parser("stop", help="stop the worker and remove the session")
    p.add_argument("--session", required=True, metavar="ID")
    p.add_argument("--keep", action="store_true", help="keep the session's files")

    p = sub.add_parser("doctor", help="check Python, key, base URL, RLM_HOME and the default model")
    p.add_argument("--live", action="store_true", help="also send one tiny request and report latency and usage")
    return parser


# -- commands -----------------------------------------------------------------------

def read_code(args) -> str:
    """The code as text (bytes that are not UTF-8 become U+FFFD, from every source alike); empty code is refused."""
    code = _code_text(args)
    if not code.strip():
        raise UsageError("exec got no code (empty -c, file or stdin)",
                         "pass the code with -c CODE, --file PATH, or a heredoc: exec --session ID <<'EOF' ... EOF")
    return code


def _code_text(args) -> str:
    if args.code is not None:
        return os.fsencode(args.code).decode("utf-8", errors="replace")  # argv's own bytes, whatever the locale
    if args.file:
        try:
            with open(args.file, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except OSError as exc:
            from rlmcore.errors import InputError
            raise InputError(f"cannot read code file {args.file!r}: {exc.strerror}", "check the path") from None
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("exec needs code: -c CODE, --file PATH, or code on stdin",
                         "e.g. rlm_repl.py exec --session ID -c 'print(len(context))'")
    return sys.stdin.buffer.read().decode("utf-8", errors="replace")


def progress_printer():
    """Show a running batch on one updating stderr line, or None when progress is off.

    On when stderr is a terminal or RLM_PROGRESS=1 (RLM_PROGRESS=0 silences a terminal). Only stderr:
    stdout carries nothing but the command's JSON. The line goes away when its batch ends (on a
    terminal; elsewhere it is ended with a newline so logs keep it).
    """
    setting = os.environ.get("RLM_PROGRESS", "").strip()
    tty = sys.stderr.isatty()
    if setting == "0" or not (tty or setting == "1"):
        return None

    def show(answer):
        p = answer.get("progress")
        if not p:
            return finish_progress(show)
        line = (f"[rlm] {p.get('done', 0)}/{p.get('total', '?')} done, {p.get('failed', 0)} failed, "
                f"{p.get('retries', 0)} retries, ${p.get('usd', 0):.4f}, {answer.get('elapsed_s', 0):.0f}s")
        if p.get("eta_s") is not None:
            line += f", ~{p['eta_s']:.0f}s left"
        sys.stderr.write("\r" + line + ("\x1b[K" if tty else ""))
        sys.stderr.flush()
        show.open = True

    show.open, show.tty = False, tty
    return show


def finish_progress(printer) -> None:
    """Finish a progress line that is showing: erased on a terminal, ended with a newline elsewhere."""
    if printer and printer.open:
        sys.stderr.write("\r\x1b[K" if printer.tty else "\n")
        sys.stderr.flush()
        printer.open = False



def cmd_start(args):
    from rlmcore import sessions
    return sessions.start(args.input, args.glob, args.session, args.model, limits(args), args.force,
                          args.max_depth)


def cmd_run(args):
    from rlmcore import loop
    out = loop.run_headless(args.input, args.query, globs=args.glob, session_id=args.session, model=args.model,
                            sub_model=args.sub_model, max_iterations=args.max_iterations,
                            max_depth=args.max_depth, limits=limits(args), force=args.force)
    if args.json:
        return out
    sys.stdout.buffer.write(out["answer"].encode("utf-8"))
    sys.stdout.buffer.flush()
    return None


def cmd_exec(args):
    from rlmcore import sessions
    code = read_code(args)
    printer = progress_printer()
    try:
        return sessions.execute(args.session, code, args.wait, args.timeout, args.dry_run, printer)
    finally:
        finish_progress(printer)


def cmd_wait(args):
    from rlmcore import sessions
    printer = progress_printer()
    try:
        return sessions.wait(args.session, args.wait, printer)
    finally:
        finish_progress(printer)


def cmd_final(args):
    from rlmcore import sessions
    text = sessions.final_text(args.session)
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
    return None


def cmd_status(args):
    from rlmcore import sessions
    return sessions.status(args.session)


def cmd_list(args):
    from rlmcore import sessions
    return sessions.list_sessions()


def cmd_budget(args):
    from rlmcore import sessions
    return sessions.budget(args.session, limits(args))


def cmd_trace(args):
    from rlmcore import trace
    return trace.trace(args.session, full=args.json, html=args.html)


def cmd_stop(args):
    from rlmcore import sessions
    return sessions.stop(args.session, args.keep)


def cmd_doctor(args):
    from rlmcore import doctor
    return doctor.diagnose(live=args.live)


def limits(args) -> dict:
    """The budget flags given: a number, or None where 'none' lifts the limit."""
    given = {name: getattr(args, name) for name in ("max_calls", "max_usd", "max_tokens")}
    return {name: (None if value == "none" else value) for name, value in given.items() if value is not None}


COMMANDS = {"start": cmd_start, "run": cmd_run, "exec": cmd_exec, "wait": cmd_wait, "final": cmd_final,
            "status": cmd_status, "list": cmd_list, "budget": cmd_budget, "trace": cmd_trace, "stop": cmd_stop,
            "doctor": cmd_doctor}


def main(argv=None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        if not args.command:
            raise UsageError("no command given", "run 'rlm_repl.py --help' to see the commands")
        out = COMMANDS[args.command](args)
    except RLMError as exc:
        if os.environ.get("RLM_DEBUG") == "1":
            raise
        emit({"error": exc.to_json()})
        return exc.exit_code
    except KeyboardInterrupt:
        running_on = getattr(args, "command", None) in ("exec", "wait")
        emit({"error": {"type": "interrupted", "message": "interrupted before the command finished",
                        "hint": "the exec keeps running in the worker: collect it with 'wait'" if running_on
                        else "run the command again"}})
        return 1
    except Exception as exc:
        if os.environ.get("RLM_DEBUG") == "1":
            raise
        emit({"error": {"type": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                        "hint": "this is a bug in rlm; RLM_DEBUG=1 shows the traceback"}})
        return 1
    if out is not None:
        emit(out)
    return 0

