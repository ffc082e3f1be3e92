"""``trace``: where a session's calls, tokens, money and minutes went.

The ledger already holds everything (see ``ledger.py``): one row per exec with
its code and outcome, one row per sub-call with usage, cost, latency, attempts
and error. This module only reads it, with a handful of SQL queries in one
snapshot, so 100,000 calls summarise in a fraction of a second:

* sums per exec and status come from ``Ledger.exec_summaries`` (a covering
  index, the same figures the exec report shows under ``calls``);
* latency median, 95th percentile and maximum come from one query that has
  SQLite sort the latencies by exec (ranks are then picked in Python: twice as
  fast as ``ROW_NUMBER() OVER (PARTITION BY ...)``, which sorts as well and then
  numbers every row); only the slowest calls are fetched whole;
* tokens and cost per model, and failures by cause, are grouped in SQL; only a
  few failed calls per exec are fetched in full.

100,000 calls: about 0.3 s in-process, 0.4 s for the command
(``bench/bench_trace.py``).

Definitions (repeated in every answer under ``definitions``):

* ``count``: sub-calls sent (status ok or error); ``requests`` = count +
  retries, the HTTP requests that reached the API.
* ``failed``: calls that gave no answer (error after retries, or refused by a
  budget limit). ``reused``: answered from the ledger at no cost.
* cache hit ratio = cache_read_tokens / (cache_read_tokens +
  cache_write_tokens): the share of cacheable input tokens that were read from
  the cache rather than written to it; null when nothing was cacheable.
* latency: seconds from sending a call to settling it, retries and their waits
  included, over sent calls; median and p95 by nearest rank.

Output. ``trace --session ID`` prints one JSON object sized for a model's
context: totals, the last ``EXECS_SHOWN`` execs (first line of code each), the
slowest calls, failure causes and a few failed calls. ``--json`` prints the
full machine detail instead: every exec with its whole code, its own slowest
and failed calls, failure causes and batches (with a sample answer each).
``--html PATH`` also writes the self-contained report (``report.py``) and
adds its path under ``html`` to whichever answer is printed. The answer is
read from the ledger alone, so it works while an exec runs (that exec shows as
``running``) and after the worker has gone.
"""
from __future__ import annotations

import itertools
import json
import operator
import os
import time

from . import paths
from .errors import InputError
from .ledger import SUMMARY_KEYS, Ledger, answer_text

EXECS_SHOWN = 20  # execs in the default answer (the most recent)
SLOWEST = 5  # slowest calls listed, in total and (full detail) per exec
FAILED_SHOWN = 5  # failed calls listed in the default answer
FAILED_PER_EXEC = 50  # failed calls listed per exec in full detail
CAUSES_SHOWN = 10
ERROR_CHARS = 300
PREVIEW_CHARS = 100
ANSWER_CHARS = 200

DEFINITIONS = {
    "count": "sub-calls sent to the API (status ok or error)",
    "requests": "HTTP requests sent: count + retries",
    "failed": "calls that gave no answer: an error after retries, or refused by a budget limit",
    "reused": "calls answered from the ledger at no cost (an identical request was already paid for)",
    "cache_hit_ratio": "cache_read_tokens / (cache_read_tokens + cache_write_tokens): the share of cacheable "
                       "input tokens read from the cache instead of written to it; null when nothing was cacheable",
    "latency": "seconds from sending a call to settling it, retries and their waits included, over sent calls; "
               "median and p95 by nearest rank",
    "busy_s": "sum of the latencies of sent calls; busy_s / seconds is the average number of calls in flight",
}

CALL_COLUMNS = ("id", "exec_id", "batch_id", "item", "model", "status", "attempts", "latency_s", "input_tokens",
                "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "usd", "error_type",
                "error", "stop_reason", "request_id")
_CALL_SELECT = ", ".join("c." + c for c in CALL_COLUMNS)
_SENT = "status IN ('ok', 'error')"
_FAILED = "status IN ('error', 'budget')"

