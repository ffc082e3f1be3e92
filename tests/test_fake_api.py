"""The fake Messages API behaves like anthropic-api.md says the real one does, over real HTTP on 127.0.0.1."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from fake_api import MODELS, FakeAPI, fake_tokens, reader_answer

HAIKU5, HAIKU4 = "claude-haiku-5-5", "claude-haiku-4-5"
HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(api, body, headers=None, path="/v1/messages", timeout=5.0, raw=None):
    """POST to the fake API; returns (status, headers, parsed JSON body or raw text)."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(api.base_url + path, data, HEADERS if headers is None else headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, got_headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, got_headers, payload = error.code, error.headers, error.read()
    try:
        return status, got_headers, json.loads(payload)
    except ValueError:
        return status, got_headers, payload.decode()


def body(prompt="hello?", model=HAIKU4, max_tokens=200, prefix=None, ttl=None, **extra):
    content = [{"type": "text", "text": prompt}]
    if prefix is not None:
        control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
        content.insert(0, {"type": "text", "text": prefix, "cache_control": control})
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}], **extra}


def text_of(message):
    return "".join(block["text"] for block in message["content"] if block["type"] == "text")


@pytest.fixture
def api():
    with FakeAPI() as server:
        yield server


# --- answers and thinking

def test_answer_echoes_prompt_with_usage_and_request_id(api):
    status, headers, message = call(api, body("hello there"))
    assert status == 200 and headers["request-id"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["model"] == HAIKU4
    assert text_of(message) == "echo: hello there" and message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == fake_tokens("hello there", HAIKU4)
    assert message["usage"]["output_tokens"] == fake_tokens("echo: hello there", HAIKU4)


def test_haiku_5_5_answer_starts_with_a_thinking_block_that_counts_as_output(api):
    message = call(api, body("hi", model=HAIKU5))[2]
    thinking, text = message["content"]
    assert thinking["type"] == "thinking" and thinking["signature"] and text["type"] == "text"
    assert message["usage"]["output_tokens"] == fake_tokens(thinking["thinking"], HAIKU5) + fake_tokens(
        text["text"], HAIKU5)


def test_thinking_disabled_gives_only_text(api):
    message = call(api, body("hi", model=HAIKU5, thinking={"type": "disabled"}))[2]
    assert [block["type"] for block in message["content"]] == ["text"]


def test_alias_of_haiku_4_5_is_accepted_and_does_not_think(api):
    message = call(api, body("hi", model="claude-haiku-4-5-20251001"))[2]
    assert [block["type"] for block in message["content"]] == ["text"]


def test_thinking_can_use_up_max_tokens_leaving_no_text(api):
    message = call(api, body("x" * 400, model=HAIKU5, max_tokens=5))[2]
    assert [block["type"] for block in message["content"]] == ["thinking"]
    assert message["stop_reason"] == "max_tokens" and message["usage"]["output_tokens"] == 5


def test_reply_longer_than_max_tokens_is_cut_with_stop_reason_max_tokens(api):
    api.set_responder(lambda b: "word " * 100)
    message = call(api, body(max_tokens=10))[2]
    assert message["stop_reason"] == "max_tokens" and message["usage"]["output_tokens"] == 10
    assert text_of(message) == ("word " * 100)[:40]


def test_stop_sequence_cuts_the_reply(api):
    api.set_responder(lambda b: "one two STOP three")
    message = call(api, body(stop_sequences=["STOP"]))[2]
    assert text_of(message) == "one two " and message["stop_reason"] == "stop_sequence"
    assert message["stop_sequence"] == "STOP"


def test_responder_returning_none_falls_back_to_the_default_reply(api):
    api.set_responder(lambda b: "scripted" if "script" in b["messages"][-1]["content"][-1]["text"] else None)
    assert text_of(call(api, body("script me"))[2]) == "scripted"
    assert text_of(call(api, body("other"))[2]) == "echo: other"


def test_responder_that_raises_gives_a_500_api_error(api):
    api.set_responder(lambda b: 1 / 0)
    status, _, error = call(api, body())
    assert status == 500 and error["error"]["type"] == "api_error" and "ZeroDivisionError" in error["error"]["message"]


# --- tokens

def test_fake_tokens_are_a_quarter_of_utf8_bytes_and_30_percent_more_on_haiku_5_5():
    assert fake_tokens("", HAIKU4) == 0 and fake_tokens("a", HAIKU4) == 1
    assert fake_tokens("abcdefghi", HAIKU4) == 3
    assert fake_tokens("x" * 400, HAIKU5) == 130
    assert fake_tokens("a", HAIKU5) == 1  # never more than the byte count
    assert fake_tokens("é" * 10, HAIKU4) == 5


def test_input_tokens_are_exactly_the_sum_over_system_and_message_blocks(api):
    request = body("question?", system=[{"type": "text", "text": "You are terse."}])
    request["messages"] = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                           request["messages"][0]]
    expected = sum(fake_tokens(t, HAIKU4) for t in ("You are terse.", "first", "ok", "question?"))
    assert call(api, request)[2]["usage"]["input_tokens"] == expected
    assert call(api, {k: v for k, v in request.items() if k != "max_tokens"},
                path="/v1/messages/count_tokens")[2] == {"input_tokens": expected}


