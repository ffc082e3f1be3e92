"""The HTML report of ``trace --html``: one self-contained file to open in a browser.

Everything is inline (CSS, a small script, no fonts, images or requests), so
the file can be mailed, archived or opened offline. The figures are written
into the page as text by Python (they read the same without JavaScript); the
script only draws the waterfall.

The waterfall is one ``<canvas>``, because a session may hold 100,000 calls
and as many DOM nodes would make the page crawl. Its data is embedded as
column arrays (start, duration, kind, ...). Calls are packed into lanes (the
first lane free at a call's start), so the height of the picture is the
number of calls in flight: concurrency, stalls (empty stretches) and retry
storms (amber and red bars) show at a glance. The time axis keeps every exec
and call at scale but squeezes the idle gaps between them (when the model was
thinking) into narrow hatched breaks. Clicking an exec bar, or choosing it in
the list, zooms to that exec; hovering a bar names the call.
"""
from __future__ import annotations

import html
import json
import re
import time

KINDS = ("ok", "retried", "error", "reused", "budget", "dry_run")  # indexes used by the script
KIND_OF_STATUS = {"ok": 0, "error": 2, "reused": 3, "budget": 4, "dry_run": 5}
CODE_CHARS = 20_000  # per exec in the page
FAILED_IN_PAGE = 200


def render(data: dict, calls: list, meta: dict) -> str:
    """The page for ``data`` (``trace.collect`` in full detail) and the waterfall ``calls`` rows."""
    t = data["totals"]
    title = f"rlm trace · {data['session']}"
    body = "\n".join([
        _header(data, meta),
        _cards(t),
        _waterfall(data),
        _execs(data),
        _failures(data),
        _slowest(data),
        _definitions(data),
    ])
    payload = json.dumps(_chart_data(data, calls), separators=(",", ":")).replace("</", "<\\/")
    parts = {"TITLE": _e(title), "CSS": CSS, "BODY": body, "DATA": payload, "JS": JS}
    # One pass: an exec's code that contains "%JS%" must stay text, not receive the script.
    return re.sub(r"%(TITLE|CSS|BODY|DATA|JS)%", lambda m: parts[m.group(1)], PAGE)


# ---- sections -----------------------------------------------------------------

def _header(data: dict, meta: dict) -> str:
    info = meta.get("summary") or {}
    bits = [f"model {_e(meta.get('model') or '?')}"]
    if meta.get("created"):
        bits.append("created " + _clock(meta["created"], date=True))
    if info:
        bits.append(f"{info.get('files', 0):,} file{'s' if info.get('files') != 1 else ''}, "
                    f"{_bytes(info.get('bytes', 0))}, ~{info.get('est_tokens', 0):,} tokens of input")
    bits.append("report written " + _clock(time.time(), date=True))
    models = data["totals"].get("by_model") or {}
    spend = ""
    if len(models) > 1:  # e.g. the root model of a run and the sub-call model
        spend = '<p class="sub">by model: ' + " · ".join(
            f"{_e(m)} {v['count']:,} calls {_usd(v['usd'])}" for m, v in models.items()) + "</p>"
    return (f'<header><h1>rlm trace <span class="sid">{_e(data["session"])}</span></h1>'
            f'<p class="sub">{" · ".join(bits)}</p>{spend}</header>')


def _cards(t: dict) -> str:
    tokens = t["input_tokens"] + t["output_tokens"] + t["cache_read_tokens"] + t["cache_write_tokens"]
    ratio = "–" if t["cache_hit_ratio"] is None else f"{100 * t['cache_hit_ratio']:.1f}%"
    cards = [
        ("Cost", _usd(t["usd"]), f"dry run estimate {_usd(t['dry_run_usd'])}" if t["dry_run"] else "USD, billed calls",
         "usd"),
        ("Calls sent", f"{t['count']:,}", f"{t['requests']:,} requests · {t['reused']:,} reused", "calls"),
        ("Failed", f"{t['failed']:,}", f"{t['retries']:,} retries", "failed" if t["failed"] else "failed zero"),
        ("Tokens", f"{tokens:,}", f"in {t['input_tokens']:,} · out {t['output_tokens']:,}", "tokens"),
        ("Cache hit ratio", ratio, f"read {t['cache_read_tokens']:,} · write {t['cache_write_tokens']:,}", "cache"),
        ("Latency p50 / p95", f"{_secs(t['latency_median_s'])} / {_secs(t['latency_p95_s'])}",
         f"max {_secs(t['latency_max_s'])}", "latency"),
        ("Execs", f"{t['execs']:,}", f"over {_secs(t['seconds'])}", "execs"),
    ]
    items = "".join(f'<div class="card {" ".join(key.split()[1:])}" id="total-{key.split()[0]}">'
                    f'<div class="label">{_e(label)}</div>'
                    f'<div class="value">{_e(value)}</div><div class="note">{_e(note)}</div></div>'
                    for label, value, note, key in cards)
    return f'<section class="cards">{items}</section>'


