"""trace: the ledger summarised per exec and in total, and the HTML report, checked against the fake API.

Most tests read one session filled once per module by real runs through the CLI against the fake Messages
API: a batch over a cacheable prefix with injected rate limits and overloads, a batch where some items always
fail, an exec that raises, a re-run answered from the ledger, and calls refused by a budget limit. The trace
figures must match the fake server's own counters (requests, billed tokens).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from clitools import ok, rlm, run, start
from fake_api import FakeAPI
from rlmcore import trace as trace_mod
from rlmcore.ledger import Ledger

PREFIX = "You count log lines. Answer with a number only. " * 60  # long enough to be cached
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
SUMMED = ("count", "failed", "retries", "reused", "input_tokens", "output_tokens", "cache_read_tokens",
          "cache_write_tokens", "requests")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One session filled through the CLI against the fake API; yields (env, server stats, exec reports)."""
    root = tmp_path_factory.mktemp("traced")
    log = root / "app.log"
    log.write_text("".join(f"2026-11-21 line {i} {'ERROR disk full' if i % 7 == 0 else 'INFO ok'}\n"
                           for i in range(600)))
    with FakeAPI(reader=True, latency=0.01) as api:
        env = {"RLM_HOME": str(root / "home"), "ANTHROPIC_BASE_URL": api.base_url,
               "ANTHROPIC_API_KEY": "sk-test-never-real", "RLM_CONCURRENCY": "4"}
        try:
            yield _fill(api, env, log)
        finally:
            rlm("stop", "--session", "tr", "--keep", env=env)


def count_prompts(n: int) -> str:
    """Code for n counting prompts, each marked with its item number so a fault can pick it."""
    return ("[f'[item {i:02d}] ' + p + '\\nQuestion: how many lines contain \"ERROR\"?' "
            f"for i, p in enumerate(parts[:{n}])]")


def _fill(api, env, log):
    reports = [start(log, "tr", "--max-usd", "none", "--max-calls", "none", env=env)]
    reports.append(run("tr", "print(len(context))\nparts = chunks(10)", env=env))
    for item, status in ((3, 429), (5, 429), (7, 429), (11, 529), (13, 529)):  # each item retried once
        api.fail_next(1, status=status, retry_after=0.01, match=f"[item {item:02d}]")
    reports.append(run("tr", f"counts = llm_query_batch({count_prompts(24)}, prefix={PREFIX!r})\n"
                             "print(counts[:3])", env=env))
    api.clear_faults()
    api.fail_next(1000, status=400, match="FAILME")  # not retryable: these items fail at once
    reports.append(run("tr", "found = llm_query_batch([p + '\\nQuestion: list the ERROR lines?' + "
                             "(' FAILME' if i % 4 == 0 else '') for i, p in enumerate(parts[:12])])\n"
                             "print(sum(a.startswith('[llm_query error') for a in found))", env=env))
    api.clear_faults()
    reports.append(run("tr", "x = 1 / 0", env=env))
    reports.append(run("tr", f"again = llm_query_batch({count_prompts(10)}, prefix={PREFIX!r})",
                       env=env))
    spent = ok("budget", "--session", "tr", env=env)["budget"]["spent"]["calls"]
    ok("budget", "--session", "tr", "--max-calls", str(spent + 2), env=env)
    reports.append(run("tr", "last = llm_query_batch([f'Question {i}: anything?' for i in range(5)], "
                             "concurrency=1)", env=env))
    return env, api.stats(), reports


def _trace(env, *flags):
    return ok("trace", "--session", "tr", *flags, env=env)


# ---- figures against the server's counters -------------------------------------------------

def test_trace_requests_and_billed_tokens_match_the_fake_servers_counters(recorded):
    env, stats, _ = recorded
    t = _trace(env)["totals"]
    assert t["requests"] == stats["requests"]
    assert t["input_tokens"] == stats["billed"]["input_tokens"]
    assert t["output_tokens"] == stats["billed"]["output_tokens"]
    assert t["cache_read_tokens"] == stats["billed"]["cache_read_input_tokens"]
    assert t["cache_write_tokens"] == stats["billed"]["cache_creation_input_tokens"]
    assert t["cache_read_tokens"] > 0 and t["cache_write_tokens"] > 0


def test_trace_counts_retries_failures_reuse_and_budget_refusals(recorded):
    env, stats, reports = recorded
    t = _trace(env)["totals"]
    answered = stats["by_status"].get(200, 0)
    failed_sent = 3  # the FAILME items
    assert t["count"] == answered + failed_sent
    assert t["retries"] == stats["requests"] - t["count"] == 5  # three 429s and two 529s, each retried once
    assert t["reused"] == 12  # the re-run's 10, and 2 prompts repeated within the 'found' batch (chunks(10) repeats)
    assert t["failed"] == failed_sent + 3  # 5 calls asked for with room for 2
    assert t["usd"] == pytest.approx(sum((r.get("calls") or {}).get("usd", 0) for r in reports), abs=1e-9)