# --- validation

@pytest.mark.parametrize("headers, status, kind", [
    ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
    ({"x-api-key": "k"}, 400, "invalid_request_error"),
    ({"x-api-key": "k", "anthropic-version": "2020-01-01"}, 400, "invalid_request_error"),
    ({"authorization": "Bearer k", "anthropic-version": "2023-06-01"}, 401, "authentication_error"),
])
def test_bad_headers_are_refused(api, headers, status, kind):
    got, response_headers, error = call(api, body(), headers={"content-type": "application/json", **headers})
    assert (got, error["type"], error["error"]["type"]) == (status, "error", kind)
    assert error["request_id"] == response_headers["request-id"]


def test_bearer_key_is_accepted_under_the_new_version(api):
    headers = {"authorization": "Bearer k", "anthropic-version": "2026-10-21", "content-type": "application/json"}
    assert call(api, body(), headers=headers)[0] == 200


def test_only_listed_keys_are_accepted_when_keys_are_given():
    with FakeAPI(keys=["good"]) as api:
        assert call(api, body(), headers={**HEADERS, "x-api-key": "good"})[0] == 200
        status, _, error = call(api, body(), headers={**HEADERS, "x-api-key": "bad"})
        assert status == 401 and error["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("request_body, message", [
    ({"model": HAIKU4, "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
    (body(color="red"), "color: Extra inputs are not permitted"),
    (body(max_tokens=64_001), "maximum allowed number of output tokens"),
    (body(model=HAIKU5, temperature=0.5), "temperature"),
    (body(model=HAIKU5, top_p=0.5), "top_p"),
    (body(model=HAIKU5, top_k=5), "top_k"),
    (body(model=HAIKU5, temperature=1, top_p=0.99), "both"),
    (body(temperature=0.2, top_p=0.9), "both"),
    (body(model=HAIKU5, messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "The"}]),
     "prefill"),
    (body("   "), "non-whitespace"),
])
def test_invalid_bodies_are_400_invalid_request_error(api, request_body, message):
    status, _, error = call(api, request_body)
    assert status == 400 and error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]


def test_allowed_sampling_and_haiku_4_5_prefill_are_accepted(api):
    assert call(api, body(model=HAIKU5, temperature=1))[0] == 200
    assert call(api, body(model=HAIKU5, top_p=0.99))[0] == 200
    assert call(api, body(temperature=0.2, top_k=5))[0] == 200
    prefill = body(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "The"}])
    assert call(api, prefill)[0] == 200


def test_sampling_fields_do_not_exist_under_the_new_version(api):
    status, _, error = call(api, body(temperature=0.5), headers={**HEADERS, "anthropic-version": "2026-10-21"})
    assert status == 400 and error["error"]["message"] == "temperature: Extra inputs are not permitted"


def test_unknown_model_is_404_naming_the_model(api):
    status, _, error = call(api, body(model="claude-nope"))
    assert status == 404 and error["error"] == {"type": "not_found_error", "message": "model: claude-nope"}


