"""One Messages API request: body shapes, replies, error mapping and retries, over HTTP to the fake API."""
from __future__ import annotations

import pytest

from rlmcore import errors, models
from rlmcore.api import Client, ConflictError, build_body, retry_delay

KEY = "sk-ant-test-0123456789-SECRET"


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(fake_api, sleeps):
    return Client(KEY, fake_api.base_url, sleep=sleeps.append, rand=lambda: 0.0)


def body(model="haiku", prompt="What is 2 + 2?", **kw):
    kw.setdefault("max_tokens", 256)
    return build_body(models.resolve(model), prompt, **kw)


def test_haiku_5_5_requests_turn_thinking_off_and_send_no_sampling_fields(client, fake_api):
    client.send(body("haiku"))
    sent = fake_api.stats()["received"][0]
    assert sent["thinking"] == {"type": "disabled"}
    assert not {"temperature", "top_p", "top_k"} & set(sent)
    assert set(sent) == {"model", "max_tokens", "messages", "thinking"}


def test_other_models_get_no_thinking_field_and_take_a_temperature(client, fake_api):
    client.send(body("haiku-4.5", temperature=0.0))
    sent = fake_api.stats()["received"][0]
    assert "thinking" not in sent and sent["temperature"] == 0.0


def test_a_temperature_the_model_cannot_take_is_refused_before_sending(client, fake_api):
    with pytest.raises(errors.InputError, match="temperature"):
        body("haiku", temperature=0.2)
    assert body("haiku", temperature=1).get("temperature") is None  # its only value: nothing to send
    with pytest.raises(errors.InputError, match="2026-10-21"):
        body("haiku-4.5", temperature=0.5, api_version="2026-10-21")