def _waterfall(data: dict) -> str:
    options = "".join(f'<option value="{e["exec"]}">exec {e["exec"]} · {e["calls"]["count"] + e["calls"]["reused"]:,} '
                      f'calls · {_e(_first(e["code"], 50))}</option>'
                      for e in data["execs"] if e["exec"] is not None)
    legend = "".join(f'<span><i class="k{i}"></i>{name.replace("_", " ")}</span>' for i, name in enumerate(KINDS))
    return f"""<section id="timeline"><h2>Timeline</h2>
<div class="wf-bar"><label>Show <select id="wf-exec"><option value="">all execs</option>{options}</select></label>
<span class="legend">{legend}</span></div>
<div id="wf-box"><canvas id="wf"></canvas><div id="wf-tip" hidden></div></div>
<p class="caption" id="wf-caption">The timeline needs JavaScript.</p></section>"""


def _execs(data: dict) -> str:
    rows = [e for e in data["execs"]]
    top_tokens = max([_tokens(e["calls"]) for e in rows] + [1])
    top_usd = max([e["calls"]["usd"] for e in rows] + [1e-12])
    head = ('<div class="row head"><span>#</span><span>outcome</span><span>started</span><span>took</span>'
            '<span class="n">sent</span><span class="n">reused</span><span class="n">failed</span>'
            '<span class="n">retries</span><span>tokens</span><span>cost</span>'
            '<span class="n">cache hit</span><span class="n">p50 / p95</span><span>code</span></div>')
    out = [head] + [_exec_row(e, top_tokens, top_usd) for e in rows]
    key = ('<p class="keyline"><i class="t-in"></i>input <i class="t-cw"></i>cache write '
           '<i class="t-cr"></i>cache read <i class="t-out"></i>output · click a row for its code, batches '
           'and errors, its number to see it on the timeline</p>')
    return f'<section><h2>Execs</h2>{key}<div class="execs">{"".join(out)}</div></section>'


def _exec_row(e: dict, top_tokens: int, top_usd: float) -> str:
    c = e["calls"]
    label = "–" if e["exec"] is None else str(e["exec"])
    outcome = _outcome(e)
    parts = [("input_tokens", "t-in"), ("cache_write_tokens", "t-cw"), ("cache_read_tokens", "t-cr"),
             ("output_tokens", "t-out")]
    bar = "".join(f'<i class="{cls}" style="width:{100 * c[k] / top_tokens:.2f}%"></i>' for k, cls in parts if c[k])
    tip = " · ".join(f"{k.replace('_', ' ')} {c[k]:,}" for k, _ in parts)
    ratio = "–" if c["cache_hit_ratio"] is None else f"{100 * c['cache_hit_ratio']:.0f}%"
    zoom = label if e["exec"] is None else f'<a href="#exec-{label}" title="show it on the timeline">{label}</a>'
    summary = (
        f'<summary class="row"><span>{zoom}</span><span><b class="o-{_e(outcome)}">{_e(outcome)}</b></span>'
        f'<span>{_clock(e["started"])}</span><span>{_secs(e["seconds"])}</span>'
        f'<span class="n">{c["count"]:,}</span><span class="n">{c["reused"]:,}</span>'
        f'<span class="n{" bad" if c["failed"] else ""}">{c["failed"]:,}</span>'
        f'<span class="n{" warn" if c["retries"] else ""}">{c["retries"]:,}</span>'
        f'<span class="tbar" title="{_e(tip)}"><span class="stack">{bar}</span>'
        f'<span class="tnum">{_tokens(c):,}</span></span>'
        f'<span class="usd"><span class="ubar"><i style="width:{100 * c["usd"] / top_usd:.2f}%"></i></span>'
        f'{_usd(c["usd"])}</span><span class="n">{ratio}</span>'
        f'<span class="n">{_secs(c["latency_median_s"])} / {_secs(c["latency_p95_s"])}</span>'
        f'<code>{_e(_first(e["code"], 90))}</code></summary>')
    return f'<details class="exec" data-exec="{label}">{summary}{_exec_detail(e)}</details>'


