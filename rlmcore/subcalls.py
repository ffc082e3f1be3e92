"""``llm_query`` and ``llm_query_batch``: sub-calls under a budget, on a ledger.

The life of one sub-call (``Engine._run``):

1. Its request hash (sha256 of the whole request body: model, system, prefix,
   prompt, max_tokens, parameters and cache settings). A response already paid
   for under that hash is returned at no cost (status ``reused``), so a re-run
   after a crash or a timeout never pays twice. A prompt repeated within one
   batch is sent once; its repeats are answered from the ledger after the fan-out.
   An identical request of the same engine still in flight (an exec that timed
   out leaves its calls running) is waited for, not sent again.
2. ``ledger.reserve`` of its worst case (``models.worst_case_usd``); a refusal
   fails the item without sending anything (status ``budget``). While other
   calls of the same engine are in flight, a refusal first waits for one of
   them to settle and tries again: each holds back its worst case (input
   bytes priced as tokens written to the cache) and settles at its real cost,
   usually far less, so fat parallel chunks fit a budget they would otherwise
   seem to overrun. Because the
   sum of reservations never passes a limit, parallel calls cannot overshoot.
3. ``api.Client.send`` with retries, then ``ledger.finish_call``: the
   reservation becomes the real cost and the response is stored.

A batch fans items out on ``batch.run_ordered`` under an ``AdaptiveLimiter``
that halves the requests in flight on rate limits. When the items share a
``system``/``prefix`` long enough for the model to cache, the first item to
be sent goes alone: a cache entry is usable only once the response that wrote
it has begun, so a cold parallel wave would pay a cache write per request.
The first item is work we need anyway, unlike a ``max_tokens: 0`` pre-warm.

An error that every later request would meet as well (a spend cap, a
refused key, billing, permissions, an unknown model) stops the batch: items
not yet sent are not sent, retries waiting their turn are dropped, and those
items are reported as not sent, with the cause. Answers already in the
ledger are still returned.

Failed items become ``[llm_query error: ...]`` strings that name the cause. An
answer cut at ``max_tokens`` (or refused, or out of context) keeps its text
and gets a visible ``[llm_query: ...]`` line appended, so it is never taken
for a whole answer. A dry run sends nothing and records the expected cost.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

from . import config, models
from .api import Client, build_body, is_slow_down
from .ledger import answer_text
from .batch import AdaptiveLimiter, run_ordered
from .errors import (
    APIError, AuthenticationError, BatchError, BillingError, BudgetExceeded, ConfigError, InputError,
    ModelNotFoundError, PermissionDeniedError, RLMError, SpendLimitError,
)

DEFAULT_MAX_TOKENS = 4096
# Extra retries of rate limits and overloads for batch items: the batch also
# lowers its concurrency, so these retries wait their turn instead of piling on.
SLOW_DOWN_RETRIES = 6
ERROR_MARK = "[llm_query error"
# Errors of one request that every other request of its batch would meet too.
STOPS_BATCH = (SpendLimitError, AuthenticationError, BillingError, PermissionDeniedError, ModelNotFoundError)

_STOP_NOTES = {
    "max_tokens": "answer cut at max_tokens={max_tokens}",
    "model_context_window_exceeded": "answer cut: the model's context window is full",
    "refusal": "the model refused to answer",
}


class _Item:
    """One prepared sub-call."""

    def __init__(self, engine, prompt, *, system, prefix, model, max_tokens, cache, cache_ttl, reuse):
        if not isinstance(prompt, str):
            raise InputError(f"a prompt must be a str, got {type(prompt).__name__}",
                             "pass text, e.g. str(value) or a slice of context")
        self.info = models.resolve(model or engine.model or config.default_model())
        if max_tokens is None:
            max_tokens = min(DEFAULT_MAX_TOKENS, self.info["max_output"] or DEFAULT_MAX_TOKENS)
        self.max_tokens = int(max_tokens)
        self.cache_ttl = cache_ttl if cache else None
        self.reuse = reuse
        # Where it is recorded, fixed now: a call still in flight when its exec timed out may
        # settle while the next exec runs.
        self.exec_id, self.parent_call_id = engine.exec_id, engine.parent_call_id
        self.body = build_body(self.info, prompt, system=system, prefix=prefix, max_tokens=self.max_tokens,
                               cache=cache, cache_ttl=cache_ttl)
        self._seal((system or "") + (prefix or "") + prompt)

    def _seal(self, text: str) -> None:
        """Hash and price the finished body; ``text`` is what the model reads."""
        # The serialised body bounds the input tokens: every text byte is in
        # it, plus enough JSON around it to cover the message framing tokens.
        blob = json.dumps(self.body, sort_keys=True, ensure_ascii=False).encode("utf-8")
        self.hash = hashlib.sha256(blob).hexdigest()
        self.worst_usd = models.worst_case_usd(self.info, len(blob), self.max_tokens, self.cache_ttl)
        self.worst_tokens = models.worst_case_tokens(len(blob), self.max_tokens)
        self.est_tokens = models.estimate_tokens(self.info, text)
        # Estimated input, no cache, a full max_tokens answer: what a dry run shows and what a
        # request lost with its worker is counted at (the worst case is ~20x the real cost).
        self.expected_usd = models.cost_usd(self.info, {"input_tokens": self.est_tokens,
                                                        "output_tokens": self.max_tokens})


class _Turns(_Item):
    """A multi-turn request (the root model of the RLM loop): messages and system sent as given."""

    def __init__(self, engine, messages, *, system, model, max_tokens, reuse):
        if not isinstance(messages, list) or not messages:
            raise InputError(f"converse needs a non-empty list of messages, got {messages!r:.80}",
                             "pass [{'role': 'user', 'content': 'text'}, ...]")
        super().__init__(engine, "", system=None, prefix=None, model=model, max_tokens=max_tokens,
                         cache=False, cache_ttl=None, reuse=reuse)
        self.body["messages"] = messages
        if system:
            self.body["system"] = system
        self._seal(json.dumps([system, messages], ensure_ascii=False))


class _Halt:
    """Shared by the items of one batch: the error that stopped it, once one has."""

    error = None


class _Outcome:
    def __init__(self, text, *, error=None, usd=0.0, retries=0, sent=False, call_id=None):
        self.text, self.error, self.usd, self.retries, self.sent = text, error, usd, retries, sent
        self.call_id = call_id  # the ledger row; None when nothing was recorded


def _marker(error: RLMError) -> str:
    message = error.message if error.message.startswith(error.type) else f"{error.type}: {error.message}"
    hint = f" (hint: {error.hint})" if error.hint else ""
    return f"{ERROR_MARK}: {message}{hint}]"


def _answer(response: dict, max_tokens: int) -> str:
    text = answer_text(response)
    note = _STOP_NOTES.get(response.get("stop_reason"))
    if note:
        text += f"\n[llm_query: {note.format(max_tokens=max_tokens)}]"
    return text


class Engine:
    """Runs sub-calls for one ledger. The session worker sets, per exec,
    ``exec_id``, ``dry_run`` and ``parent_call_id``, and reads ``progress``."""

    def __init__(self, ledger, *, client=None, model=None, concurrency=None, dry_run=None, clock=time.time):
        self.ledger = ledger
        self.client = client if client is not None else Client()
        self.model = model
        self.concurrency = concurrency
        self.dry_run = bool(dry_run)
        self.clock = clock
        self.exec_id = None
        self.parent_call_id = None
        self.progress = None
        self.warm_up = True  # benchmarks turn it off to measure a cold wave
        self._lock = threading.Lock()
        self._settled = threading.Condition()  # reservations of this engine in flight, and settlements
        self._in_flight = 0
        self._settle_count = 0
        self._sending = {}  # request hash -> Event set when that request of this engine has settled

    # ---- public face -----------------------------------------------------

    def llm_query(self, prompt, *, system=None, prefix=None, model=None, max_tokens=None, cache=True,
                  cache_ttl=None, reuse=True) -> str:
        item = _Item(self, prompt, system=system, prefix=prefix, model=model, max_tokens=max_tokens,
                     cache=cache, cache_ttl=cache_ttl, reuse=reuse)
        outcome = self._run(item, index=None, batch_id=None, limiter=None)
        if outcome.error is not None:
            raise outcome.error
        return outcome.text

    def converse(self, messages, *, system=None, model=None, max_tokens=None, batch_id=None, item=None,
                 reuse=True):
        """One multi-turn request, for the root model of the RLM loop (``loop.py``).

        ``messages`` and ``system`` (a str or a list of text blocks) are sent as
        given, cache breakpoints included; the request is reserved, sent,
        settled and recorded like a sub-call, under ``batch_id`` and ``item``.
        Returns ``(text, call_id)``; a failure raises its RLMError.
        """
        request = _Turns(self, messages, system=system, model=model, max_tokens=max_tokens, reuse=reuse)
        outcome = self._run(request, index=item, batch_id=batch_id, limiter=None)
        if outcome.error is not None:
            raise outcome.error
        return outcome.text, outcome.call_id

    def llm_query_batch(self, prompts, *, system=None, prefix=None, model=None, max_tokens=None,
                        concurrency=None, cache=True, cache_ttl=None, reuse=True, errors="marker") -> list:
        if errors not in ("marker", "raise"):
            raise InputError(f"errors={errors!r} is not an option", 'use errors="marker" or errors="raise"')
        if isinstance(prompts, str):
            raise InputError("llm_query_batch takes a list of prompts, got one str",
                             "wrap it in a list, or call llm_query")
        items = [_Item(self, p, system=system, prefix=prefix, model=model, max_tokens=max_tokens,
                       cache=cache, cache_ttl=cache_ttl, reuse=reuse) for p in prompts]
        width = int(concurrency or self.concurrency or config.concurrency())
        outcomes = self._fan_out(items, width, warm=cache and self._worth_warming(items, system, prefix))
        texts = [o.text for o in outcomes]
        failed = [i for i, o in enumerate(outcomes) if o.error is not None]
        if failed and errors == "raise":
            first = outcomes[failed[0]].error
            raise BatchError(f"{len(failed)} of {len(items)} sub-calls failed; the first: {first.message}",
                             first.hint, results=texts, failed=failed)
        return texts

    # ---- the batch -------------------------------------------------------

    def _worth_warming(self, items, system, prefix) -> bool:
        if len(items) < 2 or not (system or prefix) or self._is_dry():
            return False
        info = items[0].info
        return models.estimate_tokens(info, (system or "") + (prefix or "")) >= info["min_cache"]

    def _fan_out(self, items, width, *, warm) -> list:
        batch_id = uuid.uuid4().hex[:12]
        limiter = AdaptiveLimiter(width)
        halt = _Halt()
        outcomes = [None] * len(items)
        self._start_progress(len(items))
        try:
            start = 0
            if warm and self.warm_up:
                # Items answered from the ledger do not warm the cache: go on
                # alone until one request has really been sent.
                while start < len(items) and not (outcomes[start - 1].sent if start else False):
                    outcomes[start] = self._run_counted(items[start], start, batch_id, None, halt)
                    start += 1
            # A repeat of an earlier item waits until the fan-out is done: then it is answered from
            # the ledger instead of being sent, and paid, alongside the first.
            first = {}
            repeats = [i for i in range(start, len(items))
                       if items[i].reuse and first.setdefault(items[i].hash, i) != i]
            waiting = set(repeats)
            rest = [i for i in range(start, len(items)) if i not in waiting]
            done = run_ordered(rest, lambda i: self._run_counted(items[i], i, batch_id, limiter, halt),
                               concurrency=width, limiter=limiter)
            for i, outcome in zip(rest, done):
                if isinstance(outcome, ConfigError):
                    raise outcome  # no key: every item would fail the same way
                if isinstance(outcome, BaseException):
                    outcome = _Outcome(_marker(_as_rlm(outcome)), error=_as_rlm(outcome))
                outcomes[i] = outcome
            for i in repeats:
                outcomes[i] = self._run_counted(items[i], i, batch_id, None, halt)
        finally:
            self.progress = None
        return outcomes

    def _run_counted(self, item, index, batch_id, limiter, halt) -> _Outcome:
        outcome = self._run(item, index=index, batch_id=batch_id, limiter=limiter, halt=halt)
        if isinstance(outcome.error, STOPS_BATCH) and halt.error is None:
            halt.error = outcome.error
        self._advance(outcome)
        return outcome

    # ---- progress ----------------------------------------------------------

    def _start_progress(self, total: int) -> None:
        now = self.clock()
        self._tally = {"done": 0, "total": total, "failed": 0, "retries": 0, "usd": 0.0, "started": now}
        self._publish(now)

    def _advance(self, outcome: _Outcome) -> None:
        with self._lock:
            t = self._tally
            t["done"] += 1
            t["failed"] += outcome.error is not None
            t["usd"] += outcome.usd
            self._publish(self.clock())

    def _count_retry(self) -> None:
        with self._lock:
            if self.progress is not None:
                self._tally["retries"] += 1
                self._publish(self.clock())

    def _publish(self, now: float) -> None:
        """Swap in a fresh dict: a reader in another thread never sees half an update."""
        t = self._tally
        elapsed = max(0.0, now - t["started"])
        eta = elapsed / t["done"] * (t["total"] - t["done"]) if t["done"] else None
        self.progress = dict(t, usd=round(t["usd"], 9), elapsed_s=round(elapsed, 3),
                             eta_s=None if eta is None else round(eta, 3))

    # ---- one sub-call ------------------------------------------------------

    def _is_dry(self) -> bool:
        return self.dry_run or config.dry_run()

    def _record(self, item, index, batch_id, **fields) -> dict:
        record = {"exec_id": item.exec_id, "batch_id": batch_id, "item": index,
                  "parent_call_id": item.parent_call_id, "model": item.info["id"], "started": self.clock()}
        record.update(fields)
        return record

    def _run(self, item, *, index, batch_id, limiter, halt=None) -> _Outcome:
        if self._is_dry():
            usd = item.expected_usd
            self.ledger.record_call(self._record(item, index, batch_id, status="dry_run", usd=usd,
                                                 attempts=0, request_hash=item.hash))
            return _Outcome(f"[dry run: {item.info['id']}, ~{item.est_tokens} input tokens, "
                            f"max {item.max_tokens} output, about ${usd:.4f}]")
        if not item.reuse:
            return self._run_new(item, index, batch_id, limiter, halt)
        mine = threading.Event()
        try:
            while True:
                with self._lock:
                    sending = self._sending.setdefault(item.hash, mine)
                if sending is mine:
                    break
                # The same request is in flight (an exec that timed out leaves its calls running):
                # wait for its answer in the ledger rather than pay for it again.
                _without_slot(limiter, lambda: sending.wait(timeout=1.0))
            cached = self.ledger.cached_response(item.hash)
            if cached is not None:
                call_id = self.ledger.record_call(self._record(
                    item, index, batch_id, status="reused", usd=0.0, attempts=0, request_hash=item.hash,
                    stop_reason=cached.get("stop_reason")))
                return _Outcome(_answer(cached, item.max_tokens), call_id=call_id)
            return self._run_new(item, index, batch_id, limiter, halt)
        finally:
            with self._lock:
                if self._sending.get(item.hash) is mine:
                    del self._sending[item.hash]
            mine.set()

    def _run_new(self, item, index, batch_id, limiter, halt) -> _Outcome:
        """Send a request not answered in the ledger: reserve, send, settle."""
        if halt is not None and halt.error is not None:
            return self._not_sent(item, index, batch_id, halt.error)
        self.client.check_key()  # no key: a ConfigError before anything is reserved
        try:
            reservation = self._reserve(item, limiter, self._record(
                item, index, batch_id, usd=item.expected_usd, attempts=1, request_hash=item.hash,
                input_tokens=item.est_tokens, output_tokens=item.max_tokens))
        except BudgetExceeded as exc:
            self.ledger.record_call(self._record(item, index, batch_id, status="budget", attempts=0,
                                                 error_type=exc.type, error=exc.message, request_hash=item.hash))
            return _Outcome(_marker(exc), error=exc)
        try:
            return _Send(self, item, index, batch_id, limiter, reservation, halt).run()
        finally:
            self._settle_one()

    def _not_sent(self, item, index, batch_id, cause: APIError) -> _Outcome:
        """An item of a batch stopped by ``cause``: recorded as refused (status budget), nothing sent."""
        error = type(cause)(f"not sent: an earlier request of this batch was refused ({cause.message}) "
                            "and every other request would be too", cause.hint, status=cause.status,
                            api_type=cause.api_type)
        self.ledger.record_call(self._record(item, index, batch_id, status="budget", attempts=0,
                                             error_type=error.type, error=error.message, request_hash=item.hash))
        return _Outcome(_marker(error), error=error)

    def _reserve(self, item, limiter, if_lost: dict) -> int:
        """Reserve the item's worst case, waiting for this engine's calls in flight when it does not fit.

        With nothing of ours in flight a refusal is final: BudgetExceeded. The wait gives back the
        batch's ``limiter`` slot: a call we wait for may need one to retry after a rate limit.
        """
        while True:
            with self._settled:
                settled = self._settle_count
            try:
                reservation = self.ledger.reserve(usd=item.worst_usd, tokens=item.worst_tokens, if_lost=if_lost)
            except BudgetExceeded:
                with self._settled:
                    if self._settle_count != settled:
                        continue  # one settled meanwhile: try again at once
                    if self._in_flight == 0:
                        raise
                _without_slot(limiter, lambda: self._wait_settled(settled))
                continue
            with self._settled:
                self._in_flight += 1
            return reservation

    def _wait_settled(self, settled: int) -> None:
        with self._settled:
            if self._settle_count == settled:
                self._settled.wait(timeout=1.0)

    def _settle_one(self) -> None:
        with self._settled:
            self._in_flight -= 1
            self._settle_count += 1
            self._settled.notify_all()


class _Send:
    """Sending one reserved request and settling it, retries included.

    An attempt that reached the server and got no answer (a timeout, a reset
    after the request was written) may have been billed, so each one is
    settled at the worst case. Before retrying after such an attempt, another
    worst case is reserved (or the retry is given up), so even then the
    reservations cover everything that can be billed.
    """

    def __init__(self, engine, item, index, batch_id, limiter, reservation, halt=None):
        self.engine, self.item, self.index, self.batch_id = engine, item, index, batch_id
        self.limiter = limiter
        self.halt = halt
        self.reservations = [reservation]
        self.unanswered = 0  # attempts that may have been billed without an answer
        self.counted = None  # the last error already counted in ``unanswered``
        self.retries = 0

    def run(self) -> _Outcome:
        e, item = self.engine, self.item
        started = e.clock()
        try:
            response = e.client.send(item.body, on_retry=self._on_retry,
                                     slow_down_retries=SLOW_DOWN_RETRIES if self.limiter else 0)
        except APIError as exc:
            if exc.sent and exc is not self.counted:
                self.unanswered += 1
            return self._settle(None, exc, started)
        except BaseException as exc:
            # Interrupted mid-request: it may have been sent and billed.
            self.unanswered += 1
            self._settle(None, APIError(f"interrupted: {type(exc).__name__}"), started)
            raise
        if self.limiter is not None:
            self.limiter.succeeded()
        return self._settle(response, None, started)

    def _on_retry(self, attempt, error) -> None:
        if self.halt is not None and self.halt.error is not None:
            raise error from None  # the batch was stopped meanwhile: report this item's own failure
        if error.sent:
            self.unanswered += 1
            self.counted = error
            try:
                self.reservations.append(self.engine.ledger.reserve(
                    usd=self.item.worst_usd, tokens=self.item.worst_tokens, calls=0))
            except BudgetExceeded:
                raise error from None  # cannot afford another try: report what happened
        self.retries += 1
        self.engine._count_retry()
        if self.limiter is not None:
            if is_slow_down(error):
                self.limiter.rate_limited()
            self.limiter.requeue()  # queue behind the limit again before retrying

    def _settle(self, response, error, started) -> _Outcome:
        e, item = self.engine, self.item
        usage = dict(response.usage) if response is not None else {}
        usd = models.cost_usd(item.info, usage, item.cache_ttl) if response is not None else 0.0
        # Error responses bill nothing; unanswered attempts bill at most the worst case.
        usd += self.unanswered * item.worst_usd
        usage["input_tokens"] = usage.get("input_tokens", 0) + self.unanswered * (item.worst_tokens - item.max_tokens)
        usage["output_tokens"] = usage.get("output_tokens", 0) + self.unanswered * item.max_tokens
        record = e._record(
            item, self.index, self.batch_id, status="ok" if error is None else "error", usd=usd,
            attempts=response.attempts if response is not None else error.attempts,
            latency_s=round(e.clock() - started, 6), started=started,
            input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"],
            cache_read_input_tokens=usage.get("cache_read_input_tokens") or 0,
            cache_creation_input_tokens=usage.get("cache_creation_input_tokens") or 0,
            stop_reason=response.stop_reason if response is not None else None,
            request_id=response.request_id if response is not None else error.request_id,
            error_type=error.type if error is not None else None,
            error=error.message if error is not None else None)
        call_id = e.ledger.finish_call(self.reservations[0], request_hash=item.hash,
                                       response=response.raw if response is not None else None, record=record)
        for extra in self.reservations[1:]:
            e.ledger.release(extra)  # after settling, so spent + reserved never dips below the truth
        if error is not None:
            return _Outcome(_marker(error), error=error, usd=usd, retries=self.retries, sent=True, call_id=call_id)
        return _Outcome(_answer(response.raw, item.max_tokens), usd=usd, retries=self.retries, sent=True,
                        call_id=call_id)


def _without_slot(limiter, wait) -> None:
    """``wait()`` with the batch's limiter slot given back: what we wait for may need a slot to retry."""
    if limiter is None:
        wait()
        return
    limiter.release()
    try:
        wait()
    finally:
        limiter.acquire()


def _as_rlm(exc: BaseException) -> RLMError:
    if isinstance(exc, RLMError):
        return exc
    return RLMError(f"{type(exc).__name__}: {exc}", "this is a bug in rlm; please report it")
