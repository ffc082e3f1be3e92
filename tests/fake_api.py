"""A fake Anthropic Messages API, served over real HTTP on 127.0.0.1.

Tests, examples and benchmarks point the client at this server instead of the real API. It behaves like the
real API in everything the project relies on: header and body validation, per-model rules, usage with prompt
caching, thinking blocks, truncation at ``max_tokens``, rate limits, and every error the client must handle.

Design
------
* ``FakeAPI`` owns all state (settings, prompt cache, rate-limit window, fault queue, stats) behind one lock.
  ``FakeAPI.handle()`` turns (method, path, headers, raw body) into a ``_Result``; the HTTP handler only moves
  bytes, sleeps the latency and writes the result, so per-request work stays small.
* A request's cache reads and writes are decided when it arrives. Its entries are marked usable only after its
  latency wait, right before its response is written ("an entry becomes usable only once the first response that
  wrote it has begun"): parallel requests arriving during that wait miss and each pay their own write.
* Tokens are fake but deterministic (``fake_tokens``): ceil(UTF-8 bytes / 4), times 1.3 for Haiku 5.5's newer
  tokenizer, never more than the byte count. A request's input is exactly the sum over its blocks, so a client's
  worst-case estimate by UTF-8 length is always an upper bound.
* TTLs and the requests-per-minute window use the injectable ``clock``; latency uses real sleeps.
* Faults (``fail_next``, ``set_faults``) are taken before validation; faulted requests bill nothing and never
  touch the cache. A "reset" closes the socket with an RST and no response; a "slow" one waits ``slow_s`` seconds
  (longer than the client's timeout) before answering.
* An answer cut at ``max_tokens`` reports ``output_tokens == max_tokens``; otherwise output is the fake tokens of
  the thinking plus the text.
* Latency applies to 200 answers only; errors answer at once. Rate-limit headers are sent only when an rpm
  limit is set.

Replies
-------
The reply text comes from the responder (``set_responder``) if it returns a string, else from the reader if it is
on, else ``"echo: " + the first 200 characters of the prompt text``. The prompt text is the last text block of
the last user message.

The reader (``reader=True``) is a test device, not an AI: it answers from the request's whole text (system +
prefix + prompt). The question is the last line of the prompt that ends with "?" or starts with "Question:" or
"Task:"; without one, the whole prompt is the question. The data is every line of the request except the
question. Rules, first match wins:

1. count: "how many" / "count" / "number of" with a quoted string -> the number of data lines containing it.
2. most frequent: "most frequent" / "most common" -> the most frequent value of the quoted key (default
   ``label``) among ``key: value`` / ``key=value`` pairs; ties go to the value seen first.
3. magic number: "magic|secret|special number" -> every number in sentences like "The special magic number for
   KEY is: 1234567." (optionally only for the quoted key or "for KEY" of the question), in order, joined by ", ".
4. matching lines: "lines" with a quoted string and which/list/show/find/..., or a question about ERROR lines /
   errors in a log -> the data lines containing the string (or "ERROR"), at most 50, one per line.
5. review: summarise / review / issues / problems / bugs -> ``- line N: <text>`` for lines with TODO, FIXME,
   ``eval(``, a bare ``except:``, ``password =`` or a quoted secret/api_key/token literal; N counts within
   the text block.
6. otherwise: ``The text begins with: "<first non-empty data line>"``.

Rules 1-5 answer ``NONE`` when they find nothing.

Standalone: ``python3 tests/fake_api.py [--port N] [--latency S] [--reader] [--rpm N] [--key K]`` prints its base
URL on one line and serves until killed. ``GET /_fake/stats`` returns the counters as JSON.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

OLD_VERSION, NEW_VERSION = "2023-06-01", "2026-10-21"
MAX_BODY = 32 * 1024 * 1024
MAX_BREAKPOINTS = 4
TTLS = {"5m": 300.0, "1h": 3600.0}
SAMPLING = frozenset({"temperature", "top_p", "top_k"})
MESSAGE_FIELDS = frozenset({"model", "max_tokens", "messages", "system", "stop_sequences", "metadata",
                            "thinking", "tools", "tool_choice", "stream"}) | SAMPLING
COUNT_FIELDS = frozenset({"model", "messages", "system", "thinking", "tools", "tool_choice"})
FAULT_KINDS = ("http", "reset", "slow", "spend_cap", "non_json_413")

# The model table: one entry per id; an alias entry names its model. Missing flags mean: old tokenizer, no
# default thinking, prefill allowed.
MODELS: dict[str, dict[str, Any]] = {
    "claude-haiku-5-5": {"max_output": 128_000, "context": 1_000_000, "min_cache": 512, "sampling": "fixed",
                         "newer_tokenizer": True, "thinks": True, "prefill": False},
    "claude-haiku-4-5": {"max_output": 64_000, "context": 200_000, "min_cache": 4096, "sampling": "one_of"},
    "claude-haiku-4-5-20251001": {"alias_of": "claude-haiku-4-5"},
    "claude-sonnet-5-5": {"max_output": 128_000, "context": 1_000_000, "min_cache": 512, "sampling": "one_of"},
    "claude-sonnet-4-6": {"max_output": 128_000, "context": 1_000_000, "min_cache": 1024, "sampling": "one_of"},
    "claude-opus-4-5": {"max_output": 64_000, "context": 200_000, "min_cache": 4096, "sampling": "one_of"},
}

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 409: "conflict_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
ERROR_MESSAGES = {429: "Rate limited: please slow down.", 500: "Internal server error.",
                  504: "Request timed out.", 529: "Overloaded", 409: "Conflict."}
HTML_413 = (b"<html><head><title>413 Request Entity Too Large</title></head><body>"
            b"<center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center></body></html>\n")


def canonical_model(model: Any) -> str | None:
    """The model id behind `model` (resolving aliases), or None if unknown."""
    entry = MODELS.get(model) if isinstance(model, str) else None
    if entry is None:
        return None
    return entry.get("alias_of", model)


def fake_tokens(text: str, model: str = "claude-haiku-5-5") -> int:
    """Deterministic token count: ceil(bytes/4), x1.3 for the newer tokenizer, never above the byte count."""
    size = len(text.encode("utf-8"))
    if size == 0:
        return 0
    tokens = (size + 3) // 4
    spec = MODELS.get(canonical_model(model) or "", {})
    if spec.get("newer_tokenizer"):
        tokens = min((tokens * 13 + 9) // 10, size)
    return tokens


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, details: dict | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers, self.details = headers or {}, details


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


Block = collections.namedtuple("Block", "kind role text ttl")  # ttl: None (no breakpoint), "5m" or "1h"


class _Request:
    """A validated request body."""

    def __init__(self, body: dict, model: str, blocks: list):
        self.body, self.model, self.spec, self.blocks = body, model, MODELS[model], blocks
        self.tokens = [fake_tokens(b.text, model) for b in blocks]
        self.max_tokens = body.get("max_tokens", 0)
        self.stop_sequences = body.get("stop_sequences") or []
        self.prompt = prompt_text(body) or ""
        thinking = (body.get("thinking") or {}).get("type")
        self.thinks = thinking in ("enabled", "adaptive") or (thinking is None and self.spec.get("thinks", False))


# ---------------------------------------------------------------------------------------------- validation

def parse_request(body: Any, version: str, count_only: bool = False) -> _Request:
    """Validate a request body as the real API does; raise ApiError on the first problem."""
    if not isinstance(body, dict):
        raise _bad("body: Input should be a valid dictionary")
    allowed = COUNT_FIELDS if count_only else MESSAGE_FIELDS
    if version == NEW_VERSION:
        allowed = allowed - SAMPLING
    for field in ("model", "messages") if count_only else ("model", "max_tokens", "messages"):
        if field not in body:
            raise _bad(f"{field}: Field required")
    for field in body:
        if field not in allowed:
            raise _bad(f"{field}: Extra inputs are not permitted")
    model = canonical_model(body["model"])
    if model is None:
        raise ApiError(404, f"model: {body['model']}")
    spec = MODELS[model]
    if not count_only:
        _check_max_tokens(body["max_tokens"], model, spec)
    _check_sampling(body, model, spec)
    _check_options(body)
    blocks = _tool_blocks(body.get("tools")) + _system_blocks(body.get("system")) + _message_blocks(body["messages"])
    breakpoints = sum(b.ttl is not None for b in blocks)
    if breakpoints > MAX_BREAKPOINTS:
        raise _bad(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}.")
    if not spec.get("prefill", True) and body["messages"][-1].get("role") == "assistant":
        raise _bad(f"{model} does not support assistant message prefill. "
                   "The conversation must end with a user message.")
    req = _Request(body, model, blocks)
    if sum(req.tokens) > spec["context"]:
        raise _bad(f"prompt is too long: {sum(req.tokens)} tokens > {spec['context']} maximum")
    return req


def _check_max_tokens(value: Any, model: str, spec: dict) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad("max_tokens: Input should be a valid non-negative integer")
    if value > spec["max_output"]:
        raise _bad(f"max_tokens: {value} > {spec['max_output']}, which is the maximum allowed number of "
                   f"output tokens for {model}")


def _check_sampling(body: dict, model: str, spec: dict) -> None:
    for field in ("temperature", "top_p"):
        if field in body and (not isinstance(body[field], (int, float)) or isinstance(body[field], bool)
                              or not 0 <= body[field] <= 1):
            raise _bad(f"{field}: Input should be a number between 0 and 1")
    both = "temperature" in body and "top_p" in body
    if spec["sampling"] == "fixed":
        if "top_k" in body:
            raise _bad(f"top_k: not supported by {model}")
        if both:
            raise _bad(f"temperature and top_p cannot both be specified for {model}")
        if body.get("temperature", 1) != 1:
            raise _bad(f"temperature: {model} only supports temperature 1")
        if body.get("top_p", 0.99) != 0.99:
            raise _bad(f"top_p: {model} only supports top_p 0.99")
    elif both:
        raise _bad(f"`temperature` and `top_p` cannot both be specified for {model}. Please use only one.")


def _check_options(body: dict) -> None:
    thinking = body.get("thinking")
    if thinking is not None and (not isinstance(thinking, dict)
                                 or thinking.get("type") not in ("enabled", "disabled", "adaptive")):
        raise _bad("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
    if body.get("stream"):
        raise _bad("stream: this fake API does not stream; send stream false or leave it out")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        raise _bad("stop_sequences: Input should be a list of non-empty strings")
    if "metadata" in body and not isinstance(body["metadata"], dict):
        raise _bad("metadata: Input should be a valid dictionary")


def _cache_ttl(block: dict, where: str) -> str | None:
    cc = block.get("cache_control")
    if cc is None:
        return None
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral" or set(cc) - {"type", "ttl"}:
        raise _bad(f"{where}.cache_control: Input should be {{'type': 'ephemeral'}} with an optional ttl")
    ttl = cc.get("ttl", "5m")
    if ttl not in TTLS:
        raise _bad(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return ttl


def _text_block(block: Any, where: str, kind: str, role: str) -> Block | None:
    if not isinstance(block, dict):
        raise _bad(f"{where}: Input should be a valid dictionary")
    if block.get("type") in ("thinking", "redacted_thinking") and role == "assistant":
        return None  # thinking of earlier turns is dropped from the context
    if block.get("type") != "text":
        raise _bad(f"{where}.type: this fake API accepts text blocks only, got {block.get('type')!r}")
    for field in block:
        if field not in ("type", "text", "cache_control", "citations"):
            raise _bad(f"{where}.{field}: Extra inputs are not permitted")
    text = block.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _bad(f"{where}: text content blocks must contain non-whitespace text")
    return Block(kind, role, text, _cache_ttl(block, where))


def _tool_blocks(tools: Any) -> list:
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("name") for t in tools):
        raise _bad("tools: Input should be a list of tools with a name")
    return [Block("tool", "", json.dumps({k: v for k, v in t.items() if k != "cache_control"}, sort_keys=True),
                  _cache_ttl(t, f"tools.{i}")) for i, t in enumerate(tools)]


def _system_blocks(system: Any) -> list:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [Block("system", "", system, None)]
    if not isinstance(system, list):
        raise _bad("system: Input should be a valid string or a list of text blocks")
    return [_text_block(b, f"system.{i}", "system", "") for i, b in enumerate(system)]


def _message_blocks(messages: Any) -> list:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: at least one message is required")
    blocks = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        for field in message:
            if field not in ("role", "content"):
                raise _bad(f"messages.{i}.{field}: Extra inputs are not permitted")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not content:
            raise _bad(f"messages.{i}.content: Input should be a non-empty string or list of blocks")
        for j, block in enumerate(content):
            parsed = _text_block(block, f"messages.{i}.content.{j}", "message", role)
            if parsed is not None:
                blocks.append(parsed)
    return blocks


def prompt_text(body: Any) -> str | None:
    """The text of the last text block of the last user message (the prompt without the shared prefix)."""
    try:
        last_user = [m for m in body["messages"] if m.get("role") == "user"][-1]
        content = last_user["content"]
        if isinstance(content, str):
            return content
        return [b["text"] for b in content if b.get("type") == "text"][-1]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------------ the reader

QUOTED = re.compile(r"\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d|(?<!\w)'([^'\n]+)'(?!\w)")
MAGIC_SENTENCE = re.compile(r"(?i)\b(?:magic|secret|special)\s+(?:magic\s+)?numbers?\s+"
                            r"(?:for\s+([^\n]+?)\s+)?is:?\s*(\d+)")
MAGIC_KEY = re.compile(r"(?i)numbers?\s+for\s+(.+?)(?:\s+(?:mentioned|in|from|within|stated)\b.*)?[\s?.!]*$")
FINDING = re.compile(r"TODO|FIXME|\beval\(|\bexcept\s*:|(?i:\bpassword\s*=|\b(?:secret|api_?key|token)\w*\s*=\s*['\"])")


def _quoted(question: str) -> str | None:
    match = QUOTED.search(question)
    return next(g for g in match.groups() if g) if match else None


def _has(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.IGNORECASE) is not None


def _rule_count(question: str, lines: list) -> str | None:
    needle = _quoted(question)
    if needle is None or not _has(r"\b(how many|count|number of)\b", question):
        return None
    return str(sum(needle in line for _, line in lines))


def _rule_most_frequent(question: str, lines: list) -> str | None:
    if not _has(r"\bmost (frequent|common)\b", question):
        return None
    key = re.escape(_quoted(question) or "label")
    pair = re.compile(r"(?:^|[\s,;|(\[{])" + key + r"\s*([:=])\s*(.*)", re.IGNORECASE)
    counts: collections.Counter = collections.Counter()
    for _, line in lines:
        match = pair.search(line)
        if match:
            sep, rest = match.groups()
            value = rest.split()[0] if sep == "=" and rest.split() else re.split(r"[,;|]", rest)[0]
            value = value.strip().rstrip(".,;")
            if value:
                counts[value] += 1
    return counts.most_common(1)[0][0] if counts else "NONE"


def _rule_magic_number(question: str, lines: list) -> str | None:
    if not _has(r"\b(magic|secret|special)\s+numbers?\b", question):
        return None
    key = _quoted(question)
    if key is None:
        match = MAGIC_KEY.search(question)
        key = match.group(1) if match else None
    wanted = key.strip(" '\"").lower() if key else None
    data = "\n".join(line for _, line in lines)
    numbers = [number for found_key, number in MAGIC_SENTENCE.findall(data)
               if wanted is None or found_key.strip(" '\"").lower() == wanted]
    return ", ".join(numbers) or "NONE"


def _rule_matching_lines(question: str, lines: list) -> str | None:
    needle = _quoted(question)
    asks_lines = _has(r"\blines?\b", question) and _has(r"\b(which|list|show|find|return|print|quote|what)\b",
                                                        question)
    if not (needle and asks_lines):
        asks_errors = _has(r"\berror lines\b|\berrors?\b.*\blogs?\b|\blogs?\b.*\berrors?\b", question)
        if not (re.search(r"\bERROR\b", question) or asks_errors):
            return None
        needle = "ERROR"
    hits = [line.rstrip() for _, line in lines if needle in line]
    return "\n".join(hits[:50]) or "NONE"


def _rule_review(question: str, lines: list) -> str | None:
    if not _has(r"\b(summari[sz]e|summary|review|issues?|problems?|bugs?|audit)\b", question):
        return None
    found = [f"- line {number}: {line.strip()}" for number, line in lines if FINDING.search(line)]
    return "\n".join(found[:50]) or "NONE"


def _rule_first_line(question: str, lines: list) -> str:
    first = next((line.strip() for _, line in lines if line.strip()), None)
    return f'The text begins with: "{first[:200]}"' if first else "NONE"


READER_RULES = (_rule_count, _rule_most_frequent, _rule_magic_number, _rule_matching_lines, _rule_review,
                _rule_first_line)


def _question_line(prompt_lines: list) -> int | None:
    for i in range(len(prompt_lines) - 1, -1, -1):
        line = prompt_lines[i].strip()
        if line.endswith("?") or line.lower().startswith(("question:", "task:")):
            return i
    return None


def reader_answer(body: dict) -> str:
    """Answer the question of a request from its own text; see the module docstring for the rules."""
    texts, prompt_index = [], -1
    for block in _system_blocks(body.get("system")) + _message_blocks(body["messages"]):
        texts.append(block.text)
        if block.role == "user":
            prompt_index = len(texts) - 1
    prompt_lines = texts[prompt_index].splitlines() if prompt_index >= 0 else []
    q_index = _question_line(prompt_lines)
    question = prompt_lines[q_index] if q_index is not None else "\n".join(prompt_lines)
    lines = []  # (line number within its block, line) for every line except the question
    for i, text in enumerate(texts):
        for number, line in enumerate(text.splitlines(), 1):
            if i != prompt_index or (q_index is not None and number - 1 != q_index):
                lines.append((number, line))
    for rule in READER_RULES:
        answer = rule(question, lines)
        if answer is not None:
            return answer
    return "NONE"  # not reached: the last rule always answers


# ------------------------------------------------------------------------------------------------- the server

class _Fault:
    def __init__(self, kind: str, status: int = 429, retry_after: float | None = None,
                 should_retry: bool | None = None, match: str | None = None, n: int = 1, slow_s: float = 5.0):
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
        self.kind, self.status, self.retry_after, self.should_retry = kind, status, retry_after, should_retry
        self.match, self.n, self.slow_s = match, n, slow_s


class _Entry:
    __slots__ = ("expires", "ttl", "ready")

    def __init__(self, expires: float, ttl: float):
        self.expires, self.ttl, self.ready = expires, ttl, False


class _Result:
    """What the handler sends: a status with a JSON (dict) or raw (bytes) body, or a connection reset."""

    def __init__(self, status: int = 200, body: Any = None, headers: dict | None = None, stat: Any = None,
                 content_type: str = "application/json", delay: float = 0.0, ready_keys: tuple = (),
                 reset: bool = False):
        self.status, self.body, self.headers, self.content_type = status, body, headers or {}, content_type
        self.stat = status if stat is None else stat
        self.delay, self.ready_keys, self.reset = delay, ready_keys, reset


def _error_result(error: ApiError) -> _Result:
    inner = {"type": ERROR_TYPES.get(error.status, "api_error"), "message": error.message}
    if error.details:
        inner["details"] = error.details
    return _Result(error.status, {"type": "error", "error": inner}, dict(error.headers))


def _retry_headers(seconds: float) -> dict:
    return {"retry-after": str(max(0, math.ceil(seconds))), "retry-after-ms": str(max(0, round(seconds * 1000)))}


def _rfc3339(wall_time: float) -> str:
    return datetime.fromtimestamp(wall_time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fit(text: str, budget: int, model: str) -> tuple:
    """The longest prefix of `text` within `budget` tokens, and whether it was cut."""
    if fake_tokens(text, model) <= budget:
        return text, False
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if fake_tokens(text[:mid], model) <= budget:
            low = mid
        else:
            high = mid - 1
    return text[:low], True


class FakeAPI:
    """The fake API server; starts serving on construction, stops on close() or leaving a `with` block."""

    def __init__(self, latency: float | Callable = 0.0, reader: bool = False, rpm_limit: int | None = None,
                 keys: Any = None, seed: int = 0, clock: Callable[[], float] = time.monotonic, port: int = 0,
                 keep_bodies: bool = True):
        self.clock = clock
        self.latency, self.reader, self.rpm_limit = latency, reader, rpm_limit
        self.keep_bodies = keep_bodies  # off for long benchmarks with big prompts: stats()["received"] stays empty
        self.keys = set(keys) if keys is not None else None
        self._lock = threading.Lock()
        self._responder: Callable | None = None
        self._cache: dict = {}
        self._window: collections.deque = collections.deque()
        self._queued: list = []
        self._ids = itertools.count(1)
        self._in_flight = 0
        self._connections: set = set()
        self.set_faults(seed=seed)
        self.reset_stats()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.api = self
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fake-api", daemon=True)
        self._thread.start()

    # --- lifecycle and settings

    def __enter__(self) -> FakeAPI:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and end open keep-alive connections, so a closed server answers nothing more."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._lock:
            (self._connections.add if is_open else self._connections.discard)(connection)

    def configure(self, **settings) -> None:
        """Change latency, reader, rpm_limit, keys or keep_bodies while serving."""
        for name, value in settings.items():
            if name not in ("latency", "reader", "rpm_limit", "keys", "keep_bodies"):
                raise TypeError(f"configure() got an unknown setting {name!r}")
            setattr(self, name, set(value) if name == "keys" and value is not None else value)

    def set_responder(self, fn: Callable[[dict], str | None] | None) -> None:
        self._responder = fn

    def fail_next(self, n: int = 1, status: int = 429, retry_after: float | None = 1.0, kind: str = "http",
                  should_retry: bool | None = None, match: str | None = None, slow_s: float | None = None) -> None:
        """Give the next n requests (whose prompt text contains `match`, if given) a fault."""
        fault = _Fault(kind, status, retry_after, should_retry, match, n, self._slow_s if slow_s is None else slow_s)
        with self._lock:
            self._queued.append(fault)

    def set_faults(self, rate_429: float = 0.0, rate_529: float = 0.0, rate_500: float = 0.0,
                   rate_reset: float = 0.0, rate_slow: float = 0.0, slow_s: float = 5.0, retry_after: float = 0.05,
                   seed: int = 0) -> None:
        """Random faults at the given rates, drawn from a seeded generator."""
        with self._lock:
            self._rates = [(rate_429, _Fault("http", 429, retry_after)), (rate_529, _Fault("http", 529)),
                           (rate_500, _Fault("http", 500)), (rate_reset, _Fault("reset")),
                           (rate_slow, _Fault("slow", slow_s=slow_s))]
            self._rng, self._slow_s = random.Random(seed), slow_s

    def clear_faults(self) -> None:
        """Drop queued faults and random fault rates."""
        with self._lock:
            self._queued.clear()
        self.set_faults()

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {"requests": 0, "count_tokens_requests": 0, "by_status": collections.Counter(),
                           "by_prompt": collections.Counter(), "answered_by_prompt": collections.Counter(),
                           "billed": dict.fromkeys(("input_tokens", "cache_creation_input_tokens",
                                                    "cache_read_input_tokens", "output_tokens"), 0),
                           "peak_concurrency": 0, "received": [], "headers": []}

    def stats(self) -> dict:
        """A snapshot of the counters (see the module docstring)."""
        with self._lock:
            s = self._stats
            return {"requests": s["requests"], "count_tokens_requests": s["count_tokens_requests"],
                    "by_status": dict(s["by_status"]), "by_prompt": dict(s["by_prompt"]),
                    "answered_by_prompt": dict(s["answered_by_prompt"]), "billed": dict(s["billed"]),
                    "peak_concurrency": s["peak_concurrency"], "in_flight": self._in_flight,
                    "cache_entries": len(self._cache), "received": list(s["received"]),
                    "headers": list(s["headers"])}

    # --- request handling (called by the HTTP handler)

    def handle(self, method: str, path: str, headers: dict, raw: bytes | None) -> _Result:
        """One HTTP request to a result; `raw` is None when the body was over 32 MB."""
        path = path.split("?", 1)[0]
        try:
            if method == "POST" and path == "/v1/messages":
                result = self._messages(headers, raw)
            elif method == "POST" and path == "/v1/messages/count_tokens":
                result = self._count_tokens(headers, raw)
            elif method == "GET" and path == "/_fake/stats":
                snapshot = self.stats()
                snapshot["received"], snapshot["headers"] = len(snapshot["received"]), len(snapshot["headers"])
                result = _Result(200, snapshot)
            else:
                result = _error_result(ApiError(404, f"Not found: {method} {path}"))
        except Exception as exc:  # a bug here or in a responder must still answer, as a 500
            result = _error_result(ApiError(500, f"fake API failure: {exc!r}"))
        result.headers.update(self._ratelimit_headers())
        return result

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._stats["peak_concurrency"] = max(self._stats["peak_concurrency"], self._in_flight)

    def leave(self, ready_keys: tuple = ()) -> None:
        """A response begins (or the request ends without one): the cache entries it wrote become usable.

        Called before the response is written, so a client that has its answer is never counted in flight.
        """
        with self._lock:
            self._in_flight -= 1
            for key in ready_keys:
                entry = self._cache.get(key)
                if entry is not None:
                    entry.ready = True

    def _messages(self, headers: dict, raw: bytes | None) -> _Result:
        now = self.clock()
        body = _json_or_none(raw)
        prompt = prompt_text(body)
        with self._lock:
            s = self._stats
            s["requests"] += 1
            s["headers"].append(headers)
            if body is not None and self.keep_bodies:
                s["received"].append(body)
            if prompt is not None:
                s["by_prompt"][prompt] += 1
        result = self._messages_result(headers, raw, body, prompt or "", now)
        with self._lock:
            self._stats["by_status"][result.stat] += 1
        return result

    def _messages_result(self, headers: dict, raw: bytes | None, body: Any, prompt: str, now: float) -> _Result:
        if raw is None:
            return _Result(413, HTML_413, {"connection": "close"}, content_type="text/html")
        fault = self._take_fault(prompt)
        if fault is not None and fault.kind != "slow":
            return _fault_result(fault)
        try:
            req = parse_request(self._checked_body(headers, body), self._check_headers(headers))
            self._admit(now)
            result = self._answer(req, now, billed=fault is None)
        except ApiError as error:
            result = _error_result(error)
        if fault is not None:
            result.delay, result.stat = fault.slow_s, "slow"
            if fault.should_retry is not None:
                result.headers["x-should-retry"] = "true" if fault.should_retry else "false"
        return result

    def _count_tokens(self, headers: dict, raw: bytes | None) -> _Result:
        with self._lock:
            self._stats["count_tokens_requests"] += 1
        if raw is None:
            return _Result(413, HTML_413, {"connection": "close"}, content_type="text/html")
        try:
            body = self._checked_body(headers, _json_or_none(raw))
            req = parse_request(body, self._check_headers(headers), count_only=True)
        except ApiError as error:
            return _error_result(error)
        return _Result(200, {"input_tokens": sum(req.tokens)})

    def _check_headers(self, headers: dict) -> str:
        """Authenticate and return the API version."""
        version = headers.get("anthropic-version")
        key = headers.get("x-api-key")
        bearer = headers.get("authorization", "")
        if not key and version == NEW_VERSION and bearer.startswith("Bearer "):
            key = bearer[len("Bearer "):]
        if not key:
            raise ApiError(401, "x-api-key header is required")
        if self.keys is not None and key not in self.keys:
            raise ApiError(401, "invalid x-api-key")
        if version is None:
            raise _bad("anthropic-version: header is required")
        if version not in (OLD_VERSION, NEW_VERSION):
            raise _bad(f"anthropic-version: {version!r} is not a valid version")
        return version

    @staticmethod
    def _checked_body(headers: dict, body: Any) -> Any:
        if body is None:
            raise _bad("There was an error parsing the body: it is not valid JSON")
        return body

    def _take_fault(self, prompt: str) -> _Fault | None:
        with self._lock:
            for fault in self._queued:
                if fault.match is None or fault.match in prompt:
                    fault.n -= 1
                    if fault.n <= 0:
                        self._queued.remove(fault)
                    return fault
            if not any(rate for rate, _ in self._rates):
                return None
            draw = self._rng.random()
            for rate, fault in self._rates:
                if draw < rate:
                    return fault
                draw -= rate
        return None

    def _admit(self, now: float) -> None:
        """The requests-per-minute limit: a sliding window of accepted requests."""
        limit = self.rpm_limit
        if not limit:
            return
        with self._lock:
            self._prune_window(now)
            if len(self._window) >= limit:
                wait = self._window[0] + 60.0 - now
                headers = _retry_headers(wait)
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                raise ApiError(429, f"This request would exceed your organization's rate limit of {limit} "
                                    "requests per minute.", headers)
            self._window.append(now)

    def _prune_window(self, now: float) -> None:
        while self._window and self._window[0] <= now - 60.0:
            self._window.popleft()

    def _ratelimit_headers(self) -> dict:
        limit = self.rpm_limit
        if not limit:
            return {}
        now = self.clock()
        with self._lock:
            self._prune_window(now)
            used = len(self._window)
            full_at = self._window[-1] + 60.0 if used else now
        return {"anthropic-ratelimit-requests-limit": str(limit),
                "anthropic-ratelimit-requests-remaining": str(max(0, limit - used)),
                "anthropic-ratelimit-requests-reset": _rfc3339(time.time() + (full_at - now))}

    # --- a 200 answer

    def _answer(self, req: _Request, now: float, billed: bool) -> _Result:
        if billed:
            usage, written = self._use_cache(req, now)
        else:  # a faulted ("slow") request neither reads nor writes the cache
            usage, written = _usage(sum(req.tokens)), ()
        reply = self._reply_text(req)
        thinking = f"Let me work out: {req.prompt[:100]}" if req.thinks else ""
        content, output_tokens, stop_reason, stop_sequence = _content(req, reply, thinking)
        usage["output_tokens"] = output_tokens
        if billed:
            self._bill(usage, req.prompt)
        message = {"id": f"msg_fake{next(self._ids):020d}", "type": "message", "role": "assistant",
                   "model": req.body["model"], "content": content, "stop_reason": stop_reason,
                   "stop_sequence": stop_sequence, "usage": usage}
        delay = self.latency(req.body) if callable(self.latency) else self.latency
        return _Result(200, message, delay=delay, ready_keys=tuple(written))

    def _reply_text(self, req: _Request) -> str:
        if self._responder is not None:
            text = self._responder(req.body)
            if isinstance(text, str):
                return text
        if self.reader:
            return reader_answer(req.body)
        return "echo: " + req.prompt[:200]

    def _bill(self, usage: dict, prompt: str) -> None:
        with self._lock:
            for field in self._stats["billed"]:
                self._stats["billed"][field] += usage[field]
            self._stats["answered_by_prompt"][prompt] += 1

    def _use_cache(self, req: _Request, now: float) -> tuple:
        """Usage of the input side with prompt caching, and the cache keys this request wrote."""
        total = sum(req.tokens)
        breakpoints = [i for i, block in enumerate(req.blocks) if block.ttl is not None]
        cumulative = list(itertools.accumulate(req.tokens))
        minimum = req.spec["min_cache"]
        if not breakpoints or cumulative[breakpoints[-1]] < minimum:
            return _usage(total), ()  # too short to cache: silently not cached
        last = breakpoints[-1]
        keys = _prefix_keys(req, last)
        written, split = [], {"5m": 0, "1h": 0}
        with self._lock:
            hit = self._longest_hit(keys, now)
            read = cumulative[hit] if hit >= 0 else 0
            previous = read
            for i in breakpoints:
                if cumulative[i] <= read or cumulative[i] < minimum:
                    continue  # already cached, or too short on its own: its tokens go to the next breakpoint
                split[req.blocks[i].ttl] += cumulative[i] - previous
                previous = cumulative[i]
                self._write_entry(keys[i], TTLS[req.blocks[i].ttl], now)
                written.append(keys[i])
        usage = _usage(total - cumulative[last], read=read, write_5m=split["5m"], write_1h=split["1h"])
        return usage, written

    def _longest_hit(self, keys: list, now: float) -> int:
        for i in range(len(keys) - 1, -1, -1):
            entry = self._cache.get(keys[i])
            if entry is not None and entry.ready and entry.expires > now:
                entry.expires = now + entry.ttl  # a read refreshes the entry
                return i
        return -1

    def _write_entry(self, key: str, ttl: float, now: float) -> None:
        entry = self._cache.get(key)
        if entry is None or entry.expires <= now:
            if len(self._cache) > 50_000:  # keep memory bounded in long benchmarks
                self._cache = {k: e for k, e in self._cache.items() if e.expires > now}
            self._cache[key] = _Entry(now + ttl, ttl)
        else:  # a parallel writer of an entry not yet usable: it stays pending until a response begins
            entry.expires, entry.ttl = max(entry.expires, now + ttl), max(entry.ttl, ttl)


def _json_or_none(raw: bytes | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _usage(input_tokens: int, read: int = 0, write_5m: int = 0, write_1h: int = 0) -> dict:
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": write_5m + write_1h,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": 0, "service_tier": "standard"}


def _prefix_keys(req: _Request, last: int) -> list:
    """Cache keys of every prefix up to block `last`: a running hash of the model and the blocks' content."""
    digest = hashlib.sha256(req.model.encode() + b"\0")
    keys = []
    for block in req.blocks[:last + 1]:
        text = block.text.encode("utf-8")
        digest.update(f"{block.kind}\0{block.role}\0{len(text)}\0".encode() + text)
        keys.append(digest.hexdigest())
    return keys