def test_system_and_prefix_carry_cache_breakpoints_and_the_prompt_does_not(client, fake_api):
    client.send(body("sonnet", prompt="Q?", system="You are terse.", prefix="Shared document."))
    sent = fake_api.stats()["received"][0]
    assert sent["system"] == [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    prefix, prompt = sent["messages"][0]["content"]
    assert prefix == {"type": "text", "text": "Shared document.", "cache_control": {"type": "ephemeral"}}
    assert prompt == {"type": "text", "text": "Q?"}


def test_one_hour_ttl_and_cache_off_shape_the_breakpoints():
    one_hour = body(system="s", prefix="p", cache_ttl="1h")
    assert one_hour["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert one_hour["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    off = body(system="s", prefix="p", cache=False)
    assert "cache_control" not in off["system"][0]
    assert all("cache_control" not in b for b in off["messages"][0]["content"])
    with pytest.raises(errors.InputError, match="cache_ttl"):
        body(cache_ttl="2h")


def test_the_text_comes_from_the_text_blocks_behind_a_thinking_block(client, fake_api):
    fake_api.set_responder(lambda b: "four")
    thinking = body("haiku")
    del thinking["thinking"]  # Haiku 5.5 thinks by default
    reply = client.send(thinking)
    assert reply.raw["content"][0]["type"] == "thinking"
    assert reply.text == "four" and not reply.truncated
    assert reply.usage["output_tokens"] > 0 and reply.request_id and reply.attempts == 1


def test_an_answer_cut_at_max_tokens_is_flagged_truncated(client, fake_api):
    fake_api.set_responder(lambda b: "word " * 200)
    reply = client.send(body("haiku-4.5", max_tokens=5))
    assert reply.truncated and reply.stop_reason == "max_tokens"


def _error(client, b):
    with pytest.raises(errors.APIError) as info:
        client.send(b)
    err = info.value
    for text in (str(err), repr(err), err.message, err.hint or "", str(err.to_json()), repr(client)):
        assert KEY not in text
    return err


def test_400_passes_the_apis_own_message_on(client, fake_api):
    err = _error(client, body("haiku-4.5", max_tokens=100_000))
    assert isinstance(err, errors.BadRequestError) and err.status == 400
    assert "max_tokens: 100000 > 64000" in err.message
    assert fake_api.stats()["requests"] == 1


def test_401_says_to_check_the_key(fake_api, sleeps):
    fake_api.configure(keys={"sk-the-right-one"})
    err = _error(Client(KEY, fake_api.base_url, sleep=sleeps.append), body())
    assert isinstance(err, errors.AuthenticationError)
    assert "ANTHROPIC_API_KEY" in err.hint and sleeps == []


@pytest.mark.parametrize("status, cls", [(402, errors.BillingError), (403, errors.PermissionDeniedError)])
def test_billing_and_permission_errors_are_not_retried(client, fake_api, status, cls):
    fake_api.fail_next(1, status=status)
    err = _error(client, body())
    assert type(err) is cls and err.status == status and fake_api.stats()["requests"] == 1


def test_404_names_the_model_and_how_to_choose_another(client, fake_api):
    err = _error(client, body("claude-nonexistent-9"))
    assert isinstance(err, errors.ModelNotFoundError)
    assert "claude-nonexistent-9" in err.message
    assert "RLM_MODEL" in err.hint and "model=" in err.hint and "claude-haiku-5-5" in err.hint


def test_409_is_retried_and_then_reported_with_the_attempts(client, fake_api, sleeps):
    fake_api.fail_next(3, status=409)
    err = _error(client, body())
    assert isinstance(err, ConflictError) and "after 3 attempts" in err.message
    assert sleeps == [0.5, 1.0]  # min(0.5 * 2**n, 8) with the random factor at 1


def test_413_with_a_non_json_body_is_request_too_large(client, fake_api):
    fake_api.fail_next(1, kind="non_json_413")
    err = _error(client, body())
    assert isinstance(err, errors.RequestTooLargeError) and "413" in err.message
    assert "split" in err.hint


def test_429_waits_the_retry_after_it_was_given(client, fake_api, sleeps):
    fake_api.fail_next(1, status=429, retry_after=1.5)
    assert client.send(body()).attempts == 2
    assert sleeps == [1.5]


def test_429_retry_after_beyond_a_minute_falls_back_to_backoff():
    assert retry_delay(0, {"retry-after": "120"}, rand=lambda: 0.0) == 0.5
    assert retry_delay(1, {"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_delay(10, {}, rand=lambda: 0.0) == 8.0
    assert 0.375 <= retry_delay(0, {}) <= 0.5


def test_a_spend_cap_429_is_not_retried(client, fake_api, sleeps):
    fake_api.fail_next(1, kind="spend_cap")
    err = _error(client, body())
    assert isinstance(err, errors.SpendLimitError) and "spend limit" in err.hint
    assert fake_api.stats()["requests"] == 1 and sleeps == []


@pytest.mark.parametrize("status, cls", [(500, errors.ServerError), (529, errors.OverloadedError),
                                         (429, errors.RateLimitError)])
def test_server_errors_are_retried_twice_then_reported(client, fake_api, status, cls):
    fake_api.fail_next(3, status=status, retry_after=0.01)
    err = _error(client, body())
    assert type(err) is cls and err.status == status
    assert "after 3 attempts" in err.message and fake_api.stats()["requests"] == 3


def test_a_connection_reset_is_retried_and_reported_as_a_connection_error(client, fake_api):
    fake_api.fail_next(3, kind="reset")
    err = _error(client, body())
    assert isinstance(err, errors.APIConnectionError) and err.status is None
    assert err.sent  # the request was written: it may have been billed
    assert fake_api.stats()["requests"] == 3


def test_a_request_with_no_answer_in_time_is_a_timeout(fake_api, sleeps):
    fake_api.fail_next(1, kind="slow", slow_s=2.0)
    slow = Client(KEY, fake_api.base_url, timeout=0.2, max_retries=0, sleep=sleeps.append)
    err = _error(slow, body())
    assert isinstance(err, errors.APITimeoutError) and err.sent


def test_rlm_api_timeout_sets_the_default_request_timeout(fake_api, sleeps, monkeypatch):
    monkeypatch.setenv("RLM_API_TIMEOUT", "0.2")
    fake_api.fail_next(1, kind="slow", slow_s=2.0)
    client = Client(KEY, fake_api.base_url, max_retries=0, sleep=sleeps.append)
    assert client.timeout == 0.2
    assert isinstance(_error(client, body()), errors.APITimeoutError)


def test_a_refused_connection_is_not_counted_as_sent(sleeps):
    err = _error(Client(KEY, "http://127.0.0.1:9", max_retries=0, sleep=sleeps.append), body())
    assert isinstance(err, errors.APIConnectionError) and not err.sent


def test_x_should_retry_overrides_the_status(client, fake_api):
    fake_api.fail_next(1, status=400, should_retry=True)
    assert client.send(body()).attempts == 2
    fake_api.fail_next(1, status=500, should_retry=False)
    _error(client, body())
    assert fake_api.stats()["requests"] == 3


def test_on_retry_sees_every_retry_before_it_is_sent(client, fake_api):
    seen = []
    fake_api.fail_next(2, status=429, retry_after=0.01)
    client.send(body(), on_retry=lambda attempt, error: seen.append((attempt, error.status)))
    assert seen == [(2, 429), (3, 429)]


def test_slow_down_retries_extend_only_rate_limits(client, fake_api):
    fake_api.fail_next(5, status=429, retry_after=0.01)
    assert client.send(body(), slow_down_retries=3).attempts == 6
    fake_api.fail_next(3, status=500)
    assert "after 3 attempts" in _error(client, body()).message  # slow_down_retries=0 by default


def test_no_key_is_a_config_error_and_nothing_is_sent(fake_api, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(errors.ConfigError, match="ANTHROPIC_API_KEY"):
        Client(base_url=fake_api.base_url).send(body())
    assert fake_api.stats()["requests"] == 0


def test_the_key_and_base_url_come_from_the_environment(fake_api, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_api.base_url + "/")
    assert Client().send(body()).text.startswith("echo:")
    headers = fake_api.stats()["headers"][0]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"


def test_one_connection_is_kept_alive_across_requests(client, fake_api):
    client.send(body())
    netloc = fake_api.base_url.split("//")[1]
    first = client._pool.conns[netloc]
    sock = first.sock
    for _ in range(2):
        client.send(body())
    assert client._pool.conns[netloc] is first and first.sock is sock  # the same socket all three times