def _exec_detail(e: dict) -> str:
    c = e["calls"]
    code = e["code"] or ""
    more = f"\n… {len(code) - CODE_CHARS:,} more characters" if len(code) > CODE_CHARS else ""
    facts = [f"{c['count']:,} sent ({c['requests']:,} requests)", f"{c['reused']:,} reused",
             f"{c['failed']:,} failed", f"{c['retries']:,} retries", _usd(c["usd"]),
             f"calls busy {_secs(c['busy_s'])}", f"stdout {e['stdout_chars'] or 0:,} chars"]
    if c["dry_run"]:
        facts.append(f"{c['dry_run']:,} dry run (~{_usd(c['dry_run_usd'])})")
    if e.get("error_type"):
        facts.append(f"raised {e['error_type']}")
    parts = [f'<p class="facts">{_e(" · ".join(facts))}</p>']
    if code:
        parts.append(f"<pre>{_e(code[:CODE_CHARS] + more)}</pre>")
    if e.get("batches"):
        parts.append("<h3>Batches</h3>" + _table(
            [("batch", ""), ("calls", "n"), ("failed", "n"), ("retries", "n"), ("reused", "n"), ("took", "n"),
             ("cost", "n"), ("a sample answer", "ans")],
            [[f"<code>{_e(b['batch'] or 'single calls')}</code>", f"{b['calls']:,}", f"{b['failed']:,}",
              f"{b['retries']:,}", f"{b['reused']:,}", _secs(b["seconds"]), _usd(b["usd"]),
              _e(b["sample_answer"] or "")] for b in e["batches"]]))
    if e.get("failures"):
        parts.append("<h3>Failed calls by cause</h3>" + _causes_table(e["failures"], with_execs=False))
    return f'<div class="detail">{"".join(parts)}</div>'


def _failures(data: dict) -> str:
    raised = [e for e in data["execs"] if e.get("error_type") or e["outcome"] in ("timeout", "interrupted")]
    parts = []
    if raised:
        parts.append("<h3>Execs that did not finish cleanly</h3>" + _table(
            [("exec", "n"), ("outcome", ""), ("raised", ""), ("code", "msg")],
            [[str(e["exec"]), _e(e["outcome"]), _e(e.get("error_type") or ""),
              f"<code>{_e(_first(e['code'], 120))}</code>"] for e in raised]))
    if data["failures"]:
        failed = [c for e in data["execs"] for c in e.get("failed_calls", [])][:FAILED_IN_PAGE]
        total = data["failed_calls_total"]
        shown = f"the first {len(failed):,} of {total:,}" if len(failed) < total else f"all {total:,}"
        parts.append("<h3>Causes of failed calls</h3>" + _causes_table(data["failures"], with_execs=True))
        parts.append(f"<h3>Failed calls ({shown})</h3>" + _table(
            [("call", "n"), ("exec", "n"), ("item", "n"), ("status", ""), ("attempts", "n"), ("latency", "n"),
             ("type", ""), ("message", "msg")],
            [[str(c["id"]), _dash(c["exec"]), _dash(c["item"]), _e(c["status"]), str(c["attempts"]),
              _secs(c["latency_s"]), _e(c["error_type"] or ""), _e(c["error"] or "")] for c in failed]))
    if not parts:
        parts.append('<p class="none">No call failed and every exec finished cleanly.</p>')
    return f'<section id="errors"><h2>Errors</h2>{"".join(parts)}</section>'


def _causes_table(causes: list, *, with_execs: bool) -> str:
    columns = [("calls", "n"), ("type", ""), ("status", "")] + ([("execs", "")] if with_execs else [])
    rows = []
    for g in causes:
        row = [f'<b class="bad">{g["count"]:,}</b>', _e(g["error_type"] or ""), _e(g["status"])]
        if with_execs:
            row.append(_e(", ".join(str(x) for x in g["execs"][:12]) + (" …" if len(g["execs"]) > 12 else "")))
        rows.append(row + [_e(g["message"] or "")])
    return _table(columns + [("message", "msg")], rows)


