"""The model registry: ids, aliases, prices, worst cases."""
from __future__ import annotations

import pytest

from rlmcore import models


@pytest.mark.parametrize("name, model_id", [
    ("haiku", "claude-haiku-5-5"),
    ("sonnet", "claude-sonnet-5-5"),
    ("opus", "claude-opus-4-5"),
    ("haiku-4.5", "claude-haiku-4-5"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("sonnet-4.6", "claude-sonnet-4-6"),
    ("claude-sonnet-4-6", "claude-sonnet-4-6"),
])
def test_aliases_and_dated_ids_resolve_to_the_model_id(name, model_id):
    info = models.resolve(name)
    assert info["id"] == model_id and info["known"]


def test_every_model_entry_has_every_field():
    fields = set(models.MODELS["claude-haiku-4-5"])
    for model_id, info in models.MODELS.items():
        assert set(info) == fields, model_id


def test_an_unknown_id_is_let_through_at_the_dearest_known_prices():
    info = models.resolve("llama-local")
    assert info["id"] == "llama-local" and info["known"] is False
    usage = {"input_tokens": 1000, "output_tokens": 1000}
    dearest = max(models.cost_usd(m, usage) for m in models.MODELS)
    assert models.cost_usd(info, usage) >= dearest


def test_haiku_5_5_costs_more_per_token_above_100k_tokens_of_prompt():
    small = models.cost_usd("haiku", {"input_tokens": 100_000, "output_tokens": 1000})
    assert small == pytest.approx((100_000 * 0.10 + 1000 * 0.50) / 1e6)
    # Cache reads count toward the prompt length that picks the tier.
    big = models.cost_usd("haiku", {"input_tokens": 1, "cache_read_input_tokens": 100_000, "output_tokens": 1000})
    assert big == pytest.approx((1 * 0.50 + 100_000 * 0.50 * 0.1 + 1000 * 2.50) / 1e6)


def test_cache_writes_and_reads_are_priced_by_their_multipliers():
    usage = {"input_tokens": 0, "cache_creation_input_tokens": 1_000_000, "output_tokens": 0}
    assert models.cost_usd("haiku-4.5", usage) == pytest.approx(1.25)
    assert models.cost_usd("haiku-4.5", usage, cache_ttl="1h") == pytest.approx(2.0)
    split = dict(usage, cache_creation={"ephemeral_5m_input_tokens": 500_000, "ephemeral_1h_input_tokens": 500_000})
    assert models.cost_usd("haiku-4.5", split) == pytest.approx(0.625 + 1.0)
    read = {"cache_read_input_tokens": 1_000_000}
    assert models.cost_usd("haiku-4.5", read) == pytest.approx(0.1)
    assert models.cost_usd("sonnet", read) == pytest.approx(2.0 * 0.05)


def test_worst_case_prices_every_byte_as_a_cache_write_plus_all_output():
    assert models.worst_case_usd("haiku-4.5", 1000, 100) == pytest.approx((1000 * 1.25 + 100 * 5) / 1e6)
    assert models.worst_case_usd("haiku-4.5", 1000, 100, "1h") == pytest.approx((1000 * 2 + 100 * 5) / 1e6)
    # The worst case of a long prompt falls in Haiku 5.5's dearer tier.
    assert models.worst_case_usd("haiku", 200_000, 0) == pytest.approx(200_000 * 1.25 * 0.50 / 1e6)
    assert models.worst_case_tokens(1000, 100) == 1100


def test_worst_case_is_never_below_the_real_cost_of_a_request():
    for model_id in models.MODELS:
        text_bytes, max_tokens = 40_000, 500
        for usage in ({"input_tokens": text_bytes, "output_tokens": max_tokens},
                      {"cache_creation_input_tokens": text_bytes, "output_tokens": max_tokens},
                      {"cache_read_input_tokens": text_bytes, "output_tokens": max_tokens}):
            assert models.cost_usd(model_id, usage) <= models.worst_case_usd(model_id, text_bytes, max_tokens)


def test_token_estimates_follow_the_models_tokenizer():
    text = "x" * 4000
    assert models.estimate_tokens("haiku-4.5", text) == 1000
    assert models.estimate_tokens("haiku", text) == 1300