def test_a_fifth_cache_breakpoint_is_400(api):
    blocks = [{"type": "text", "text": f"b{i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]
    status, _, error = call(api, body(messages=[{"role": "user", "content": blocks}]))
    assert status == 400 and "cache_control" in error["error"]["message"]


def test_body_over_32_mb_is_413_with_a_non_json_body(api):
    status, headers, payload = call(api, None, raw=b"x" * (32 * 1024 * 1024 + 1))
    assert status == 413 and payload.startswith("<html>") and headers["request-id"]


def test_unknown_path_is_a_404_json_error(api):
    status, _, error = call(api, {}, path="/v1/complete")
    assert status == 404 and error["error"]["type"] == "not_found_error"


def test_invalid_json_is_400(api):
    status, _, error = call(api, None, raw=b"{not json")
    assert status == 400 and error["error"]["type"] == "invalid_request_error"


# --- prompt caching

PREFIX = "shared context line\n" * 250  # 5,000 bytes: 1,250 tokens on Haiku 4.5, 1,625 on Haiku 5.5


def test_prefix_below_the_model_minimum_is_silently_not_cached(api):
    for _ in range(2):
        usage = call(api, body("q?", prefix=PREFIX))[2]["usage"]  # Haiku 4.5 needs 4,096 tokens
        assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
        assert usage["input_tokens"] == fake_tokens(PREFIX, HAIKU4) + fake_tokens("q?", HAIKU4)


def test_cache_write_then_read_of_the_shared_prefix(api):
    prefix_tokens = fake_tokens(PREFIX, HAIKU5)
    first = call(api, body("q1?", model=HAIKU5, prefix=PREFIX))[2]["usage"]
    second = call(api, body("q2?", model=HAIKU5, prefix=PREFIX))[2]["usage"]
    assert first["cache_creation_input_tokens"] == prefix_tokens and first["cache_read_input_tokens"] == 0
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": prefix_tokens, "ephemeral_1h_input_tokens": 0}
    assert second["cache_read_input_tokens"] == prefix_tokens and second["cache_creation_input_tokens"] == 0
    assert second["input_tokens"] == fake_tokens("q2?", HAIKU5)


def test_cache_is_per_model(api):
    call(api, body("q?", model=HAIKU5, prefix=PREFIX))
    usage = call(api, body("q?", model="claude-sonnet-5-5", prefix=PREFIX))[2]["usage"]
    assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] > 0


def test_parallel_requests_before_first_response_all_pay_cache_write():
    with FakeAPI(latency=1.0) as api:
        results = [None] * 3

        def send(i):
            results[i] = call(api, body(f"q{i}?", model=HAIKU5, prefix=PREFIX))[2]["usage"]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(u["cache_creation_input_tokens"] == fake_tokens(PREFIX, HAIKU5) for u in results)
        assert all(u["cache_read_input_tokens"] == 0 for u in results)
        assert api.stats()["peak_concurrency"] == 3
        after = call(api, body("q9?", model=HAIKU5, prefix=PREFIX))[2]["usage"]
        assert after["cache_read_input_tokens"] == fake_tokens(PREFIX, HAIKU5)


def test_max_tokens_zero_prewarms_the_cache_without_output(api):
    warm = call(api, body("q?", model=HAIKU5, prefix=PREFIX, max_tokens=0))[2]
    assert warm["content"] == [] and warm["stop_reason"] == "max_tokens" and warm["usage"]["output_tokens"] == 0
    assert warm["usage"]["cache_creation_input_tokens"] == fake_tokens(PREFIX, HAIKU5)
    assert call(api, body("q?", model=HAIKU5, prefix=PREFIX))[2]["usage"]["cache_read_input_tokens"] > 0


def test_cache_entry_expires_after_five_minutes_unless_a_read_refreshes_it():
    clock = FakeClock()
    with FakeAPI(clock=clock) as api:
        def read():
            return call(api, body("q?", model=HAIKU5, prefix=PREFIX))[2]["usage"]["cache_read_input_tokens"] > 0

        call(api, body("q?", model=HAIKU5, prefix=PREFIX))
        clock.now += 299
        assert read()
        clock.now += 299  # 598 s after the write, 299 s after the refreshing read
        assert read()
        clock.now += 301
        assert not read()  # expired; this request wrote it again


def test_one_hour_ttl_outlives_five_minutes():
    clock = FakeClock()
    with FakeAPI(clock=clock) as api:
        first = call(api, body("q?", model=HAIKU5, prefix=PREFIX, ttl="1h"))[2]["usage"]
        assert first["cache_creation"]["ephemeral_1h_input_tokens"] == fake_tokens(PREFIX, HAIKU5)
        clock.now += 3000
        assert call(api, body("q?", model=HAIKU5, prefix=PREFIX))[2]["usage"]["cache_read_input_tokens"] > 0


def test_longest_cached_prefix_is_read_and_the_rest_up_to_the_last_breakpoint_written(api):
    system = [{"type": "text", "text": PREFIX, "cache_control": {"type": "ephemeral"}}]
    call(api, body("q?", model=HAIKU5, system=system))
    extra = "more shared text\n" * 100
    usage = call(api, body("q?", model=HAIKU5, system=system, prefix=extra))[2]["usage"]
    assert usage["cache_read_input_tokens"] == fake_tokens(PREFIX, HAIKU5)
    assert usage["cache_creation_input_tokens"] == fake_tokens(extra, HAIKU5)
    assert usage["input_tokens"] == fake_tokens("q?", HAIKU5)


def test_clear_cache_forgets_entries(api):
    call(api, body("q?", model=HAIKU5, prefix=PREFIX))
    api.clear_cache()
    assert call(api, body("q?", model=HAIKU5, prefix=PREFIX))[2]["usage"]["cache_read_input_tokens"] == 0


# --- faults

def test_injected_429_has_retry_after_and_bills_nothing(api):
    api.fail_next(1, status=429, retry_after=1.5)
    status, headers, error = call(api, body())
    assert status == 429 and error["error"]["type"] == "rate_limit_error"
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "1500"
    assert call(api, body())[0] == 200
    stats = api.stats()
    assert stats["requests"] == 2 and stats["by_status"] == {429: 1, 200: 1}
    assert stats["billed"]["input_tokens"] == fake_tokens("hello?", HAIKU4)


@pytest.mark.parametrize("status, kind", [(529, "overloaded_error"), (500, "api_error"), (504, "timeout_error")])
def test_injected_server_errors_have_their_types(api, status, kind):
    api.fail_next(1, status=status, should_retry=True)
    got, headers, error = call(api, body())
    assert (got, error["error"]["type"]) == (status, kind) and headers["x-should-retry"] == "true"
    assert "retry-after" not in headers


def test_spend_cap_is_a_429_with_error_code_and_no_retry_after(api):
    api.fail_next(1, kind="spend_cap")
    status, headers, error = call(api, body())
    assert status == 429 and error["error"]["details"]["error_code"] == "enforced_spend_limit_reached"
    assert "retry-after" not in headers


def test_non_json_413_fault(api):
    api.fail_next(1, kind="non_json_413")
    status, _, payload = call(api, body())
    assert status == 413 and isinstance(payload, str) and "413" in payload


def test_reset_closes_the_connection_without_a_response(api):
    api.fail_next(1, kind="reset")
    with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
        call(api, body())
    assert api.stats()["by_status"] == {"reset": 1}
    assert call(api, body())[0] == 200


def test_slow_fault_outlasts_the_client_timeout_and_bills_nothing(api):
    api.fail_next(1, kind="slow", slow_s=0.6)
    with pytest.raises((socket.timeout, urllib.error.URLError, TimeoutError)):
        call(api, body(), timeout=0.2)
    stats = api.stats()
    assert stats["by_status"] == {"slow": 1} and stats["billed"]["input_tokens"] == 0


def test_fault_with_match_only_hits_matching_prompts(api):
    api.fail_next(2, status=529, match="item 3")
    assert call(api, body("item 1"))[0] == 200
    assert call(api, body("item 3"))[0] == 529
    assert call(api, body("item 3"))[0] == 529
    assert call(api, body("item 3"))[0] == 200


def test_random_faults_are_deterministic_for_a_seed(api):
    def pattern():
        api.set_faults(rate_529=0.3, rate_500=0.2, seed=7)
        return [call(api, body())[0] for _ in range(20)]

    first = pattern()
    assert first == pattern() and {200, 529, 500} <= set(first)
    api.clear_faults()
    assert call(api, body())[0] == 200


# --- rate limit

def test_rpm_limit_sends_headers_and_429_with_retry_after_until_a_slot_frees():
    clock = FakeClock()
    with FakeAPI(rpm_limit=2, clock=clock) as api:
        status, headers, _ = call(api, body())
        assert status == 200 and headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        clock.now += 10
        assert call(api, body())[0] == 200
        clock.now += 20.5
        status, headers, error = call(api, body())
        assert status == 429 and error["error"]["type"] == "rate_limit_error"
        assert headers["retry-after"] == "30" and headers["retry-after-ms"] == "29500"
        clock.now += 29.5
        assert call(api, body())[0] == 200


def test_configure_changes_settings_live(api):
    api.configure(rpm_limit=1, reader=True, latency=lambda b: 0.0)
    status, _, message = call(api, body("Question: how many lines contain 'a'?"))
    assert status == 200 and not text_of(message).startswith("echo:")  # the reader answered
    assert call(api, body())[0] == 429
    with pytest.raises(TypeError):
        api.configure(colour="red")


# --- stats

def test_stats_count_requests_prompts_answers_headers_and_bodies(api):
    api.fail_next(1, status=500, match="b")
    for prompt in ("a", "b", "b"):
        call(api, body(prompt))
    stats = api.stats()
    assert stats["requests"] == 3 and stats["by_status"] == {200: 2, 500: 1}
    assert stats["by_prompt"] == {"a": 1, "b": 2} and stats["answered_by_prompt"] == {"a": 1, "b": 1}
    assert [b["messages"][0]["content"][0]["text"] for b in stats["received"]] == ["a", "b", "b"]
    assert stats["headers"][0]["x-api-key"] == "test-key"
    assert stats["billed"]["output_tokens"] == 2 * fake_tokens("echo: a", HAIKU4)
    api.reset_stats()
    assert api.stats()["requests"] == 0


def test_keep_alive_serves_several_requests_on_one_connection(api):
    connection = http.client.HTTPConnection("127.0.0.1", int(api.base_url.rsplit(":", 1)[1]), timeout=5)
    for _ in range(3):
        connection.request("POST", "/v1/messages", json.dumps(body()), HEADERS)
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["content"]
    connection.close()


def test_closing_the_server_ends_kept_alive_connections():
    api = FakeAPI()
    connection = http.client.HTTPConnection("127.0.0.1", int(api.base_url.rsplit(":", 1)[1]), timeout=5)
    connection.request("POST", "/v1/messages", json.dumps(body()), HEADERS)
    assert connection.getresponse().read()
    api.close()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connection.request("POST", "/v1/messages", json.dumps(body()), HEADERS)
        connection.getresponse()
    connection.close()


# --- the reader

def ask(text, system=None):
    request = body(text)
    if system:
        request["system"] = system
    return reader_answer(request)


LOG = "\n".join(["INFO start", "ERROR disk full", "WARN slow", "ERROR disk full again", "INFO user=alice op=read",
                 "INFO user=bob op=write", "INFO user=alice op=write"])


def test_reader_counts_lines_containing_a_quoted_string():
    assert ask(LOG + '\nQuestion: How many lines contain "disk full"?') == "2"
    assert ask("Count the lines with 'ERROR'?", system=LOG) == "2"


def test_reader_finds_the_most_frequent_value_of_a_key():
    assert ask(LOG + "\nWhat is the most frequent 'user'?") == "alice"
    tickets = "t1 label: billing\nt2 label: login\nt3 label: billing"
    assert ask(tickets + "\nWhich label is the most common?") == "billing"


def test_reader_finds_magic_numbers_for_a_key_or_all_of_them():
    haystack = ("Grass is green.\nThe special magic number for tranquil-lake is: 1234567.\nSky is blue.\n"
                "The special magic number for red-fox is 7654321.\n")
    assert ask(haystack + "What is the special magic number for tranquil-lake mentioned in the text?") == "1234567"
    assert ask(haystack + "What are all the special magic numbers?") == "1234567, 7654321"
    assert ask("Nothing here.\nWhat is the magic number for 'x'?") == "NONE"


def test_reader_lists_lines_containing_a_string_or_errors():
    assert ask(LOG + "\nWhich lines mention 'op=write'?") == "INFO user=bob op=write\nINFO user=alice op=write"
    assert ask(LOG + "\nTask: list the ERROR lines") == "ERROR disk full\nERROR disk full again"
    assert ask("all good\nWhich lines contain 'zzz'?") == "NONE"


def test_reader_reviews_code_for_risky_lines():
    code = "def f(x):\n    # TODO handle None\n    try:\n        return eval(x)\n    except:\n        pass\n"
    answer = ask("Review this file and list issues.", system=code)
    assert answer == "- line 2: # TODO handle None\n- line 4: return eval(x)\n- line 5: except:"
    assert ask("Review this file.", system="def ok():\n    return 1\n") == "NONE"


def test_reader_otherwise_quotes_the_first_line_of_the_data():
    assert ask("Once upon a time.\nThe end.\nWhat happens?") == 'The text begins with: "Once upon a time."'


def test_reader_answers_over_http_when_enabled(api):
    api.configure(reader=True)
    message = call(api, body(LOG + '\nQuestion: How many lines contain "INFO"?', model=HAIKU5))[2]
    assert text_of(message) == "4"


# --- standalone mode

def test_standalone_script_prints_its_url_and_serves_until_killed():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_api.py")
    process = subprocess.Popen([sys.executable, script, "--reader", "--rpm", "100"], stdout=subprocess.PIPE,
                               text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        class Remote:
            base_url = url

        status, headers, message = call(Remote, body("alpha\nbeta\nHow many lines contain 'a'?"))
        assert status == 200 and text_of(message) == "2"
        assert headers["anthropic-ratelimit-requests-limit"] == "100"
    finally:
        process.kill()
        process.wait()


def test_model_table_has_the_documented_limits():
    assert MODELS[HAIKU5]["min_cache"] == 512 and MODELS[HAIKU4]["min_cache"] == 4096
    assert MODELS[HAIKU5]["max_output"] == 128_000 and MODELS[HAIKU4]["max_output"] == 64_000