def _content(req: _Request, reply: str, thinking: str) -> tuple:
    """Content blocks within max_tokens: (content, output_tokens, stop_reason, stop_sequence)."""
    if req.max_tokens == 0:
        return [], 0, "max_tokens", None
    content, used = [], 0
    if thinking:
        part, cut = _fit(thinking, req.max_tokens, req.model)
        used = fake_tokens(part, req.model)
        content.append({"type": "thinking", "thinking": part, "signature": "x"})
        if cut:  # a cut answer used every token it was allowed, as the real API reports
            return content, req.max_tokens, "max_tokens", None
    stop_sequence = None
    for sequence in req.stop_sequences:
        at = reply.find(sequence)
        if at >= 0 and (stop_sequence is None or at < reply.find(stop_sequence)):
            stop_sequence = sequence
    if stop_sequence is not None:
        reply = reply[:reply.find(stop_sequence)]
    part, cut = _fit(reply, req.max_tokens - used, req.model)
    if part or not cut:
        content.append({"type": "text", "text": part})
    used += fake_tokens(part, req.model)
    if cut:
        return content, req.max_tokens, "max_tokens", None
    return content, used, ("stop_sequence" if stop_sequence else "end_turn"), stop_sequence


def _fault_result(fault: _Fault) -> _Result:
    if fault.kind == "reset":
        return _Result(stat="reset", reset=True)
    if fault.kind == "non_json_413":
        result = _Result(413, HTML_413, {"connection": "close"}, content_type="text/html")
    elif fault.kind == "spend_cap":
        result = _error_result(ApiError(429, "You have reached your specified workspace API usage limits.",
                                        details={"error_code": "enforced_spend_limit_reached"}))
    else:
        headers = _retry_headers(fault.retry_after) if fault.status == 429 and fault.retry_after is not None else {}
        result = _error_result(ApiError(fault.status, ERROR_MESSAGES.get(fault.status, "Injected error."), headers))
    if fault.should_retry is not None:
        result.headers["x-should-retry"] = "true" if fault.should_retry else "false"
    return result


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that give up (timeouts, resets) are part of the tests; stay quiet


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "fake-anthropic/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would slow benchmarks and flood test output

    def setup(self) -> None:
        super().setup()
        self.server.api.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api.track(self.connection, False)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        api = self.server.api
        api.enter()
        in_flight = True
        try:
            raw = self._read_body()
            headers = {name.lower(): value for name, value in self.headers.items()}
            result = api.handle(method, self.path, headers, raw)
            if result.delay > 0:
                time.sleep(result.delay)
            api.leave(result.ready_keys)
            in_flight = False
            if result.reset:
                self._reset()
            else:
                self._send(result)
        except OSError:  # the client went away
            self.close_connection = True
        finally:
            if in_flight:
                api.leave()

    def _read_body(self) -> bytes | None:
        """The request body; None (after draining it) when it is over 32 MB."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.close_connection = True  # not supported; the unread body makes the connection unusable
            return b""
        length = int(self.headers.get("content-length") or 0)
        if length <= MAX_BODY:
            return self.rfile.read(length)
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)
        return None

    def _send(self, result: _Result) -> None:
        body = result.body
        if isinstance(body, dict):
            request_id = f"req_fake{uuid.uuid4().hex[:24]}"
            if body.get("type") == "error":
                body["request_id"] = request_id
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        else:
            request_id, payload = f"req_fake{uuid.uuid4().hex[:24]}", body
        self.send_response(result.status, "Overloaded" if result.status == 529 else None)
        self.send_header("content-type", result.content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("request-id", request_id)
        for name, value in result.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _reset(self) -> None:
        """Close the connection with an RST and no response."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the file's reference so close() really closes the socket
        self.connection.close()


def main(argv: list | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Anthropic Messages API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each 200 answer")
    parser.add_argument("--reader", action="store_true", help="answer questions from the request's text")
    parser.add_argument("--rpm", type=int, default=None, help="requests-per-minute limit")
    parser.add_argument("--key", action="append", help="accepted API key (repeatable; default: any key)")
    args = parser.parse_args(argv)
    api = FakeAPI(latency=args.latency, reader=args.reader, rpm_limit=args.rpm, keys=args.key, port=args.port,
                  keep_bodies=False)  # nobody can read them: /_fake/stats reports counts
    print(api.base_url, flush=True)
    try:
        threading.Event().wait()  # serve until killed
    except KeyboardInterrupt:
        pass
    finally:
        api.close()


if __name__ == "__main__":
    main()