def _slowest(data: dict) -> str:
    if not data["slowest"]:
        return ""
    return '<section><h2>Slowest calls</h2>' + _table(
        [("call", "n"), ("exec", "n"), ("item", "n"), ("status", ""), ("attempts", "n"), ("latency", "n"),
         ("tokens", "n"), ("cost", "n"), ("stop reason or error", "msg")],
        [[str(c["id"]), _dash(c["exec"]), _dash(c["item"]), _e(c["status"]), str(c["attempts"]),
          _secs(c["latency_s"]), f"{_tokens(c):,}", _usd(c["usd"]), _e(c["error"] or c["stop_reason"] or "")]
         for c in data["slowest"]]) + "</section>"


def _definitions(data: dict) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in data["definitions"].items())
    return f'<section class="defs"><h2>Definitions</h2><dl>{items}</dl></section>'


def _table(columns: list, rows: list) -> str:
    """A table of already escaped cells; a column's kind is "n" (a number), "msg"/"ans" (takes the room left)."""
    head = "".join(f'<th class="{kind}">{_e(name)}</th>' for name, kind in columns)
    body = "".join("<tr>" + "".join(f'<td class="{kind}">{cell}</td>' for (_, kind), cell in zip(columns, row))
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


# ---- the waterfall's data -----------------------------------------------------------

def _chart_data(data: dict, calls: list) -> dict:
    """Column arrays for the script; times in seconds from the first start."""
    execs = [e for e in data["execs"] if e["started"] is not None]
    starts = [e["started"] for e in execs] + [r[2] for r in calls if r[2] is not None]
    t0 = min(starts) if starts else 0.0
    cols = {"s": [], "d": [], "k": [], "a": [], "e": [], "i": [], "t": [], "u": [], "id": [], "x": []}
    errors = []
    for cid, exec_id, started, latency, status, attempts, item, _batch, tokens, usd, error_type in calls:
        kind = KIND_OF_STATUS.get(status, 0)
        if kind == 0 and (attempts or 0) > 1:
            kind = 1
        cols["s"].append(round((started or t0) - t0, 3))
        cols["d"].append(round(latency or 0.0, 3))
        cols["k"].append(kind)
        cols["a"].append(attempts or 0)
        cols["e"].append(exec_id)
        cols["i"].append(item)
        cols["t"].append(tokens)
        cols["u"].append(round(usd or 0.0, 7))
        cols["id"].append(cid)
        if error_type and error_type not in errors:
            errors.append(error_type)
        cols["x"].append(errors.index(error_type) if error_type else -1)
    now = time.time()
    ex = [{"id": e["exec"], "s": round(e["started"] - t0, 3),
           "e": round((e["ended"] if e["ended"] is not None else now) - t0, 3), "o": _outcome(e),
           "n": e["calls"]["count"] + e["calls"]["reused"] + e["calls"]["dry_run"], "c": _first(e["code"], 80)}
          for e in execs]
    return {"calls": cols, "errors": errors, "execs": ex, "kinds": KINDS}


# ---- formatting ----------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _outcome(e: dict) -> str:
    """An exec's outcome; rows of calls without an exec say why they have none."""
    return e["outcome"] or ("library" if e["exec"] is None else "unknown")


def _dash(value) -> str:
    return "–" if value is None else _e(value)


def _first(code, limit: int) -> str:
    for line in (code or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def _tokens(c: dict) -> int:
    return c["input_tokens"] + c["output_tokens"] + c["cache_read_tokens"] + c["cache_write_tokens"]


def _usd(value) -> str:
    value = value or 0.0
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    if value >= 0.01:
        return f"${value:.3f}"
    return f"${value:.4f}" if value >= 0.0001 else f"${value:.6f}"


def _secs(value) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m {seconds:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _clock(ts, date: bool = False) -> str:
    if ts is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(ts))


# ---- the page -------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>%CSS%</style></head>
<body><main>
%BODY%
</main>
<script type="application/json" id="trace-data">%DATA%</script>
<script>%JS%</script>
</body></html>
"""

CSS = """
:root { --ink:#1d2733; --muted:#5f6b7a; --line:#e3e7ec; --bg:#f6f7f9; --card:#fff;
  --ok:#4c78a8; --retried:#f0a030; --error:#d64545; --reused:#9aa5b1; --budget:#7a4fb0; --dry:#c9d3dd;
  --t-in:#5b8def; --t-cw:#f28e2b; --t-cr:#59a14f; --t-out:#9c6ade; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1360px; margin:0 auto; padding:20px 24px 40px; }
header h1 { font-size:22px; margin:0; font-weight:600; }
header .sid { font-family:ui-monospace, Menlo, Consolas, monospace; font-weight:500; color:var(--ok); }
.sub { color:var(--muted); margin:4px 0 16px; }
h2 { font-size:16px; margin:0 0 10px; font-weight:600; }
h3 { font-size:14px; margin:14px 0 6px; color:var(--muted); font-weight:600; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px;
  margin:0 0 16px; }
section.cards { display:grid; grid-template-columns:repeat(7, 1fr); gap:10px; background:none; border:0; padding:0; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:10px 12px; min-width:0; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:22px; font-weight:600; margin:2px 0; white-space:nowrap; font-variant-numeric:tabular-nums; }
.card .note { color:var(--muted); font-size:12px; }
#total-failed .value { color:var(--error); }
#total-failed.zero .value, .card.zero .value { color:var(--ink); }
.wf-bar { display:flex; gap:18px; align-items:center; flex-wrap:wrap; margin-bottom:8px; color:var(--muted); }
.wf-bar select { font:inherit; max-width:420px; }
.legend span { margin-right:12px; white-space:nowrap; }
.legend i, .keyline i { display:inline-block; width:12px; height:10px; border-radius:2px; margin-right:4px;
  vertical-align:-1px; }
.k0 { background:var(--ok); } .k1 { background:var(--retried); } .k2 { background:var(--error); }
.k3 { background:var(--reused); } .k4 { background:var(--budget); } .k5 { background:var(--dry); }
#wf-box { position:relative; }
#wf { width:100%; display:block; cursor:crosshair; }
#wf-tip { position:absolute; pointer-events:none; background:#1d2733; color:#fff; font-size:12px;
  padding:6px 8px; border-radius:6px; max-width:420px; white-space:pre-wrap; z-index:2; }
.caption { color:var(--muted); margin:6px 0 0; font-size:13px; }
.keyline { color:var(--muted); margin:-4px 0 8px; font-size:13px; }
.keyline i { margin-left:8px; }
.t-in { background:var(--t-in); } .t-cw { background:var(--t-cw); } .t-cr { background:var(--t-cr); }
.t-out { background:var(--t-out); }
.execs .row { display:grid; align-items:center; gap:10px; padding:6px 8px;
  grid-template-columns:34px 84px 62px 58px 50px 50px 46px 50px minmax(150px, 1.4fr) 120px 62px 104px
    minmax(120px, 1.5fr); }
.execs .head { color:var(--muted); font-size:12px; border-bottom:1px solid var(--line); }
details.exec { border-bottom:1px solid var(--line); }
details.exec summary { cursor:pointer; list-style:none; }
details.exec summary::-webkit-details-marker { display:none; }
details.exec summary:hover { background:#f2f5f9; }
details.exec summary a { color:var(--ok); font-weight:600; text-decoration:none; }
details.exec summary a:hover { text-decoration:underline; }
details.exec[open] summary { background:#eef3fa; }
.n { text-align:right; font-variant-numeric:tabular-nums; }
.bad { color:var(--error); font-weight:600; } .warn { color:#b66d00; }
b[class^="o-"] { font-weight:600; font-size:12px; padding:1px 7px; border-radius:9px; background:#e8f4ec;
  color:#2f7d4b; }
b.o-error { background:#fbe9e9; color:#b23333; } b.o-timeout { background:#fdf0dc; color:#9a5b00; }
b.o-interrupted { background:#eceff3; color:#555f6b; } b.o-running { background:#e6effa; color:#2d5e99; }
b.o-library, b.o-unknown { background:#eceff3; color:#555f6b; }
.tbar { display:flex; align-items:center; gap:6px; min-width:0; }
.stack { flex:1; display:flex; height:10px; background:#f0f2f5; border-radius:3px; overflow:hidden; }
.stack i { display:block; height:100%; }
.tnum { font-size:12px; color:var(--muted); width:64px; text-align:right; font-variant-numeric:tabular-nums; }
.usd { display:flex; align-items:center; gap:6px; font-variant-numeric:tabular-nums; }
.ubar { width:44px; height:10px; background:#f0f2f5; border-radius:3px; overflow:hidden; flex:none; }
.ubar i { display:block; height:100%; background:#2a9d8f; }
.execs code, .execs summary code { font:12px ui-monospace, Menlo, Consolas, monospace; color:#34495e;
  white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.detail { padding:4px 12px 14px 54px; }
.facts { color:var(--muted); margin:6px 0; }
pre { background:#0f1720; color:#e6edf3; padding:10px 12px; border-radius:8px; overflow:auto; max-height:360px;
  font:12px/1.5 ui-monospace, Menlo, Consolas, monospace; margin:6px 0 10px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
td.msg, td.ans { width:100%; }
th.n, td.n { text-align:right; white-space:nowrap; }
th { text-align:left; white-space:nowrap; color:var(--muted); font-weight:500; font-size:12px;
  border-bottom:1px solid var(--line);
  padding:4px 8px; }
td { border-bottom:1px solid #f0f2f5; padding:4px 8px; vertical-align:top; }
td.msg, td.ans { color:#3b4654; word-break:break-word; }
td.ans { font-family:ui-monospace, Menlo, Consolas, monospace; font-size:12px; white-space:pre-wrap; max-width:520px; }
.none { color:var(--muted); margin:0; }
.defs dl { display:grid; grid-template-columns:140px 1fr; gap:4px 14px; margin:0; font-size:13px; }
.defs dt { font-family:ui-monospace, Menlo, Consolas, monospace; color:var(--muted); }
.defs dd { margin:0; }
@media (max-width:1180px) { section.cards { grid-template-columns:repeat(4, 1fr); } }
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("trace-data").textContent);
  var C = D.calls, N = C.s.length;
  var COLORS = ["#4c78a8", "#f0a030", "#d64545", "#9aa5b1", "#7a4fb0", "#c9d3dd"];
  var OUTCOME = {ok: "#3c9a5f", error: "#d64545", timeout: "#e08a00", interrupted: "#8a96a3",
                 running: "#4c78a8", library: "#8a96a3"};
  var canvas = document.getElementById("wf"), tip = document.getElementById("wf-tip");
  var select = document.getElementById("wf-exec"), caption = document.getElementById("wf-caption");
  var AXIS = 22, EXROW = 20, PAD = 8, GAP_PX = 22;
  var view = null;

  function fmt(s) {
    if (s === 0) return "0 s";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    var m = Math.floor(s / 60), r = Math.round(s % 60);
    if (m < 60) return m + "m " + (r < 10 ? "0" : "") + r + "s";
    return Math.floor(m / 60) + "h " + (m % 60) + "m";
  }

  // Active stretches: union of exec and call intervals; gaps longer than `idle` are squeezed.
  function segments(pick) {
    var iv = [];
    D.execs.forEach(function (e) { if (pick(e.id)) iv.push([e.s, Math.max(e.e, e.s)]); });
    for (var i = 0; i < N; i++) if (pick(C.e[i])) iv.push([C.s[i], C.s[i] + C.d[i]]);
    iv.sort(function (a, b) { return a[0] - b[0]; });
    var active = 0, merged = [];
    iv.forEach(function (v) {
      var last = merged[merged.length - 1];
      if (last && v[0] <= last[1]) last[1] = Math.max(last[1], v[1]); else merged.push([v[0], v[1]]);
    });
    merged.forEach(function (m) { active += m[1] - m[0]; });
    var idle = Math.max(2, active * 0.03), segs = [];
    merged.forEach(function (m) {
      var last = segs[segs.length - 1];
      if (last && m[0] - last[1] < idle) last[1] = Math.max(last[1], m[1]); else segs.push([m[0], m[1]]);
    });
    if (!segs.length) segs.push([0, 1]);
    return segs;
  }

  function layout(pick) {
    var idx = [];
    for (var i = 0; i < N; i++) if (pick(C.e[i])) idx.push(i);
    var lanes = [], laneOf = new Int32Array(N), byLane = [];
    idx.forEach(function (i) {
      var start = C.s[i], l = 0;
      while (l < lanes.length && lanes[l] > start) l++;
      // calls that were not sent (reused, refused, dry run) take no time: a tick that holds no lane
      if (C.d[i] > 0) lanes[l] = start + C.d[i]; else if (l === lanes.length) lanes[l] = start;
      laneOf[i] = l;
      (byLane[l] = byLane[l] || []).push(i);
    });
    return {idx: idx, lanes: Math.max(lanes.length, 1), laneOf: laneOf, byLane: byLane};
  }

  function build(execId) {
    var pick = execId === "" ? function () { return true; }
                             : function (e) { return String(e) === execId; };
    var segs = segments(pick), lay = layout(pick);
    var width = canvas.parentNode.clientWidth, total = 0;
    segs.forEach(function (s) { total += Math.max(s[1] - s[0], 0.001); });
    var usable = width - 2 * PAD - GAP_PX * (segs.length - 1), scale = usable / total;
    var x0 = [], off = PAD;
    segs.forEach(function (s) { x0.push(off); off += Math.max(s[1] - s[0], 0.001) * scale + GAP_PX; });
    function x(t) {
      for (var k = segs.length - 1; k >= 0; k--) if (t >= segs[k][0] || k === 0)
        return x0[k] + (Math.min(t, segs[k][1]) - segs[k][0]) * scale;
    }
    var laneH = Math.max(1.5, Math.min(10, 380 / lay.lanes));
    var height = AXIS + EXROW + 6 + Math.ceil(lay.lanes * laneH) + 8;
    return {pick: pick, segs: segs, x0: x0, x: x, scale: scale, lay: lay, laneH: laneH,
            width: width, height: height, top: AXIS + EXROW + 6, execId: execId};
  }

  function num(n) { return n.toLocaleString("en-US"); }

  function tick(t, step, digits) {
    if (step < 60) return (t < 60 ? t.toFixed(digits) : Math.floor(t / 60) + "m " + (t % 60).toFixed(digits)) + " s";
    var m = Math.round(t / 60);
    return m < 60 ? m + " min" : Math.floor(m / 60) + "h " + (m % 60) + "m";
  }

  function niceStep(sec) {
    var p = Math.pow(10, Math.floor(Math.log10(sec))), m = sec / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function draw() {
    var v = view, dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(v.width * dpr); canvas.height = Math.round(v.height * dpr);
    canvas.style.height = v.height + "px";
    var g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, v.width, v.height);
    g.font = "11px -apple-system, Segoe UI, Roboto, Arial, sans-serif";
    // axis ticks, in seconds from the start of the session, only inside active stretches
    var step = niceStep(Math.max(90 / v.scale, 0.001)), origin = v.segs[0][0];
    var digits = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
    g.fillStyle = "#5f6b7a"; g.strokeStyle = "#edf0f3"; g.lineWidth = 1;
    v.segs.forEach(function (s, k) {
      // ticks count from the start of the view: of the session, or of the exec zoomed into
      for (var t = origin + Math.ceil((s[0] - origin) / step - 1e-9) * step; t <= s[1]; t += step) {
        var px = Math.round(v.x(t)) + 0.5;
        g.beginPath(); g.moveTo(px, AXIS - 4); g.lineTo(px, v.height); g.stroke();
        var label = tick(t - origin, step, digits);
        if (px + 3 + g.measureText(label).width < v.width) g.fillText(label, px + 3, AXIS - 8);
      }
      if (k > 0) {  // an idle break
        var gx = v.x0[k] - GAP_PX, idle = s[0] - v.segs[k - 1][1];
        g.save(); g.fillStyle = "#f3f4f6"; g.fillRect(gx + 3, AXIS, GAP_PX - 6, v.height - AXIS);
        g.strokeStyle = "#c5ccd4"; g.setLineDash([3, 3]);
        g.beginPath(); g.moveTo(gx + 3.5, AXIS); g.lineTo(gx + 3.5, v.height);
        g.moveTo(gx + GAP_PX - 3.5, AXIS); g.lineTo(gx + GAP_PX - 3.5, v.height); g.stroke();
        g.restore();
        g.save(); g.translate(gx + GAP_PX / 2 + 4, v.height - 6); g.rotate(-Math.PI / 2);
        g.fillStyle = "#8a96a3"; g.fillText(fmt(idle) + " idle", 0, 0); g.restore();
      }
    });
    // execs
    D.execs.forEach(function (e) {
      if (!v.pick(e.id)) return;
      var a = v.x(e.s), b = Math.max(v.x(e.e), a + 2);
      g.fillStyle = OUTCOME[e.o] || "#8a96a3"; g.globalAlpha = 0.85;
      g.fillRect(a, AXIS + 2, b - a, EXROW - 6); g.globalAlpha = 1;
      var label = "exec " + e.id, long = label + " · " + e.c;
      if (e.c && b - a > g.measureText(long).width + 8) label = long;
      if (b - a > g.measureText(label).width + 8) { g.fillStyle = "#fff"; g.fillText(label, a + 4, AXIS + 13); }
    });
    // calls
    var L = v.lay, h = Math.max(1, v.laneH - (v.laneH > 3 ? 1 : 0));
    for (var kind = 0; kind < 6; kind++) {
      g.fillStyle = COLORS[kind];
      L.idx.forEach(function (i) {
        if (C.k[i] !== kind) return;
        var a = v.x(C.s[i]), w = Math.max(v.x(C.s[i] + C.d[i]) - a, 1.5);
        g.fillRect(a, v.top + L.laneOf[i] * v.laneH, w, h);
      });
    }
    var counts = [0, 0, 0, 0, 0, 0], peak = L.lanes;
    L.idx.forEach(function (i) { counts[C.k[i]]++; });
    var what = v.execId === "" ? D.execs.filter(function (e) { return e.id !== null; }).length + " execs"
                               : "exec " + v.execId;
    var parts = [];
    D.kinds.forEach(function (k, j) {
      if (counts[j]) parts.push(num(counts[j]) + " " + k.replace("_", " "));
    });
    caption.textContent = num(L.idx.length) + " calls in " + what + " (" + (parts.join(", ") || "none") +
      "); at most " + peak + " open at once (waits between retries included). " +
      "Hover a bar for the call; click a bar to zoom into its exec, again to zoom out.";
  }

  function hit(px, py) {
    var v = view;
    if (py < v.top) {
      if (py < AXIS) return null;
      for (var j = 0; j < D.execs.length; j++) {
        var e = D.execs[j];
        if (v.pick(e.id) && px >= v.x(e.s) - 1 && px <= Math.max(v.x(e.e), v.x(e.s) + 2) + 1) return {exec: e};
      }
      return null;
    }
    var lane = Math.floor((py - v.top) / v.laneH), list = v.lay.byLane[lane] || [];
    for (var k = 0; k < list.length; k++) {
      var i = list[k], a = v.x(C.s[i]), b = Math.max(v.x(C.s[i] + C.d[i]), a + 1.5);
      if (px >= a - 1 && px <= b + 1) return {call: i};
    }
    return null;
  }

  function describe(h) {
    if (h.exec) {
      var e = h.exec;
      return "exec " + e.id + " · " + e.o + " · " + fmt(e.e - e.s) + " · " + e.n + " calls\nclick to zoom in";
    }
    var i = h.call, s = "call " + C.id[i] + " · exec " + C.e[i] + (C.i[i] !== null ? " item " + C.i[i] : "") +
      "\n" + D.kinds[C.k[i]].replace("_", " ") + " · " + C.a[i] + " attempt" + (C.a[i] === 1 ? "" : "s") +
      (C.d[i] ? " · " + fmt(C.d[i]) : "") + "\n" + num(C.t[i]) + " tokens · $" + C.u[i];
    if (C.x[i] >= 0) s += "\n" + D.errors[C.x[i]];
    return s;
  }

  canvas.addEventListener("mousemove", function (ev) {
    var r = canvas.getBoundingClientRect(), h = hit(ev.clientX - r.left, ev.clientY - r.top);
    if (!h) { tip.hidden = true; return; }
    tip.textContent = describe(h); tip.hidden = false;
    var left = ev.clientX - r.left + 14;
    if (left + 300 > r.width) left = Math.max(0, ev.clientX - r.left - 310);
    tip.style.left = left + "px"; tip.style.top = (ev.clientY - r.top + 14) + "px";
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
  canvas.addEventListener("click", function (ev) {
    var r = canvas.getBoundingClientRect(), h = hit(ev.clientX - r.left, ev.clientY - r.top);
    var id = h && (h.exec ? h.exec.id : C.e[h.call]);
    if (id === null || id === undefined) return;
    select.value = view.execId === String(id) ? "" : String(id);
    show(select.value);
  });
  select.addEventListener("change", function () { show(select.value); });
  // #exec-N in the address zooms to exec N (the rows of the exec table link there)
  function fromHash() {
    var m = /^#exec-(\d+)$/.exec(location.hash);
    if (m && select.querySelector('option[value="' + m[1] + '"]')) { select.value = m[1]; return m[1]; }
    return null;
  }
  window.addEventListener("hashchange", function () {
    var id = fromHash();
    if (id !== null) { show(id); document.getElementById("timeline").scrollIntoView(); }
  });
  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing); resizing = setTimeout(function () { show(view.execId); }, 150);
  });
  function show(execId) {
    view = build(execId); draw();
    try {  // keep the address in step, so it can be shared; some browsers refuse this for file:// pages
      history.replaceState(null, "", execId === "" ? location.pathname : "#exec-" + execId);
    } catch (e) { /* the view still changed */ }
  }
  show(fromHash() || "");
})();
"""
