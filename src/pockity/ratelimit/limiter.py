"""Request rate per user and per API key, shared by every server process without a round trip per request.

A token bucket per subject (GCRA): `per_second` requests on average, and up to `burst` at once after a quiet
spell. Its state is one number shared by all processes, the *theoretical arrival time* (TAT): the moment the
bucket would be full again. A process does not go to the shared store for every request: it takes a *lease*
of up to n requests with one atomic statement that moves the TAT on by as many intervals as fit, and spends
them locally. All processes together therefore never admit more than the bucket allows; requests leased by
one process and not used are lost to the others (at most one lease per process).

When the bucket is empty the store says how long until the next request fits; until then the process
answers for the subject locally, with no round trip: a request queues for a turn (one per interval) if that
comes soon enough, else it is refused — and a credential refused is remembered, so its next requests are
refused without even the authentication query (`blocked`). A subject that floods is thus admitted one
request per interval, evenly spread, which is what keeps other tenants' latency flat (bench/fairness.py); a
fixed window would let the whole burst through at every window start.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pockity.errors import TooManyRequests

log = logging.getLogger("pockity.ratelimit")

_PRUNE_ABOVE = 10_000  # local buckets (or blocked credentials) kept before idle ones are dropped
US = 1_000_000
_LATE = 0.001  # wake a little after a turn, never before it (the event loop's clock is not time.time)


class RateLimited(TooManyRequests):
    code, message = "rate_limited", "Too many requests; retry after the number of seconds in Retry-After."
    wait: float = 1.0  # seconds until a request would be admitted (Retry-After rounds it up)


@dataclass(frozen=True)
class Rate:
    """`per_second` requests per second on average, `burst` at once."""

    per_second: int
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, US // self.per_second)

    @property
    def capacity_us(self) -> int:
        return self.burst * self.interval_us

    @classmethod
    def resolve(cls, per_second: int | None, burst: int | None, default: Rate) -> Rate:
        """A tier's own values where it has them; a missing burst keeps the default's seconds of requests."""
        rate = per_second or default.per_second
        if burst is None:
            burst = default.burst if per_second is None else math.ceil(rate * default.burst / default.per_second)
        return cls(rate, max(1, burst))


@dataclass(frozen=True)
class Lease:
    granted: int  # requests of the n asked for that fitted
    wait_us: int  # when fewer than asked: microseconds until the next one fits


class CounterStore(Protocol):
    """Where the shared buckets live (the database, or Redis)."""

    async def take(self, subject: str, now_us: int, n: int, rate: Rate) -> Lease:
        """Take up to `n` requests from the subject's bucket at `now_us` (one atomic operation)."""
        ...

    async def close(self) -> None:
        """Let go of connections at shutdown."""
        ...


def lease_from(granted: int, tat_us: int, now_us: int, n: int, rate: Rate) -> Lease:
    """What a store's answer (requests granted, the new TAT) means: when short, the wait for the next one.

    Every store runs the same step atomically (SQL in repository.py, Lua in redis_store.py):
    base = max(TAT, now); granted = clamp((now + capacity - base) // interval, 0, n);
    TAT = base + granted * interval. The next request fits once now + capacity - TAT >= interval."""
    wait = 0 if granted >= n else max(1, tat_us + rate.interval_us - rate.capacity_us - now_us)
    return Lease(granted, wait)


class _Bucket:
    __slots__ = ("empty_until", "pending", "queue_at", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.empty_until = 0.0  # epoch seconds; the shared bucket has nothing for us before then
        self.queue_at = 0.0  # the next free turn of this process's queue of waiting requests
        self.pending: asyncio.Future[None] | None = None


class RequestLimiter:
    """One per process: the leases it holds per subject, and the credentials it knows to be refused."""

    def __init__(self, store: CounterStore, *, lease_max: int, clock: Callable[[], float] = time.time) -> None:
        self.store, self.lease_max, self.clock = store, lease_max, clock
        self._buckets: dict[str, _Bucket] = {}
        self._blocked: dict[bytes, tuple[float, dict[str, Any]]] = {}

    def lease_size(self, rate: Rate) -> int:
        return max(1, min(self.lease_max, rate.burst // 20))

    async def admit(self, subject: str, rate: Rate, patience: float = 0.0) -> float | None:
        """Spend one request of `subject`: None if allowed, else the seconds until it would have been.

        A request that finds the bucket empty queues for a turn, one per interval in arrival order, when its
        turn comes within `patience` seconds, and sleeps until then (so waiting requests wake one at a time,
        not all together); otherwise it is refused at once."""
        bucket = self._buckets.get(subject)
        if bucket is None:
            bucket = self._new_bucket(subject)
        waited = False
        while True:
            if bucket.tokens > 0:
                bucket.tokens -= 1
                return None
            now = self.clock()
            if now < bucket.empty_until:
                # A request that already waited its turn and found the bucket still empty (another process
                # was quicker) keeps its place at the head instead of going to the back.
                turn = bucket.empty_until if waited else max(bucket.queue_at, bucket.empty_until)
                if turn - now > patience:
                    return turn - now
                if not waited:
                    bucket.queue_at = turn + rate.interval_us / US
                pause = turn - now + _LATE
                await asyncio.sleep(pause)
                patience -= pause
                waited = True
                continue
            if bucket.pending is not None:  # another request of this process is taking a lease: share it
                await asyncio.shield(bucket.pending)
                continue
            await self._lease(subject, bucket, rate, now)

    async def _lease(self, subject: str, bucket: _Bucket, rate: Rate, now: float) -> None:
        n = self.lease_size(rate)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bucket.pending = done
        try:
            lease = await self.store.take(subject, int(now * US), n, rate)
        except Exception:
            # Fail open: a store that does not answer must not take the whole service down with it.
            log.warning("rate-limit store unavailable; admitting %s", subject, exc_info=True)
            lease = Lease(n, 0)
        finally:
            bucket.pending = None
            done.set_result(None)
        bucket.tokens += lease.granted
        if lease.granted < n:
            bucket.empty_until = now + lease.wait_us / US

    def _new_bucket(self, subject: str) -> _Bucket:
        if len(self._buckets) > _PRUNE_ABOVE:
            now = self.clock()
            self._buckets = {s: b for s, b in self._buckets.items() if b.tokens or b.empty_until > now or b.pending}
        bucket = self._buckets[subject] = _Bucket()
        return bucket

    def block(self, credential: bytes, seconds: float, details: dict[str, Any]) -> None:
        """Remember that requests with this (already verified) credential are refused for `seconds`."""
        now = self.clock()
        if len(self._blocked) > _PRUNE_ABOVE:
            self._blocked = {c: b for c, b in self._blocked.items() if b[0] > now}
        self._blocked[credential] = (now + seconds, details)

    def blocked(self, credential: bytes) -> RateLimited | None:
        """The refusal for this credential if it is known to be refused, before any authentication work.

        Only credentials that authenticated and were then refused are remembered, so a guessed or forged one
        never gets here; a refused caller gets its 429 without the authentication query."""
        found = self._blocked.get(credential)
        if found is None:
            return None
        until, details = found
        left = until - self.clock()
        if left <= 0:
            del self._blocked[credential]
            return None
        return refusal(left, details)


def refusal(seconds: float, details: dict[str, Any]) -> RateLimited:
    """The 429: Retry-After in whole seconds (at least 1), as HTTP wants it; `wait` keeps the exact time."""
    retry_after = max(1, math.ceil(seconds))
    refused = RateLimited(retry_after=retry_after, details={**details, "retryAfter": retry_after})
    refused.wait = seconds
    return refused