def test_cache_hit_ratio_is_cache_reads_over_cacheable_tokens_and_says_so(recorded):
    env, stats, _ = recorded
    out = _trace(env)
    billed = stats["billed"]
    read, write = billed["cache_read_input_tokens"], billed["cache_creation_input_tokens"]
    assert out["totals"]["cache_hit_ratio"] == pytest.approx(read / (read + write), abs=1e-4)
    assert "cache_read_tokens / (cache_read_tokens + cache_write_tokens)" in out["definitions"]["cache_hit_ratio"]


def test_per_exec_figures_add_up_to_the_totals(recorded):
    env, _, _ = recorded
    out = _trace(env, "--json")
    for key in SUMMED:
        assert sum(e["calls"][key] for e in out["execs"]) == out["totals"][key], key
    assert sum(e["calls"]["usd"] for e in out["execs"]) == pytest.approx(out["totals"]["usd"], abs=1e-9)


def test_each_exec_keeps_its_code_outcome_and_own_calls(recorded):
    env, _, reports = recorded
    execs = _trace(env, "--json")["execs"]
    assert [e["outcome"] for e in execs] == ["ok", "ok", "ok", "error", "ok", "ok"]
    assert execs[3]["error_type"] == "ZeroDivisionError" and execs[3]["code"] == "x = 1 / 0"
    assert execs[0]["calls"]["count"] == 0 and execs[0]["calls"]["latency_median_s"] is None
    for e, report in zip(execs[1:], reports[2:]):
        for key in ("count", "failed", "retries", "reused", "input_tokens", "cache_read_tokens"):
            assert e["calls"][key] == report["calls"][key], (e["exec"], key)
    assert execs[1]["calls"]["retries"] == 5 and execs[1]["calls"]["cache_hit_ratio"] > 0.5
    assert execs[4]["calls"]["reused"] == 10 and execs[4]["calls"]["usd"] == 0


def test_failed_calls_are_listed_with_their_causes(recorded):
    env, _, _ = recorded
    out = _trace(env)
    causes = {(c["status"], c["error_type"]): c for c in out["failures"]}
    bad_request = next(c for (status, _), c in causes.items() if status == "error")
    assert bad_request["count"] == 3 and bad_request["execs"] == [3] and "400" in bad_request["message"]
    refused = next(c for (status, _), c in causes.items() if status == "budget")
    assert refused["count"] == 3 and refused["execs"] == [6] and "max_calls" in refused["message"]
    assert out["failed_calls_total"] == 6
    assert {c["exec"] for c in out["failed_calls"]} == {3, 6}
    assert all(c["error"] for c in out["failed_calls"])


def test_latency_and_slowest_calls_are_given_per_exec_and_in_total(recorded):
    env, _, _ = recorded
    out = _trace(env, "--json")
    t = out["totals"]
    assert 0 < t["latency_median_s"] <= t["latency_p95_s"] <= t["latency_max_s"]
    assert out["slowest"][0]["latency_s"] == t["latency_max_s"]
    batch = out["execs"][1]
    assert [c["latency_s"] for c in batch["slowest"]] == sorted((c["latency_s"] for c in batch["slowest"]),
                                                                reverse=True)
    assert batch["slowest"][0]["latency_s"] == batch["calls"]["latency_max_s"]
    assert all(c["exec"] == 2 for c in batch["slowest"])


def test_json_gives_batches_with_a_sample_answer(recorded):
    env, _, _ = recorded
    execs = _trace(env, "--json")["execs"]
    (batch,) = execs[1]["batches"]
    assert batch["calls"] == 24 and batch["retries"] == 5
    assert batch["sample_answer"].isdigit()  # the reader counted ERROR lines


# ---- exact figures on a ledger written directly ------------------------------------------------

def _sent(ledger, exec_id, latency, **extra):
    record = {"exec_id": exec_id, "batch_id": "b", "item": 0, "model": "claude-haiku-5-5", "status": "ok",
              "attempts": 1, "input_tokens": 10, "output_tokens": 2, "usd": 0.001, "latency_s": latency}
    record.update(extra)
    return ledger.finish_call(None, request_hash=None, response=None, record=record)