# Latencies in order, per exec: SQLite sorts them faster than it ranks them with a window function, and
# picking the median, p95 and top ranks out of the sorted stream is a slice in Python.
_LATENCIES = f"""
    SELECT exec_id, latency_s, id FROM calls WHERE latency_s IS NOT NULL AND {_SENT}
    ORDER BY exec_id, latency_s, id
"""
_CALLS_BY_ID = f"SELECT {_CALL_SELECT} FROM calls c WHERE c.id IN ({{marks}})"
_TIMES = """
    SELECT exec_id, MIN(started), MAX(started + COALESCE(latency_s, 0)), TOTAL(latency_s)
    FROM calls GROUP BY exec_id
"""
_BY_MODEL = f"""
    SELECT model, COUNT(*), TOTAL(input_tokens), TOTAL(output_tokens), TOTAL(cache_read_input_tokens),
           TOTAL(cache_creation_input_tokens), TOTAL(usd)
    FROM calls WHERE {_SENT} GROUP BY model ORDER BY TOTAL(usd) DESC
"""
_CAUSES = f"""
    SELECT exec_id, status, error_type, error, COUNT(*) FROM calls WHERE {_FAILED}
    GROUP BY exec_id, status, error_type, error
"""
_FAILED_CALLS = f"""
    WITH f AS (SELECT id, ROW_NUMBER() OVER (PARTITION BY {{part}} ORDER BY id) AS rn FROM calls WHERE {_FAILED})
    SELECT {_CALL_SELECT} FROM f JOIN calls c ON c.id = f.id WHERE f.rn <= ? ORDER BY c.id
"""
_BATCHES = """
    SELECT exec_id, batch_id, COUNT(*), SUM(status IN ('error', 'budget')), TOTAL(MAX(attempts - 1, 0)),
           SUM(status = 'reused'), MIN(started), MAX(started + COALESCE(latency_s, 0)), TOTAL(usd),
           MIN(CASE WHEN status IN ('ok', 'reused') THEN id END), MIN(id)
    FROM calls GROUP BY exec_id, batch_id ORDER BY MIN(id)
"""
_ANSWERS = """
    SELECT c.id, r.response FROM calls c JOIN responses r ON r.request_hash = c.request_hash
    WHERE c.id IN ({marks})
"""
_EXECS = """
    SELECT id, {code}, length(code),
           length(code) - length(replace(code, char(10), '')) + (substr(code, -1) != char(10)),
           started, ended, outcome, stdout_chars, error_type
    FROM execs ORDER BY id
"""
_WATERFALL = """
    SELECT id, exec_id, started, latency_s, status, attempts, item, batch_id,
           input_tokens + output_tokens + cache_read_input_tokens + cache_creation_input_tokens, usd, error_type
    FROM calls ORDER BY started, id
"""


# ---- the command ------------------------------------------------------------

def trace(session_id: str, *, full: bool = False, html: str | None = None) -> dict:
    """The ``trace`` command: the summary (full detail with ``full``), and the report written to ``html``."""
    sdir = paths.session_dir(session_id)
    out_path = _html_target(html) if html else None
    ledger = Ledger(paths.ledger_path(sdir))
    try:
        data = collect(ledger, full=full or bool(html))
        calls = ledger.select((_WATERFALL, ()))[0] if html else None
    finally:
        ledger.close()
    data = dict({"session": session_id}, **data)
    if html:
        from .report import render
        meta = paths.read_json_or(os.path.join(sdir, "session.json"), {})
        meta["summary"] = paths.read_json_or(os.path.join(sdir, "summary.json"), {})
        try:
            paths.atomic_write(out_path, render(data, calls, meta).encode("utf-8"))
        except OSError as exc:
            raise InputError(f"cannot write --html {out_path!r}: {exc.strerror or exc}",
                             "choose a folder you can write to, or free some disk space") from None
    out = data if full else brief(data)
    if html:
        out["html"] = out_path
    return out


