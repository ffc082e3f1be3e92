"""One Messages API request: the body, the HTTP exchange, errors and retries.

``build_body`` makes a request body that holds only the fields the chosen model
accepts, with ``cache_control`` breakpoints on the shared ``system`` and
``prefix`` blocks. ``Client.send`` posts it and retries the way the official
SDK does: ``x-should-retry`` decides when present; otherwise connection
errors, timeouts, 408, 409, 429 and 5xx are retried, at most ``max_retries``
times, after ``retry-after-ms``/``retry-after`` when that is 0-60 s and after a
jittered exponential backoff otherwise. A 429 that reports the organisation's
spend cap is never retried: waiting does not lift it.

Failures become the ``APIError`` subclasses of ``errors.py`` with messages a
person can act on. The API key is read only when a request is about to be
sent, lives only in the request header, and is scrubbed from any text the
server sends back, so it cannot reach a message, a log or the ledger.

HTTP is ``http.client`` with one keep-alive connection per thread and host:
a batch of many small requests then pays the TCP/TLS handshake once per
thread instead of once per request.
"""
from __future__ import annotations

import http.client
import json
import random
import select
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from . import config, models
from .ledger import answer_text
from .errors import (
    APIConnectionError, APIError, APITimeoutError, AuthenticationError, BadRequestError,
    BillingError, ConfigError, InputError, ModelNotFoundError, OverloadedError,
    PermissionDeniedError, RateLimitError, RequestTooLargeError, ServerError, SpendLimitError,
)

DEFAULT_VERSION = "2023-06-01"
# Under this API version temperature, top_p and top_k no longer exist.
NO_SAMPLING_VERSIONS = ("2026-10-21",)


class ConflictError(APIError):
    type = "conflict_error"


# ---------------------------------------------------------------- request body

def _cache_control(cache: bool, cache_ttl: str | None):
    if not cache:
        return None
    if cache_ttl not in (None, "5m", "1h"):
        raise InputError(f"cache_ttl={cache_ttl!r} is not a cache lifetime", 'use cache_ttl="5m" or "1h"')
    return {"type": "ephemeral", "ttl": "1h"} if cache_ttl == "1h" else {"type": "ephemeral"}


def _text_block(text: str, cache_control) -> dict:
    block = {"type": "text", "text": text}
    if cache_control:
        block["cache_control"] = cache_control
    return block


def _check_temperature(info: dict, temperature, api_version: str) -> bool:
    """True when ``temperature`` should be sent; InputError when it cannot be."""
    if temperature is None:
        return False
    rule = info["temperature"]
    if api_version in NO_SAMPLING_VERSIONS:
        raise InputError(f"API version {api_version} takes no temperature",
                         "leave temperature unset, or use anthropic-version 2023-06-01")
    if rule is None or (rule != "any" and temperature not in rule):
        allowed = "nothing" if rule is None else " or ".join(map(str, sorted(rule)))
        raise InputError(f"{info['id']} does not accept temperature={temperature!r}",
                         f"it accepts {allowed}; leave temperature unset or choose another model")
    # A model that accepts only its default value gains nothing from hearing it.
    return rule == "any"


def build_body(model_info: dict, prompt: str, *, system=None, prefix=None, max_tokens: int,
               cache: bool = True, cache_ttl=None, temperature=None,
               api_version: str = DEFAULT_VERSION) -> dict:
    """The request body for one sub-call, with only fields the model accepts."""
    cc = _cache_control(cache, cache_ttl)
    content = []
    if prefix:
        content.append(_text_block(prefix, cc))
    content.append({"type": "text", "text": prompt})
    body = {"model": model_info["id"], "max_tokens": int(max_tokens),
            "messages": [{"role": "user", "content": content}]}
    if system:
        body["system"] = [_text_block(system, cc)]
    if _check_temperature(model_info, temperature, api_version):
        body["temperature"] = temperature
    if model_info.get("thinking_default"):
        # Thinking tokens count against max_tokens and cost output: sub-calls
        # want the answer, not the reasoning.
        body["thinking"] = {"type": "disabled"}
    return body


# ---------------------------------------------------------------- response

class Response:
    """A successful reply. ``usage`` keeps the API's own field names."""

    def __init__(self, raw: dict, request_id, attempts: int, latency_s: float):
        self.raw = raw
        self.text = answer_text(raw)
        self.stop_reason = raw.get("stop_reason")
        self.truncated = self.stop_reason == "max_tokens"
        self.usage = dict(raw.get("usage") or {})
        self.request_id = request_id or raw.get("id")
        self.attempts = attempts
        self.latency_s = latency_s

    def __repr__(self):
        return (f"Response(stop_reason={self.stop_reason!r}, chars={len(self.text)}, "
                f"attempts={self.attempts}, request_id={self.request_id!r})")


# ---------------------------------------------------------------- errors

