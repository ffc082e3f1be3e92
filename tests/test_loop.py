"""The RLM loop, rlm_query and `rlm_repl.py run`, with scripted root replies from the fake API.

Root requests are told apart from sub-calls by their system prompt (``loop.SYSTEM_PROMPT``); a script maps
the question of a loop to its replies, one per iteration. Sub-calls are answered by the fake's reader.
"""
from __future__ import annotations

import json
import os
import sqlite3

import pytest

from clitools import ok, rlm, run
from rlmcore import loop, sessions
from rlmcore.errors import BudgetExceeded

ERRORS = 37
LINES = 1000
# Read at import, before the autouse fixture swaps in a dummy key and a dead base URL.
LIVE = ({"ANTHROPIC_API_KEY": os.environ.get("ANTHROPIC_API_KEY", ""),
         "ANTHROPIC_BASE_URL": os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"}
        if os.environ.get("RLM_LIVE") == "1" and os.environ.get("ANTHROPIC_API_KEY") else None)


@pytest.fixture
def api(api):
    api.configure(reader=True)
    return api


@pytest.fixture
def logfile(tmp_path):
    lines = [f"2026-01-01 12:00:{i % 60:02d} {'ERROR disk full' if i < ERRORS else 'INFO all good'} #{i}\n"
             for i in range(LINES)]
    path = tmp_path / "app.log"
    path.write_text("".join(lines))
    return path


def is_root(body) -> bool:
    system = body.get("system") or [{}]
    return isinstance(system, list) and system[0].get("text") == loop.SYSTEM_PROMPT


def question_of(body) -> str:
    first = body["messages"][0]["content"][0]["text"]
    return first.split("\n", 1)[0][len("Question: "):]


def last_user_text(body) -> str:
    return body["messages"][-1]["content"][-1]["text"]


def script(replies: dict):
    """A responder: a root request for question Q gets replies[Q][its iteration - 1] (the last one repeats).

    A reply may be a function of the request's last user message (the output the root is reading).
    """
    def responder(body):
        if not is_root(body):
            return None
        answers = replies[question_of(body)]
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        reply = answers[min(turn, len(answers) - 1)]
        return reply(last_user_text(body)) if callable(reply) else reply
    return responder


def repl(code: str) -> str:
    return f"Next step.\n```repl\n{code}\n```"


def root_requests(api) -> list:
    return [b for b in api.stats()["received"] if is_root(b)]


def calls(session: str) -> list:
    db = sqlite3.connect(os.path.join(os.environ["RLM_HOME"], "sessions", session, "ledger.sqlite"))
    db.row_factory = sqlite3.Row
    try:
        return [dict(r, batch_id=r["batch_id"] or "") for r in db.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        db.close()


def start(path, session="t", **kw):
    return sessions.start([str(path)], [], session, None, kw.pop("limits", {}), False, kw.pop("max_depth", None),
                          **kw)


COUNT_ERRORS = repl('answers = llm_query_batch([c + "\\nQuestion: How many lines contain \\"ERROR\\"?" '
                    'for c in chunks(10_000)])\n'
                    'total = sum(int(a) for a in answers)\nprint(len(answers), "chunks,", total, "errors")')


# -- the loop ------------------------------------------------------------------------

def test_a_run_over_several_iterations_ends_with_the_answer_its_code_computed(api, logfile):
    api.set_responder(script({"How many errors?": [
        repl("print(len(context)); print(peek(0, 120))"),
        COUNT_ERRORS,
        lambda seen: "The count is in `total`.\nFINAL_VAR(total)" if "errors" in seen else "FINAL(0)",
    ]}))
    start(logfile)
    out = loop.run_session("t", "How many errors?")
    assert out["answer"] == str(ERRORS)
    assert out["stopped"] == "final" and out["iterations"] == 3
    assert sessions.final_text("t") == str(ERRORS)
    first, second, third = root_requests(api)
    size = logfile.stat().st_size
    assert len(json.dumps(first)) < size / 4  # a description of the input, never the input itself
    assert f"{size:,} characters" in first["messages"][0]["content"][0]["text"]
    assert str(size) in last_user_text(second)  # the root reads what its code printed
    assert f"{ERRORS} errors" in last_user_text(third)
    assert out["calls"] == 3 + len([b for b in api.stats()["received"] if not is_root(b)])


def test_the_iteration_limit_asks_once_for_a_best_answer(api, logfile):
    api.set_responder(script({"Anything odd?": [
        lambda seen: "My best answer: nothing odd." if "used all 3 iterations" in seen else repl("print(peek(0, 50))"),
    ]}))
    start(logfile)
    out = loop.run_session("t", "Anything odd?", max_iterations=3)
    assert out["stopped"] == "iteration_limit" and out["iterations"] == 3
    assert out["answer"] == "My best answer: nothing odd."
    assert len(root_requests(api)) == 4
    assert sessions.final_text("t") == out["answer"]


def test_a_bad_code_block_is_shown_to_the_root_and_the_run_goes_on(api, logfile):
    api.set_responder(script({"How many lines?": [
        repl("n = len(context.splitlines(\nprint(n)"),
        lambda seen: (repl("n = len(context.splitlines())\nprint(n)\nFINAL(n)") if "SyntaxError" in seen
                      else "no syntax error was shown"),
    ]}))
    start(logfile)
    out = loop.run_session("t", "How many lines?")
    assert out["answer"] == str(LINES) and out["iterations"] == 2


def test_a_reply_without_code_gets_a_reminder_and_the_run_goes_on(api, logfile):
    api.set_responder(script({"First line?": [
        "Let me think about this.\n```python\nprint(peek(0, 20))\n```",
        lambda seen: repl("FINAL(context.splitlines()[0])") if "Only ```repl blocks run" in seen else "FINAL(no)",
    ]}))
    start(logfile)
    out = loop.run_session("t", "First line?")
    assert out["answer"].startswith("2026-01-01 12:00:00 ERROR") and out["iterations"] == 2


def test_a_final_answer_before_looking_at_the_input_is_sent_back_once(api, logfile):
    api.set_responder(script({"How many errors?": [
        "Surely there are none.\nFINAL(0)",
        lambda seen: repl('FINAL(len(grep("ERROR", max_matches=None)))') if "not accepted" in seen else "FINAL(0)",
    ]}))
    start(logfile)
    out = loop.run_session("t", "How many errors?")
    assert out["answer"] == str(ERRORS) and out["iterations"] == 2


def test_a_final_answer_given_twice_without_looking_is_accepted(api, logfile):
    api.set_responder(script({"Say hi": ['FINAL("hi")']}))
    start(logfile)
    out = loop.run_session("t", "Say hi")
    assert out["answer"] == "hi" and out["iterations"] == 2


def test_root_requests_move_their_cache_breakpoint_and_read_the_cache(api, logfile):
    api.set_responder(script({"Count": [repl("print(1)"), repl("print(2)"), repl("print(3)"),
                                        repl("FINAL(len(context))")]}))
    start(logfile)
    loop.run_session("t", "Count")
    requests = root_requests(api)
    assert len(requests) == 4
    for body in requests:
        marks = [b for b in body["system"] if "cache_control" in b]
        marks += [b for m in body["messages"] for b in m["content"] if "cache_control" in b]
        assert 2 <= len(marks) <= 4
        assert "cache_control" in body["messages"][-1]["content"][-1]
    roots = [c for c in calls("t") if c["batch_id"].startswith("root-")]
    assert [c["item"] for c in roots] == [1, 2, 3, 4]
    assert all(c["cache_read_input_tokens"] > 0 for c in roots[1:])


# -- rlm_query -------------------------------------------------------------------------

def test_rlm_query_recurses_to_depth_two_and_falls_back_to_llm_query_at_the_limit(api, logfile):
    api.set_responder(script({
        "Summarise the errors": [repl("print(len(context))"),
                                 repl('FINAL("top:" + rlm_query("Count the errors", context[:20_000]))')],
        "Count the errors": [repl('r = rlm_query("Count ERROR lines", context)\nprint(r)'),
                             repl('FINAL("child:" + r)')],
        "Count ERROR lines": [repl('FINAL("grand:" + rlm_query(\'How many lines contain "ERROR"?\', context))')],
    }))
    start(logfile, max_depth=2)
    out = loop.run_session("t", "Summarise the errors")
    assert out["answer"] == f"top:child:grand:{ERRORS}"
    firsts = {question_of(b): b["messages"][0]["content"][0]["text"] for b in root_requests(api)}
    assert "depth 1" in firsts["Count the errors"] and "depth 2" in firsts["Count ERROR lines"]
    assert "plain llm_query" in firsts["Count ERROR lines"]
    # The rlm_query at depth 2 was one sub-call under the grandchild's root call, not a fourth loop.
    rows = calls("t")
    loops = []  # batch ids of the three loops, in the order they started: top, child, grandchild
    for c in rows:
        if c["batch_id"].startswith("root-") and c["batch_id"] not in loops:
            loops.append(c["batch_id"])
    assert len(loops) == 3
    grand_root = [c for c in rows if c["batch_id"] == loops[2]]
    assert len(grand_root) == 1
    fallback = [c for c in rows if c["parent_call_id"] == grand_root[0]["id"]]
    assert len(fallback) == 1 and fallback[0]["model"] == "claude-haiku-5-5"
    assert all(c["batch_id"].startswith("root-") for c in rows if c is not fallback[0])


def test_rlm_query_at_depth_zero_limit_is_one_plain_llm_query(api, logfile):
    start(logfile, max_depth=0)
    out = run("t", "print(rlm_query('How many lines contain \"ERROR\"?'))")
    assert out["stdout"].strip() == str(ERRORS)
    assert out["calls"]["count"] == 1 and root_requests(api) == []


def test_rlm_query_from_an_exec_runs_a_child_on_the_text_it_is_given(api, logfile):
    api.set_responder(script({"What is the word?": [repl("print(context)"),
                                                   lambda seen: repl(f"FINAL({seen.split()[0]!r})")]}))
    start(logfile)
    out = run("t", "answer = rlm_query('What is the word?', 'pelican and more')\nprint(answer)")
    assert out["error"] is None and out["stdout"].strip() == "pelican"
    assert out["calls"]["count"] == 2
    first = root_requests(api)[0]["messages"][0]["content"][0]["text"]
    assert "16 characters" in first and "app.log" not in first


def test_child_calls_hang_under_the_root_call_that_made_them(api, logfile):
    api.set_responder(script({
        "Top": [repl('a = llm_query("Question: How many lines contain \\"ERROR\\"?", prefix=context)\n'
                     'b = rlm_query("Child", context[:500])\nprint(a, b)'), 'FINAL("done")'],
        "Child": [repl('x = llm_query_batch(["one?", "two?"], prefix=context)\nFINAL(len(x))')],
    }))
    start(logfile)
    loop.run_session("t", "Top")
    rows = calls("t")
    by_id = {c["id"]: c for c in rows}
    top = [c for c in rows if c["parent_call_id"] is None]
    assert [c["item"] for c in top] == [1, 2] and top[0]["batch_id"] == top[1]["batch_id"]
    under_top = [c for c in rows if c["parent_call_id"] == top[0]["id"]]
    child_root = [c for c in under_top if c["batch_id"].startswith("root-")]
    assert len(under_top) == 2 and len(child_root) == 1  # the llm_query and the child's root call
    child_calls = [c for c in rows if c["parent_call_id"] == child_root[0]["id"]]
    assert len(child_calls) == 2 and all(c["model"] == "claude-haiku-5-5" for c in child_calls)
    assert all(by_id[c["parent_call_id"]]["batch_id"].startswith("root-") for c in rows if c["parent_call_id"])


def test_children_draw_from_the_session_budget_and_stop_at_its_limit(api, logfile):
    api.set_responder(script({
        "Top": [repl('print(rlm_query("Child", context[:300]))')],
        "Child": [repl('print(llm_query_batch(["a?", "b?", "c?"], concurrency=1))'), repl("print(2)")],
    }))
    start(logfile, limits={"max_calls": 3})
    with pytest.raises(BudgetExceeded):
        loop.run_session("t", "Top")
    rows = calls("t")
    sent = [c for c in rows if c["status"] in ("ok", "error")]
    assert len(sent) == 3  # top root, child root, one sub-call: the whole session's limit
    refused = [c for c in rows if c["status"] == "budget"]
    assert len(refused) == 4  # two batch items, the child's second root call, the top's second root call
    db = sqlite3.connect(os.path.join(os.environ["RLM_HOME"], "sessions", "t", "ledger.sqlite"))
    assert db.execute("SELECT outcome, error_type FROM execs").fetchall() == [("error", "BudgetExceeded")]
    db.close()


# -- the CLI ---------------------------------------------------------------------------

def test_run_through_the_cli_prints_the_answer_and_keeps_the_session(api, logfile):
    api.set_responder(script({"How many errors?": [repl("print(len(context))"), COUNT_ERRORS,
                                                   "FINAL_VAR(total)"]}))
    result = rlm("run", "--input", logfile, "--query", "How many errors?", "--session", "r1")
    assert result.code == 0, result
    assert result.stdout.decode() == str(ERRORS)
    status = ok("status", "--session", "r1")
    assert status["final"] is True and status["worker"]["alive"] is False
    assert status["totals"]["count"] == len(api.stats()["received"])
    assert rlm("final", "--session", "r1").stdout.decode() == str(ERRORS)

    out = ok("run", "--input", logfile, "--query", "How many errors?", "--session", "r1", "--force",
             "--max-iterations", "5", "--json")
    assert out["answer"] == str(ERRORS) and out["iterations"] == 3 and out["session"] == "r1"
    assert out["calls"] >= 4 and out["usd"] > 0


def test_run_through_the_cli_reports_a_budget_stop_as_an_error(api, logfile):
    api.set_responder(script({"Q": [repl("print(1)")]}))
    result = rlm("run", "--input", logfile, "--query", "Q", "--session", "r2", "--max-calls", "1", "--json")
    assert result.code == 1 and result.json["error"]["type"] == "budget_exceeded"
    assert ok("status", "--session", "r2")["totals"]["count"] == 1


@pytest.mark.skipif(LIVE is None, reason="live check: set ANTHROPIC_API_KEY and RLM_LIVE=1")
def test_live_run_finds_a_needle_with_the_real_api(tmp_path):
    lines = [f"Filler line {i}: the river kept flowing past the quiet town." for i in range(3000)]
    lines.insert(1789, "The special magic number for amber-falcon is: 4817263.")
    path = tmp_path / "haystack.txt"
    path.write_text("\n".join(lines) + "\n")
    out = ok("run", "--input", path, "--query", "What is the special magic number for amber-falcon?",
             "--session", "live", "--max-usd", "0.50", "--max-iterations", "8", "--json", env=LIVE, timeout=600)
    assert "4817263" in out["answer"] and 0 < out["usd"] <= 0.50