def test_median_and_p95_are_nearest_rank_per_exec_and_in_total(tmp_path):
    with Ledger(str(tmp_path / "ledger.sqlite"), create=True) as ledger:
        first, second = ledger.begin_exec("a"), ledger.begin_exec("b")
        for latency in (37, 12, 100, 5, 64, 81, 99, 23, 50, 95, 1, 98, 70, 97, 96, 45, 2, 3, 4, 6):
            _sent(ledger, first, float(latency))
        for latency in (0.5, 0.25, 7.0):
            _sent(ledger, second, latency)
        ledger.record_call({"exec_id": second, "model": "claude-haiku-5-5", "status": "reused"})  # no latency
        data = trace_mod.collect(ledger, full=True)
    a, b = data["execs"]
    assert (a["calls"]["latency_median_s"], a["calls"]["latency_p95_s"], a["calls"]["latency_max_s"]) == (45, 99, 100)
    assert [c["latency_s"] for c in a["slowest"]] == [100, 99, 98, 97, 96]
    assert (b["calls"]["latency_median_s"], b["calls"]["latency_p95_s"]) == (0.5, 7.0)
    everything = sorted([37, 12, 100, 5, 64, 81, 99, 23, 50, 95, 1, 98, 70, 97, 96, 45, 2, 3, 4, 6, 0.5, 0.25, 7.0])
    assert data["totals"]["latency_median_s"] == everything[11]
    assert data["totals"]["latency_p95_s"] == everything[21]
    assert [c["latency_s"] for c in data["slowest"]] == [100, 99, 98, 97, 96]


def test_calls_made_outside_any_exec_or_under_an_unknown_exec_get_rows_of_their_own(tmp_path):
    with Ledger(str(tmp_path / "ledger.sqlite"), create=True) as ledger:
        exec_id = ledger.begin_exec("x = 1")
        _sent(ledger, exec_id, 1.0)
        _sent(ledger, None, 2.0)
        _sent(ledger, 99, 3.0, status="error", error_type="server_error", error="api_error (HTTP 500)")
        data = trace_mod.collect(ledger, full=True)
    unknown, outside = data["execs"][1:]
    assert outside["exec"] is None and outside["calls"]["count"] == 1 and "outside" in outside["note"]
    assert unknown["exec"] == 99 and unknown["failed_calls"][0]["error"] == "api_error (HTTP 500)"
    assert data["totals"]["count"] == 3 and data["totals"]["execs"] == 1


def test_the_default_answer_shows_the_recent_execs_and_json_every_exec_whole(tmp_path, monkeypatch):
    logfile = tmp_path / "in.txt"
    logfile.write_text("hello\n")
    start(logfile, "many")
    ledger = Ledger(os.path.join(os.environ["RLM_HOME"], "sessions", "many", "ledger.sqlite"))
    for i in range(25):
        exec_id = ledger.begin_exec(f"\n\nstep_{i} = {i}\nprint(step_{i})\n")
        ledger.end_exec(exec_id, outcome="ok", stdout_chars=2)
    ledger.close()
    brief = ok("trace", "--session", "many")
    assert brief["execs_total"] == 25 and brief["execs_shown"] == trace_mod.EXECS_SHOWN
    assert brief["execs"][-1]["code"] == "step_24 = 24  [+1 lines]" and "--json" in brief["hint"]
    full = ok("trace", "--session", "many", "--json")
    assert len(full["execs"]) == 25 and full["execs"][0]["code"] == "\n\nstep_0 = 0\nprint(step_0)\n"


def test_trace_of_a_session_without_calls_has_no_ratio_and_no_latency(tmp_path):
    logfile = tmp_path / "in.txt"
    logfile.write_text("hello\n")
    start(logfile, "quiet")
    out = ok("trace", "--session", "quiet", "--html", tmp_path / "quiet.html")
    assert out["totals"]["count"] == 0 and out["totals"]["cache_hit_ratio"] is None
    assert out["totals"]["latency_median_s"] is None and out["slowest"] == [] and out["failures"] == []
    assert os.path.getsize(out["html"]) > 0


def test_trace_answers_while_an_exec_is_still_running(tmp_path):
    logfile = tmp_path / "in.txt"
    logfile.write_text("hello\n")
    with FakeAPI(latency=0.6) as api:
        env = {"ANTHROPIC_BASE_URL": api.base_url}
        start(logfile, "busy", env=env)
        running = ok("exec", "--session", "busy", "--wait", "0.3", "-c",
                     "r = llm_query_batch([f'q{i}' for i in range(8)], concurrency=2)", env=env)
        assert running.get("running") is True
        out = ok("trace", "--session", "busy")
        assert out["execs"][-1]["outcome"] == "running" and out["execs"][-1]["seconds"] > 0
        done = ok("wait", "--session", "busy", env=env)
        assert done["calls"]["count"] == 8
    assert ok("trace", "--session", "busy")["execs"][-1]["outcome"] == "ok"


# ---- the command's errors -----------------------------------------------------------------------

def test_trace_of_an_unknown_session_is_an_error_with_a_hint():
    result = rlm("trace", "--session", "nope")
    assert result.code == 1 and result.json["error"]["type"] == "session_not_found"
    assert result.json["error"]["hint"]


