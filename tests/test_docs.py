"""SKILL.md, README.md and the session-folder tables of docs/ must not drift from the code.

* Every CLI command of ``build_parser()`` appears in both as ``rlm_repl.py COMMAND``.
* Every name the REPL injects appears in both in backticks (`grep` or `grep(...)`); the names are read from a
  real session's namespace, so a helper added to the worker without docs fails here.
* SKILL.md's frontmatter is valid for Claude Code (parsed here: a small YAML subset, one `key: value` per line),
  and its body stays under 500 lines.
* The test command in README.md is the one .ci/run runs.
* Every ```python block of SKILL.md runs without error in a session, against the fake API.
* Every file a session folder holds is named in docs/reference.md and docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import ast
import os
import re

import pytest

import rlm_repl
from clitools import ok, rlm, run, start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("SKILL.md", "README.md")


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def cli_commands() -> list:
    parser = rlm_repl.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def undocumented_commands(text: str, commands) -> list:
    return [c for c in commands if not re.search(rf"rlm_repl\.py {re.escape(c)}\b", text)]


def undocumented_names(text: str, names) -> list:
    return [n for n in names if not re.search(rf"`{re.escape(n)}[`(]", text)]


def frontmatter(text: str) -> tuple:
    """(fields, body) of a markdown file that opens with `---` ... `---` holding `key: value` lines."""
    lines = text.split("\n")
    if lines[0] != "---" or "---" not in lines[1:]:
        raise ValueError("no frontmatter: the file must open with a line '---' and close it with another")
    end = lines.index("---", 1)
    fields = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(": ")
        if not sep or not re.fullmatch(r"[a-z][a-z-]*", key) or key in fields:
            raise ValueError(f"not a 'key: value' line (or a repeated key): {line!r}")
        value = value.strip()
        if value[:1] in "\"'":
            value = ast.literal_eval(value)
        elif value[:1] in "|>[{&*!%@`" or " #" in value or ": " in value:
            raise ValueError(f"{key}: a plain YAML value cannot start with {value[:1]!r} or hold ': ' or ' #'")
        fields[key] = value
    return fields, "\n".join(lines[end + 1:])


@pytest.fixture(scope="module")
def repl_names(tmp_path_factory):
    """The names a fresh session's namespace holds (its own, not the user's: there are none yet)."""
    data = tmp_path_factory.mktemp("docs") / "input.txt"
    data.write_text("hello\n")
    home = tmp_path_factory.mktemp("home")
    env = {"RLM_HOME": str(home)}
    start(str(data), "names", env=env)
    try:
        out = run("names", "print(sorted(k for k in globals() if not k.startswith('_')))", env=env)
    finally:
        ok("stop", "--session", "names", env=env)
    return ast.literal_eval(out["stdout"])


@pytest.fixture(scope="module")
def fake_api_module():
    from fake_api import FakeAPI
    with FakeAPI(reader=True) as api:
        yield api


def test_the_cli_has_the_commands_the_docs_promise():
    assert {"start", "exec", "wait", "final", "status", "list", "budget", "stop", "doctor"} <= set(cli_commands())


@pytest.mark.parametrize("doc", DOCS)
def test_every_cli_command_is_documented(doc):
    assert undocumented_commands(read(doc), cli_commands()) == []


def test_the_repl_holds_the_names_the_docs_promise(repl_names):
    assert {"context", "context_files", "llm_query", "llm_query_batch", "FINAL", "FINAL_VAR", "peek", "grep",
            "chunks", "SHOW_VARS", "budget"} <= set(repl_names)


@pytest.mark.parametrize("doc", DOCS)
def test_every_repl_name_is_documented(doc, repl_names):
    assert undocumented_names(read(doc), repl_names) == []


def test_the_drift_checks_catch_a_missing_command_or_name():
    text = "Run `rlm_repl.py start` then call `grep(...)` and read `context`."
    assert undocumented_commands(text, ["start", "trace"]) == ["trace"]
    assert undocumented_names(text, ["grep", "context", "peek"]) == ["peek"]
    assert undocumented_commands("rlm_repl.py starting", ["start"]) == ["start"]


def test_skill_frontmatter_is_valid():
    fields, body = frontmatter(read("SKILL.md"))
    assert fields["name"] == "rlm" and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", fields["name"])
    assert 0 < len(fields["description"]) < 1024
    assert "<" not in fields["description"] and ">" not in fields["description"]
    assert fields["allowed-tools"].strip()
    assert len(body.splitlines()) < 500


def test_the_frontmatter_parser_refuses_what_yaml_would_misread():
    with pytest.raises(ValueError):
        frontmatter("# no frontmatter\n")
    with pytest.raises(ValueError):
        frontmatter("---\ndescription: use it: when the input is big\n---\n")
    assert frontmatter('---\nname: rlm\ndescription: "a: b"\n---\nbody')[0] == {"name": "rlm", "description": "a: b"}


def test_readme_test_command_is_the_one_ci_runs():
    ci = [line.strip() for line in read(".ci/run").splitlines() if line.lstrip().startswith("python3 -m pytest")]
    assert ci == ["python3 -m pytest -q tests"]
    assert re.search(r"^python3 -m pytest -q tests$", read("README.md"), re.MULTILINE)


def test_skill_python_blocks_run_in_a_session(tmp_path, fake_api_module):
    """The worked code of SKILL.md runs as written on a small log and a small code tree."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("".join(
        f"2026-01-01T00:00:{i % 60:02}Z {'ERROR db timeout' if i % 50 == 0 else 'INFO ok'} request {i}\n"
        for i in range(3000)) + "Traceback (most recent call last):\nFATAL out of memory\n")
    (tmp_path / "logs" / "policy.md").write_text("Refunds within 30 days.\n")
    (tmp_path / "logs" / "tool.py").write_text("def f(x):\n    return eval(x)  # TODO\n")
    env = {"ANTHROPIC_BASE_URL": fake_api_module.base_url}
    start(str(tmp_path / "logs"), "blocks", env=env)
    blocks = re.findall(r"```python\n(.*?)```", read("SKILL.md"), re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        report = run("blocks", block, env=env)
        assert report["error"] is None, (block, report["error"])
        assert report["calls"]["failed"] == 0, (block, report["stdout"])
    final = rlm("final", "--session", "blocks", env=env)
    assert final.code == 0 and b"eval(x)" in final.stdout  # the per-file map found the planted eval


def test_every_file_of_a_session_folder_is_described_in_both_folder_tables(data):
    sdir = start(data, "files")["session_dir"]
    run("files", "x = 1\nprint('line\\n' * 20000)\nFINAL('done')")
    names = sorted(os.listdir(sdir))
    assert {"session.json", "summary.json", "final.json", "out", "checkpoint"} <= set(names)
    reference = read("docs/reference.md").split("## The session folder", 1)[1]
    architecture = read("docs/ARCHITECTURE.md").split("## Session folder", 1)[1].split("\n## ", 1)[0]
    for name in names:
        shown = name.replace("ledger.sqlite-wal", "ledger.sqlite").replace("ledger.sqlite-shm", "ledger.sqlite")
        assert f"`{shown}" in reference and f"`{shown}" in architecture, name