def _html_target(path: str) -> str:
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise InputError(f"--html {path!r} is a folder", "give a file name, e.g. --html trace.html")
    if not os.path.isdir(os.path.dirname(path)):
        raise InputError(f"cannot write --html {path!r}: the folder {os.path.dirname(path)!r} does not exist",
                         "create the folder first, or choose another path")
    return path


# ---- collecting -------------------------------------------------------------

def collect(ledger, *, full: bool) -> dict:
    """Every figure of the trace, in full detail; ``brief`` trims it for the default answer."""
    sums = ledger.exec_summaries()
    queries = [
        (_EXECS.format(code="code" if full else "substr(code, 1, 400)"), ()),
        (_LATENCIES, ()),
        (f"SELECT id FROM calls WHERE latency_s IS NOT NULL AND {_SENT} ORDER BY latency_s DESC, id DESC LIMIT ?",
         (SLOWEST,)),
        (_TIMES, ()),
        (_CAUSES, ()),
        (_FAILED_CALLS.format(part="exec_id" if full else "NULL"), (FAILED_PER_EXEC if full else FAILED_SHOWN,)),
        ("SELECT COUNT(*) FROM calls WHERE " + _FAILED, ()),
        (_BY_MODEL, ()),
    ]
    if full:
        queries.append((_BATCHES, ()))
    rows = ledger.select(*queries)
    execs_rows, latencies, top, times, causes, failed, ((failed_total,),), models = rows[:8]
    now = time.time()
    latency, slowest, total_latency, total_slowest = _latency(ledger, latencies, [r[0] for r in top])
    times = {r[0]: r[1:] for r in times}

    execs = [_exec_row(r, sums.get(r[0]), latency.get(r[0]), times.get(r[0]), now) for r in execs_rows]
    known = {r[0] for r in execs_rows}
    for exec_id in sorted((k for k in sums if k not in known), key=lambda k: (k is None, k or 0)):
        # calls made outside any exec (library use), or under an exec the history lacks
        execs.append(_exec_row((exec_id, "", 0, 0, None, None, None, 0, None), sums[exec_id],
                               latency.get(exec_id), times.get(exec_id), now))
        execs[-1]["note"] = ("calls made outside any exec (library use)" if exec_id is None
                             else "calls of an exec missing from the exec history")
    by_exec = {e["exec"]: e for e in execs}
    failed = [_call(r) for r in failed]
    if full:
        for exec_id, calls in slowest.items():
            if exec_id in by_exec:
                by_exec[exec_id]["slowest"] = calls
        for call in failed:
            by_exec[call["exec"]].setdefault("failed_calls", []).append(call)
        for exec_id, group in _causes(causes, per_exec=True).items():
            by_exec[exec_id]["failures"] = group
        _attach_batches(ledger, by_exec, rows[8])

    totals = _figures(_add_up(sums.values()), total_latency, _busy(times.values()))
    totals["by_model"] = {m[0]: dict(zip(("count", "input_tokens", "output_tokens", "cache_read_tokens",
                                             "cache_write_tokens"), map(int, m[1:6])), usd=round(m[6], 9))
                          for m in models}
    totals["execs"] = len(execs_rows)
    totals["seconds"] = _span(execs_rows, times.values(), now)
    return {
        "definitions": DEFINITIONS,
        "totals": totals,
        "execs": execs,
        "slowest": total_slowest,
        "failures": _causes(causes, per_exec=False)[None],
        "failed_calls": failed if not full else sorted(failed, key=lambda c: c["id"])[:FAILED_SHOWN],
        "failed_calls_total": failed_total,
    }


