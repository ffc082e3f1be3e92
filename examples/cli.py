"""What the three examples share: driving ``rlm_repl.py`` the way Claude Code does, and choosing where the
sub-calls go.

Each example is a script that runs the real CLI in subprocesses (``start``, a few ``exec``, ``final``,
``stop``) and prints what the model would see. Sub-calls go to:

* the real Messages API, when ANTHROPIC_API_KEY is set (the default);
* ``--offline``: the project's fake Messages API (``tests/fake_api.py --reader``), started here on
  127.0.0.1. Its "reader" answers counting, needle, matching-lines and review questions truthfully from the
  prompt text; it is a test device, not a model, so everything it produces is labelled SIMULATED;
* ``--dry-run``: nowhere. Each sub-call is priced (estimated) and answered with a marker, so the run
  shows how many calls the real thing would make and what they could cost at most.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "rlm_repl.py")
FAKE_API = os.path.join(ROOT, "tests", "fake_api.py")
SIMULATED = ("SIMULATED: sub-call answers come from the offline fake API's text reader (tests/fake_api.py), "
             "not from Claude.")


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--offline", action="store_true",
                       help="answer sub-calls with the fake API on 127.0.0.1 (SIMULATED answers)")
    where.add_argument("--dry-run", action="store_true", help="send nothing; price the sub-calls instead")
    parser.add_argument("--workdir", help="folder for the generated input (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the session for 'trace' and 'status'")
    return parser


@contextlib.contextmanager
def workdir(path):
    """The given folder, or a temporary one removed afterwards."""
    if path:
        os.makedirs(path, exist_ok=True)
        yield os.path.abspath(path)
        return
    with tempfile.TemporaryDirectory(prefix="rlm-example-") as tmp:
        yield tmp


@contextlib.contextmanager
def backend(args):
    """Point sub-calls at the real API, the offline fake API, or nothing (dry run)."""
    if args.dry_run:
        print("DRY RUN: no request is sent; each sub-call is priced at its estimated cost.\n")
        yield
        return
    if not args.offline:
        if not os.environ.get("ANTHROPIC_API_KEY"):
            sys.exit("ANTHROPIC_API_KEY is not set. Set it to use Claude, or run with --offline "
                     "(simulated answers from a local fake API) or --dry-run (prices the calls, sends nothing).")
        yield
        return
    server = subprocess.Popen([sys.executable, FAKE_API, "--reader"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            sys.exit(f"the offline fake API did not start (it printed {url!r})")
        os.environ.update(ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY="sk-offline-not-a-real-key")
        print(f"{SIMULATED}\nFake Messages API: {url}\n")
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def rlm(*args: str, code: str | None = None):
    """Run one CLI command; return its JSON (``final``: its text). An error stops the example."""
    proc = subprocess.run([sys.executable, CLI, *args], input=code, capture_output=True, text=True,
                          encoding="utf-8")
    if proc.returncode != 0:
        sys.exit(f"rlm_repl.py {args[0]} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout if args[0] == "final" else json.loads(proc.stdout)


class Session:
    def __init__(self, name: str, args):
        self.id = f"{name}-{os.getpid()}"
        self.dry_run = args.dry_run
        self.keep = args.keep

    def start(self, *inputs: str, glob: str | None = None) -> dict:
        cmd = ["start", "--session", self.id, "--force"]
        for path in inputs:
            cmd += ["--input", path]
        if glob:
            cmd += ["--glob", glob]
        out = rlm(*cmd)
        print(f"$ rlm_repl.py start {' '.join(cmd[1:])}\n  {out['files']} file(s), {out['chars']:,} characters, "
              f"{out['lines']:,} lines, ~{out['est_tokens']:,} tokens; budget ${out['budget']['limits']['max_usd']}\n")
        return out

    def exec(self, title: str, code: str) -> dict:
        """Send code on stdin, as a heredoc would; collect a long run with ``wait``."""
        flags = ["--dry-run"] if self.dry_run else []
        report = rlm("exec", "--session", self.id, *flags, code=code)
        while report.get("running"):
            report = rlm("wait", "--session", self.id)
        print(f"$ rlm_repl.py exec --session {self.id}{' --dry-run' if flags else ''}   # {title}")
        if report["error"]:
            sys.exit(f"the code failed:\n{report['error']['traceback']}")
        print("  " + report["stdout"].rstrip().replace("\n", "\n  "))
        calls = report["calls"] or {}
        if calls.get("dry_run"):
            print(f"  [dry run: {calls['dry_run']} sub-calls priced, estimated ${calls['dry_run_usd']:.4f}; "
                  f"budget left ${report['budget']['remaining']['usd']:.2f}]")
        elif calls.get("count"):
            print(f"  [{calls['count']} sub-calls, {calls['failed']} failed, ${calls['usd']:.4f}; "
                  f"session spent ${report['budget']['spent']['usd']:.4f}]")
        print()
        return report

    def final(self) -> str:
        return rlm("final", "--session", self.id)

    def stop(self) -> None:
        rlm("stop", "--session", self.id, *(["--keep"] if self.keep else []))

    def answer(self, analyse: list, finish: list, offline: bool) -> None:
        """Run the analysing execs, then (unless a dry run) the finishing ones; print the final answer.

        Each step is ``(title, code)``. The session is stopped whatever happens.
        """
        try:
            for title, code in analyse:
                self.exec(title, code)
            if self.dry_run:
                print("Dry run: nothing was sent, so there is no answer. Run without --dry-run for it.")
                return
            for title, code in finish:
                self.exec(title, code)
            answer = self.final()
        finally:
            self.stop()
        label = "SIMULATED ANSWER (offline fake API)" if offline else "ANSWER"
        print(f"===== {label} =====\n{answer}\n===== END =====")