_BY_STATUS = {
    400: (BadRequestError, "fix the request; the API's message above says what it refused"),
    401: (AuthenticationError, "check ANTHROPIC_API_KEY: it is missing, mistyped or revoked"),
    402: (BillingError, "check the billing settings of the organisation in the Anthropic Console"),
    403: (PermissionDeniedError, "this key may not use this model or endpoint; check its permissions"),
    404: (ModelNotFoundError, None),  # the hint names the known models, see _to_error
    408: (APITimeoutError, "try again later, or send smaller requests"),
    409: (ConflictError, "try again later"),
    413: (RequestTooLargeError, "send less text per request (the limit is 32 MB): split the input"),
    429: (RateLimitError, "wait a minute, lower concurrency=, or ask for a higher rate limit"),
    504: (APITimeoutError, "try again later, or send smaller requests"),
    529: (OverloadedError, "the API is overloaded; try again in a few minutes"),
}


class _Failure(Exception):
    """One failed attempt, before it is turned into an APIError."""

    def __init__(self, status, api_type, message, headers=None, request_id=None,
                 sent=False, spend_cap=False, timeout=False):
        super().__init__(message)
        self.status, self.api_type, self.message = status, api_type, message
        self.headers = headers or {}
        self.request_id, self.sent = request_id, sent
        self.spend_cap, self.timeout = spend_cap, timeout