def brief(data: dict) -> dict:
    """The default answer: the most recent execs only, each with the first line of its code."""
    execs = [e for e in data["execs"] if e["exec"] is not None][-EXECS_SHOWN:]
    execs += [e for e in data["execs"] if e["exec"] is None]
    shown = []
    for e in execs:
        row = {k: v for k, v in e.items() if k not in ("code", "slowest", "failed_calls", "failures", "batches")}
        row["code"] = _first_line(e["code"], e["code_lines"])
        shown.append(row)
    out = {k: v for k, v in data.items() if k != "execs"}
    out["failures"] = out["failures"][:CAUSES_SHOWN]
    out["slowest"] = [_compact(c) for c in out["slowest"]]
    out["failed_calls"] = [_compact(c) for c in out["failed_calls"][:FAILED_SHOWN]]
    out["execs"] = shown
    out["execs_shown"], out["execs_total"] = len(shown), len(data["execs"])
    if len(shown) < len(data["execs"]):
        out["hint"] = "the most recent execs are shown; --json gives every exec with its whole code"
    return out


# ---- pieces -------------------------------------------------------------------

def _latency(ledger, rows, top_ids):
    """Latency figures and slowest calls from (exec, latency, id) rows sorted by exec then latency.

    Returns ({exec: (median, p95, max)}, {exec: slowest calls}, total (median, p95, max), total slowest).
    """
    figures, slowest_ids = {}, {}
    for exec_id, group in itertools.groupby(rows, key=operator.itemgetter(0)):
        group = list(group)
        figures[exec_id] = _ranks([r[1] for r in group])
        slowest_ids[exec_id] = [r[2] for r in group[-SLOWEST:][::-1]]
    everything = sorted([r[1] for r in rows])  # runs already sorted per exec: a cheap merge
    calls = _calls_by_id(ledger, [i for ids in slowest_ids.values() for i in ids] + top_ids)
    slowest = {k: [calls[i] for i in ids] for k, ids in slowest_ids.items()}
    return figures, slowest, _ranks(everything), [calls[i] for i in top_ids]


