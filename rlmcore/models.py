"""The model registry, as data, and what requests to those models cost.

``MODELS`` holds one entry per model id; adding a model is adding one entry.
Prices are USD per million tokens and come in tiers keyed by the total input
of the request (input + cache writes + cache reads): Haiku 5.5 costs more per
token once a prompt passes 100k tokens, the others have a single tier.

``resolve(name)`` accepts an id, a dated id or a short alias. An id we do not
know is let through (proxies and local servers speak the same API under other
names) but priced at the dearest known prices, so a budget still holds.

``worst_case_usd`` bounds what one request can cost before it is sent: a token
is at least one byte, so the UTF-8 length of the request bounds its input
tokens; all of them are priced as a cache write (the dearest way input can be
billed) and the output as the full ``max_tokens``. Budgets reserve that much
and settle with ``cost_usd`` of the real usage.
"""
from __future__ import annotations

import math

M = 1_000_000

# Sampling rules: a set of allowed values, "any", or None (not accepted).
# "exclusive" means temperature and top_p may not be sent together.
MODELS = {
    "claude-haiku-5-5": {
        "aliases": ["haiku", "haiku-5.5", "haiku-5-5"],
        "tiers": [(100_000, 0.10, 0.50), (None, 0.50, 2.50)],
        "cache_read": 0.1,
        "context": 1_000_000,
        "max_output": 128_000,
        "min_cache": 512,
        "tokenizer": 1.3,  # about 30% more tokens than Haiku 4.5 for the same text
        "temperature": {1}, "top_p": {0.99}, "top_k": None, "exclusive": True,
        "thinking_default": True,  # thinks unless told not to; sub-calls turn it off
    },
    "claude-haiku-4-5": {
        "aliases": ["haiku-4.5", "haiku-4-5", "claude-haiku-4-5-20251001"],
        "tiers": [(None, 1.0, 5.0)],
        "cache_read": 0.1,
        "context": 200_000,
        "max_output": 64_000,
        "min_cache": 4096,
        "tokenizer": 1.0,
        "temperature": "any", "top_p": "any", "top_k": "any", "exclusive": True,
        "thinking_default": False,
    },
    "claude-sonnet-5-5": {
        "aliases": ["sonnet", "sonnet-5.5", "sonnet-5-5"],
        "tiers": [(None, 2.0, 10.0)],
        "cache_read": 0.05,
        "context": 1_000_000,
        "max_output": 128_000,
        "min_cache": 512,
        "tokenizer": 1.0,
        "temperature": "any", "top_p": "any", "top_k": "any", "exclusive": True,
        "thinking_default": False,
    },
    "claude-sonnet-4-6": {
        "aliases": ["sonnet-4.6", "sonnet-4-6"],
        "tiers": [(None, 3.0, 15.0)],
        "cache_read": 0.1,
        "context": 1_000_000,
        "max_output": 128_000,
        "min_cache": 1024,
        "tokenizer": 1.0,
        "temperature": "any", "top_p": "any", "top_k": "any", "exclusive": True,
        "thinking_default": False,
    },
    "claude-opus-4-5": {
        "aliases": ["opus", "opus-4.5", "opus-4-5", "claude-opus-4-5-20251101"],
        "tiers": [(None, 5.0, 25.0)],
        "cache_read": 0.1,
        "context": 200_000,
        "max_output": 64_000,
        "min_cache": 4096,
        "tokenizer": 1.0,
        "temperature": "any", "top_p": "any", "top_k": "any", "exclusive": True,
        "thinking_default": False,
    },
}

CACHE_WRITE = {"5m": 1.25, "1h": 2.0}

_ALIASES = {alias: mid for mid, info in MODELS.items() for alias in info["aliases"]}


def _unknown(model_id: str) -> dict:
    """An id we do not know: the dearest known prices, so a budget still holds."""
    top_in = max(t[1] for m in MODELS.values() for t in m["tiers"])
    top_out = max(t[2] for m in MODELS.values() for t in m["tiers"])
    return {
        "id": model_id, "known": False, "aliases": [],
        "tiers": [(None, top_in, top_out)],
        "cache_read": max(m["cache_read"] for m in MODELS.values()),
        "context": None, "max_output": None,
        "min_cache": max(m["min_cache"] for m in MODELS.values()),
        "tokenizer": max(m["tokenizer"] for m in MODELS.values()),
        # Send only the plain fields every server of this API understands.
        "temperature": "any", "top_p": "any", "top_k": "any", "exclusive": False,
        "thinking_default": False,
    }


def resolve(name: str) -> dict:
    """Model info for an id, dated id or alias; ``known`` is False for others."""
    name = (name or "").strip()
    model_id = _ALIASES.get(name, name) if name not in MODELS else name
    if model_id in MODELS:
        return dict(MODELS[model_id], id=model_id, known=True)
    return _unknown(name)


def known_ids() -> list:
    return sorted(MODELS)


def _info(model) -> dict:
    return model if isinstance(model, dict) else resolve(model)


def _tier(info: dict, total_input: int):
    for limit, price_in, price_out in info["tiers"]:
        if limit is None or total_input <= limit:
            return price_in, price_out
    return info["tiers"][-1][1:]


def estimate_tokens(model, text: str) -> int:
    """A rough token count (4 bytes a token, scaled by the model's tokenizer)."""
    nbytes = len(text.encode("utf-8"))
    return math.ceil(nbytes / 4 * _info(model)["tokenizer"])


def cost_usd(model, usage: dict, cache_ttl: str | None = None) -> float:
    """What a response with this ``usage`` cost.

    Cache writes are split by ``usage["cache_creation"]`` when the API gives
    the split; otherwise they are priced at ``cache_ttl``'s rate (5m default).
    """
    info = _info(model)
    fresh = usage.get("input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    read = usage.get("cache_read_input_tokens") or 0
    out = usage.get("output_tokens") or 0
    price_in, price_out = _tier(info, fresh + write + read)
    split = usage.get("cache_creation") or {}
    write_1h = split.get("ephemeral_1h_input_tokens") or 0
    if not split and cache_ttl == "1h":
        write_1h = write
    write_5m = max(write - write_1h, 0)
    input_units = (fresh + write_5m * CACHE_WRITE["5m"] + write_1h * CACHE_WRITE["1h"]
                   + read * info["cache_read"])
    return (input_units * price_in + out * price_out) / M


def worst_case_usd(model, input_bytes: int, max_tokens: int, cache_ttl: str | None = None) -> float:
    """The most one request can cost: every input byte a token written to cache."""
    info = _info(model)
    price_in, price_out = _tier(info, input_bytes)
    write = CACHE_WRITE["1h"] if cache_ttl == "1h" else CACHE_WRITE["5m"]
    return (input_bytes * write * price_in + max_tokens * price_out) / M


def worst_case_tokens(input_bytes: int, max_tokens: int) -> int:
    return input_bytes + max_tokens
