"""An ordered parallel map with an adaptive limit on requests in flight.

``run_ordered`` runs ``fn`` over items on a bounded set of threads and returns
the results in input order. An exception raised by ``fn`` is captured and put
in the item's place, so one failure never loses the items that finished.

``AdaptiveLimiter`` is AIMD, as TCP does it: a rate limit (429) or an
overload (529) halves the number of requests allowed in flight (never below
1), and every ``N`` successes give one back, up to the maximum. Only a 429
for a request sent after the last cut cuts again, so a whole wave of 429s
answering requests that were already in flight counts once, not once per
request. The limiter remembers, per thread, when that thread's slot was
taken; a request retried after a 429 calls ``requeue`` to queue again behind
the (now lower) limit.
"""
from __future__ import annotations

import threading


class AdaptiveLimiter:
    def __init__(self, max_concurrency: int, grow_every: int | None = None):
        self.max = max(1, int(max_concurrency))
        self.limit = self.max
        self.grow_every = grow_every  # None: the current limit (one "round trip")
        self.in_flight = 0
        self.epoch = 0  # bumped on every cut
        self._successes = 0
        self._tickets = self._serving = 0  # FIFO order of acquire
        self._cond = threading.Condition()
        self._mine = threading.local()  # .epoch: when this thread's slot was taken

    def acquire(self) -> None:
        """Wait for a slot, first come first served: a request that requeues
        after a 429 goes behind those already waiting, not ahead of them."""
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            while ticket != self._serving or self.in_flight >= self.limit:
                self._cond.wait()
            self._serving += 1
            self.in_flight += 1
            self._mine.epoch = self.epoch
            self._cond.notify_all()  # the next ticket may fit too

    def release(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def requeue(self) -> None:
        """Give the slot back and wait for one again (before a retry)."""
        self.release()
        self.acquire()

    def rate_limited(self) -> None:
        """This thread's request was answered 429."""
        with self._cond:
            if getattr(self._mine, "epoch", None) == self.epoch:
                self.limit = max(1, self.limit // 2)
                self.epoch += 1
                self._successes = 0

    def succeeded(self) -> None:
        with self._cond:
            if self.limit >= self.max:
                return
            self._successes += 1
            if self._successes >= (self.grow_every or self.limit):
                self._successes = 0
                self.limit += 1
                self._cond.notify_all()


def run_ordered(items, fn, *, concurrency: int, limiter: AdaptiveLimiter | None = None,
                on_done=None) -> list:
    """``[fn(item) for item in items]`` in parallel, in input order.

    A failed item holds the exception it raised. ``on_done(index, result)``
    is called as each item finishes (from the worker threads). With a
    ``limiter``, each item holds one of its slots while ``fn`` runs.
    """
    items = list(items)
    results = [None] * len(items)
    if not items:
        return results
    next_index = iter(range(len(items)))
    lock = threading.Lock()
    stop = threading.Event()

    def take():
        with lock:
            return next(next_index, None)

    def work():
        while not stop.is_set():
            i = take()
            if i is None:
                return
            results[i] = _call(fn, items[i], limiter)
            if on_done is not None:
                on_done(i, results[i])

    threads = [threading.Thread(target=work, daemon=True, name=f"rlm-batch-{n}")
               for n in range(max(1, min(int(concurrency), len(items))))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        # Interrupted (timeout of the exec): start no new item; those in
        # flight finish on their own and are recorded by ``fn``.
        stop.set()
        raise
    return results


def _call(fn, item, limiter):
    if limiter is not None:
        limiter.acquire()
    try:
        return fn(item)
    except Exception as exc:  # kept in the item's place
        return exc
    finally:
        if limiter is not None:
            limiter.release()