def _ranks(ordered: list) -> tuple:
    """(median, p95, max) of sorted values, by nearest rank; Nones when empty."""
    n = len(ordered)
    if not n:
        return None, None, None
    return ordered[(n + 1) // 2 - 1], ordered[(95 * n + 99) // 100 - 1], ordered[-1]


def _calls_by_id(ledger, ids: list) -> dict:
    ids = sorted(set(ids))
    step = 500  # old SQLite allows 999 parameters per statement
    queries = [(_CALLS_BY_ID.format(marks=",".join("?" * len(ids[i:i + step]))), tuple(ids[i:i + step]))
               for i in range(0, len(ids), step)]
    return {row[0]: _call(row) for rows in ledger.select(*queries) for row in rows} if queries else {}


def _figures(summary: dict, latency, busy) -> dict:
    out = dict(summary)
    out["requests"] = out["count"] + out["retries"]
    cacheable = out["cache_read_tokens"] + out["cache_write_tokens"]
    out["cache_hit_ratio"] = round(out["cache_read_tokens"] / cacheable, 4) if cacheable else None
    median, p95, top = latency or (None, None, None)
    out.update(latency_median_s=_round(median), latency_p95_s=_round(p95), latency_max_s=_round(top),
               busy_s=_round(busy or 0.0))
    return out


def _add_up(summaries) -> dict:
    total = None
    for s in summaries:
        total = dict(s) if total is None else {k: total[k] + s[k] for k in s}
    if total is None:
        total = dict.fromkeys(SUMMARY_KEYS, 0)
        total["usd"] = total["dry_run_usd"] = 0.0
    total["usd"], total["dry_run_usd"] = round(total["usd"], 9), round(total["dry_run_usd"], 9)
    return total


def _exec_row(row, summary, latency, times, now) -> dict:
    exec_id, code, code_chars, code_lines, started, ended, outcome, stdout_chars, error_type = row
    summary = summary or _add_up([])
    first, last, busy = times or (None, None, 0.0)
    if started is None:  # calls outside execs: their own span
        started, ended = first, last
    end = ended if ended is not None else now
    out = {"exec": exec_id, "outcome": outcome, "error_type": error_type, "started": started, "ended": ended,
           "seconds": _round(end - started) if started is not None else None,
           "stdout_chars": stdout_chars, "code": code, "code_chars": code_chars, "code_lines": code_lines}
    out["calls"] = _figures(summary, latency, busy)
    return out


def _span(execs_rows, times, now) -> float | None:
    """Seconds from the first exec (or call) to the end of the last."""
    starts = [r[4] for r in execs_rows] + [t[0] for t in times if t[0] is not None]
    ends = [r[5] if r[5] is not None else now for r in execs_rows] + [t[1] for t in times if t[1] is not None]
    return _round(max(ends) - min(starts)) if starts and ends else None


def _busy(times) -> float:
    return sum(t[2] for t in times)


def _causes(rows, *, per_exec: bool) -> dict:
    """{exec or None: [{error_type, status, count, message, execs}]}, most frequent first."""
    groups = {}
    for exec_id, status, error_type, error, count in rows:
        key = (exec_id if per_exec else None, status, error_type, error)
        g = groups.setdefault(key, {"error_type": error_type, "status": status, "count": 0,
                                    "message": _clip(error, ERROR_CHARS), "execs": []})
        g["count"] += count
        g["execs"].append(exec_id)
    out = {} if per_exec else {None: []}
    for (exec_id, *_), g in groups.items():
        if per_exec:
            del g["execs"]
        out.setdefault(exec_id, []).append(g)
    for lst in out.values():
        lst.sort(key=lambda g: (-g["count"], str(g["error_type"])))
    return out


def _attach_batches(ledger, by_exec: dict, rows) -> None:
    answers = _answers(ledger, [r[9] for r in rows if r[9] is not None])
    for (exec_id, batch_id, count, failed, retries, reused, first, last, usd, answered, _) in rows:
        batch = {"batch": batch_id, "calls": count, "failed": failed, "retries": int(retries), "reused": reused,
                 "started": first, "seconds": _round(last - first) if first is not None else None,
                 "usd": round(usd, 9), "sample_answer": answers.get(answered)}
        if exec_id in by_exec:
            by_exec[exec_id].setdefault("batches", []).append(batch)


def _answers(ledger, call_ids: list) -> dict:
    """{call id: the first ANSWER_CHARS characters of its answer}."""
    if not call_ids:
        return {}
    out, step = {}, 500  # SQLite allows 999 parameters per statement in old versions
    chunks = [call_ids[i:i + step] for i in range(0, len(call_ids), step)]
    queries = [(_ANSWERS.format(marks=",".join("?" * len(ids))), tuple(ids)) for ids in chunks]
    for call_id, blob in (row for rows in ledger.select(*queries) for row in rows):
        try:
            out[call_id] = _clip(answer_text(json.loads(blob)), ANSWER_CHARS)
        except (ValueError, AttributeError):
            continue
    return out


def _call(row) -> dict:
    c = dict(zip(CALL_COLUMNS, row))
    return {"id": c["id"], "exec": c["exec_id"], "batch": c["batch_id"], "item": c["item"], "model": c["model"],
            "status": c["status"], "attempts": c["attempts"], "latency_s": _round(c["latency_s"]),
            "input_tokens": c["input_tokens"], "output_tokens": c["output_tokens"],
            "cache_read_tokens": c["cache_read_input_tokens"], "cache_write_tokens": c["cache_creation_input_tokens"],
            "usd": round(c["usd"], 9), "error_type": c["error_type"], "error": _clip(c["error"], ERROR_CHARS),
            "stop_reason": c["stop_reason"], "request_id": c["request_id"]}


def _compact(call: dict) -> dict:
    """A call without its empty fields, for the default answer."""
    return {k: v for k, v in call.items() if v is not None and (v != 0 or k in ("item", "usd"))}


def _first_line(code: str, lines: int) -> str:
    """The first non-empty line of the code, and how many lines follow."""
    head = (code or "").splitlines()
    for i, line in enumerate(head):
        if line.strip():
            rest = (lines or 0) - i - 1
            return _clip(line.strip(), PREVIEW_CHARS) + (f"  [+{rest} lines]" if rest > 0 else "")
    return ""


def _clip(text, limit: int):
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _round(value):
    return None if value is None else round(value, 3)