def test_html_into_a_folder_or_a_missing_folder_is_refused_before_anything_is_written(tmp_path):
    logfile = tmp_path / "in.txt"
    logfile.write_text("hello\n")
    start(logfile, "h")
    for target in (tmp_path, tmp_path / "missing" / "r.html"):
        result = rlm("trace", "--session", "h", "--html", target)
        assert result.code == 1 and result.json["error"]["type"] == "input_error", result
        assert str(target) in result.json["error"]["message"]


def test_trace_needs_a_session():
    assert rlm("trace").code == 2


# ---- the HTML report ----------------------------------------------------------------------------

def test_the_report_is_one_self_contained_file(recorded, tmp_path):
    env, _, _ = recorded
    path = tmp_path / "r.html"
    out = _trace(env, "--html", path)
    assert out["html"] == str(path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    for outside in ("http://", "https://", "<link", "@import", "url("):
        assert outside not in page, outside
    assert re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page) == [
        f"#exec-{n}" for n in range(1, 7)]  # only links within the page
    assert "x = 1 / 0" in page and "ZeroDivisionError" in page  # the code and the errors


def _render(path, tmp_path) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs it; apt-get install chromium)")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
         "--dump-dom", f"file://{path}"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.decode("utf-8")


def _text(dom: str, element_id: str) -> str:
    match = re.search(f'id="{element_id}"[^>]*>(.*?)</(p|div)>(</div>)?', dom, re.S)
    assert match, element_id
    return re.sub(r"<[^>]+>", " ", match.group(1))


def test_the_report_renders_the_sessions_totals_in_chromium(recorded, tmp_path):
    env, _, _ = recorded
    path = tmp_path / "r.html"
    out = _trace(env, "--html", path)
    t = out["totals"]
    dom = _render(path, tmp_path)
    cards = re.search(r'<section class="cards">(.*?)</section>', dom, re.S).group(1)
    text = re.sub(r"<[^>]+>", " ", cards)
    assert f"{t['count']:,}" in text and f"{t['requests']:,} requests" in text
    assert f"{t['retries']:,} retries" in text and f"{t['reused']:,} reused" in text
    tokens = t["input_tokens"] + t["output_tokens"] + t["cache_read_tokens"] + t["cache_write_tokens"]
    assert f"{tokens:,}" in text and f"{100 * t['cache_hit_ratio']:.1f}%" in text
    assert f"${t['usd']:.4f}" in text or f"${t['usd']:.6f}" in text
    # The caption is written by the page's script after it drew the waterfall: it ran without error.
    calls = t["count"] + t["reused"] + 3  # and the three refused by the budget
    assert _text(dom, "wf-caption").startswith(f"{calls} calls in 6 execs")
    assert dom.count('<details class="exec"') == 6


def test_the_report_of_a_session_without_calls_renders_too(tmp_path):
    logfile = tmp_path / "in.txt"
    logfile.write_text("hello\n")
    start(logfile, "empty")
    run("empty", "print('%JS% %DATA%')")  # placeholders of the page template, in the user's code
    path = tmp_path / "empty.html"
    ok("trace", "--session", "empty", "--html", path)
    assert path.read_text().count('"use strict"') == 1
    dom = _render(path, tmp_path)
    assert _text(dom, "wf-caption").startswith("0 calls in 1 execs")
    assert "No call failed" in dom


def test_the_waterfall_names_the_call_under_the_pointer_and_zooms_on_click(recorded, tmp_path):
    env, _, _ = recorded
    path = tmp_path / "r.html"
    _trace(env, "--html", path)
    probe = """<script>
    var c = document.getElementById("wf"), r = c.getBoundingClientRect(), seen = [];
    for (var y = 50; y < 140; y += 7) for (var x = 60; x < r.width; x += 40) {
      c.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + x, clientY: r.top + y}));
      var tip = document.getElementById("wf-tip");
      if (!tip.hidden) seen.push(tip.textContent.split("\\n")[0]);
    }
    // Click along the exec row until a click lands on an exec (idle gaps between execs do not zoom).
    for (var x = 60; x < r.width; x += 20) {
      c.dispatchEvent(new MouseEvent("click", {clientX: r.left + x, clientY: r.top + 30}));
      if (/^\\d+ calls in exec \\d+ /.test(document.getElementById("wf-caption").textContent)) break;
    }
    var p = document.createElement("p"); p.id = "probe";
    p.textContent = seen.join(" ; ") + " | " + document.getElementById("wf-caption").textContent;
    document.body.appendChild(p);
    </script></body>"""
    path.write_text(path.read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    seen, caption = _text(_render(path, tmp_path), "probe").split(" | ")
    assert re.search(r"call \d+ · exec \d+ item \d+", seen), seen
    assert re.match(r"\d+ calls in exec \d+ ", caption), caption  # the click zoomed into one exec