def _parse_error(status: int, headers, raw: bytes) -> _Failure:
    try:
        body = json.loads(raw.decode("utf-8"))
        err = body.get("error") or {}
        api_type, message = err.get("type"), err.get("message") or ""
        details = err.get("details") or {}
        request_id = body.get("request_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        # A proxy in front of the API may answer with HTML or plain text.
        api_type, details, request_id = None, {}, None
        message = raw[:200].decode("utf-8", "replace").strip()
    spend_cap = status == 429 and details.get("error_code") == "enforced_spend_limit_reached"
    return _Failure(status, api_type or f"http_{status}", message, headers,
                    headers.get("request-id") or request_id, spend_cap=spend_cap)


def _error_class(f: _Failure):
    if f.status is None:
        return (APITimeoutError if f.timeout else APIConnectionError), None
    if f.spend_cap:
        return SpendLimitError, "raise the spend limit in the Anthropic Console, or wait for it to reset"
    if f.status in _BY_STATUS:
        return _BY_STATUS[f.status]
    if f.status >= 500:
        return ServerError, "the API failed; try again later"
    return APIError, None


def _to_error(f: _Failure, attempts: int, model: str, base_url: str, key) -> APIError:
    cls, hint = _error_class(f)
    said = _redact(f.message, key)
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    where = f"HTTP {f.status}" if f.status else "no response"
    if f.status == 404:
        message = f"model {model!r} was not found at {base_url} ({where}: {said})"
        hint = ("choose another model with model=... (a session's default is set by 'start --model' or the "
                "RLM_MODEL of its start); known ids: "
                + ", ".join(models.known_ids()) + "; or check ANTHROPIC_BASE_URL")
    elif f.status == 400:
        message = f"the API refused the request ({f.api_type}, {where}): {said}"
    elif f.spend_cap:
        message = f"the organisation's spend cap is reached ({where}: {said})"
    else:
        message = f"{f.api_type} {tries} ({where}): {said}"
    if f.status is None:
        hint = (f"check the network and ANTHROPIC_BASE_URL ({base_url})" if not f.timeout
                else "try again later, send smaller requests or a smaller max_tokens")
    return cls(message, hint, status=f.status, api_type=f.api_type, request_id=f.request_id,
               retryable=_retryable(f), retry_after=_retry_after(f.headers), attempts=attempts, sent=f.sent)


def _redact(text: str, key) -> str:
    if key and text:
        text = text.replace(key, "[redacted]")
    return text


# ---------------------------------------------------------------- retry policy

def _retryable(f: _Failure) -> bool:
    if f.spend_cap:
        return False
    flag = (f.headers.get("x-should-retry") or "").strip().lower()
    if flag in ("true", "false"):
        return flag == "true"
    return f.status is None or f.status in (408, 409, 429) or f.status >= 500


def _retry_after(headers) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return float(raw) / scale
        except ValueError:
            continue  # an HTTP date: fall back to the backoff
    return None


def is_slow_down(error: APIError) -> bool:
    """A rate limit (not a spend cap) or an overload: the API asks for fewer requests."""
    return isinstance(error, (RateLimitError, OverloadedError))


def retry_delay(retries_done: int, headers, rand=random.random) -> float:
    """How long to wait before the next retry (the SDK's rule)."""
    after = _retry_after(headers)
    if after is not None and 0 < after <= 60:
        return after
    return min(0.5 * 2 ** retries_done, 8.0) * (1 - 0.25 * rand())


# ---------------------------------------------------------------- HTTP

class _Pool(threading.local):
    def __init__(self):
        self.conns = {}


class Client:
    """Sends request bodies to ``{base_url}/v1/messages`` with retries."""

    def __init__(self, api_key=None, base_url=None, *, timeout=None, max_retries=2,
                 sleep=time.sleep, rand=random.random, anthropic_version=DEFAULT_VERSION):
        self._key = api_key  # None: read ANTHROPIC_API_KEY when a request is sent
        self._base_url = base_url
        self._timeout = timeout  # None: read RLM_API_TIMEOUT when a request is sent
        self.max_retries = max_retries
        self.sleep = sleep
        self.rand = rand
        self.anthropic_version = anthropic_version
        self._pool = _Pool()

    def __repr__(self):
        return f"Client(base_url={self.base_url!r}, max_retries={self.max_retries})"

    @property
    def timeout(self) -> float:
        return self._timeout if self._timeout is not None else config.api_timeout()

    @property
    def base_url(self) -> str:
        return (self._base_url or config.base_url()).rstrip("/")

    def check_key(self) -> None:
        """ConfigError unless a key is set (checked before reserving budget)."""
        self._api_key()

    def _api_key(self) -> str:
        key = self._key or config.api_key()
        if not key:
            raise ConfigError("no API key: ANTHROPIC_API_KEY is not set",
                              "export ANTHROPIC_API_KEY=<your Anthropic API key> in the shell that runs the next "
                              "exec (it brings the key to the session's worker), or use a dry run")
        return key

    def send(self, body: dict, *, on_retry=None, slow_down_retries: int = 0) -> Response:
        """Post ``body``; retry what may succeed later; raise an APIError otherwise.

        ``on_retry(attempt, error)`` is called after the wait and right before
        attempt number ``attempt`` (2, 3, ...) is sent; ``error`` is the
        APIError of the attempt before. It may raise to stop retrying.
        ``slow_down_retries`` allows that many more retries of rate limits
        and overloads (not of other failures): a batch that slows down when
        told to should not lose items to a shared rate limit.
        """
        key = self._api_key()
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, raw = self._post(data, key)
                if 200 <= status < 300:
                    return self._response(status, headers, raw, attempt, started)
                failure = _parse_error(status, headers, raw)
            except _Failure as f:
                failure = f
            error = _to_error(failure, attempt, body.get("model"), self.base_url, key)
            allowed = self.max_retries + (slow_down_retries if is_slow_down(error) else 0)
            if not error.retryable or attempt > allowed:
                raise error
            self.sleep(retry_delay(attempt - 1, failure.headers, self.rand))
            if on_retry is not None:
                on_retry(attempt + 1, error)

    def _response(self, status, headers, raw, attempt, started) -> Response:
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise _to_error(_Failure(status, "invalid_response", "the reply was not JSON", headers),
                            attempt, None, self.base_url, None) from None
        return Response(payload, headers.get("request-id"), attempt, time.monotonic() - started)

    def _post(self, data: bytes, key: str):
        url = urlsplit(self.base_url)
        path = (url.path.rstrip("/") or "") + "/v1/messages"
        headers = {"x-api-key": key, "anthropic-version": self.anthropic_version,
                   "content-type": "application/json", "accept": "application/json"}
        conn = self._connection(url)
        sent = False
        try:
            conn.request("POST", path, body=data, headers=headers)
            sent = True
            resp = conn.getresponse()
            raw = resp.read()
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self._drop(url)
            return resp.status, resp_headers, raw
        except (socket.timeout, TimeoutError) as exc:
            self._drop(url)
            raise _Failure(None, "timeout_error", f"no answer within {self.timeout:g} s",
                           sent=sent, timeout=True) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(url)
            reason = _redact(str(exc) or type(exc).__name__, key)
            raise _Failure(None, "connection_error", f"{type(exc).__name__}: {reason}", sent=sent) from exc

    def _connection(self, url) -> http.client.HTTPConnection:
        conns = self._pool.conns
        conn = conns.get(url.netloc)
        if conn is not None and conn.sock is not None and _closed_by_peer(conn.sock):
            # The server closed this idle connection; sending on it would fail
            # without the request ever being read.
            conn.close()
            conn = None
        if conn is None:
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=self.timeout,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=self.timeout)
            conns[url.netloc] = conn
        elif conn.sock is not None:
            conn.sock.settimeout(self.timeout)  # RLM_API_TIMEOUT may have changed since it was opened
        return conn

    def _drop(self, url) -> None:
        conn = self._pool.conns.pop(url.netloc, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close this thread's connections."""
        for conn in self._pool.conns.values():
            conn.close()
        self._pool.conns.clear()


def _closed_by_peer(sock) -> bool:
    """An idle keep-alive socket that is readable has been closed (or is broken)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
