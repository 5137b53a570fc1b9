"""Request rate per user and per API key, shared by every server process without a round trip per request.

Fixed windows: a subject may make `burst` requests in each window of `burst / rate` seconds, aligned to the
epoch so that every process agrees which window it is. The count of a window is shared (a row of
`rate_windows`, or a Redis key), but a process does not add 1 per request: it takes a *lease* of n requests
with one atomic `count = count + n` that returns the new count, and spends them locally. Only the part of a
lease that is still within the limit is granted, so all processes together never admit more than `burst`
requests in a window. The price: requests leased by one process and not used are lost to the others for the
rest of that window — at most `lease` per process. Once the shared count reaches the limit a process knows
the subject is done until the window ends, so refusals cost no round trip either (and, remembered by
credential, not even the authentication query: `blocked`).

Across a window boundary a subject can make up to 2 x burst requests in quick succession (fixed windows);
over any longer stretch the average stays at `rate`.
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

MAX_WINDOW_SECONDS = 3600  # cleanup keeps an hour of windows
_PRUNE_ABOVE = 10_000  # buckets (or blocked credentials) kept before finished ones are dropped


class RateLimited(TooManyRequests):
    code, message = "rate_limited", "Too many requests; retry after the number of seconds in Retry-After."


@dataclass(frozen=True)
class Rate:
    """`burst` requests per window of `burst / per_second` seconds."""

    per_second: int
    burst: int

    @property
    def window(self) -> int:
        return min(MAX_WINDOW_SECONDS, max(1, math.ceil(self.burst / self.per_second)))

    @classmethod
    def resolve(cls, per_second: int | None, burst: int | None, default: Rate) -> Rate:
        """A tier's own values where it has them; a missing burst keeps the default window length."""
        rate = per_second or default.per_second
        if burst is None:
            burst = default.burst if per_second is None else rate * default.window
        return cls(rate, max(1, burst))


class CounterStore(Protocol):
    """Where the shared window counts live (the database, or Redis)."""

    async def take(self, subject: str, window_start: int, n: int, ttl: int) -> int:
        """Add `n` to the subject's count in the window starting at `window_start`; the count after."""
        ...

    async def close(self) -> None:
        """Let go of connections at shutdown."""
        ...


class _Bucket:
    __slots__ = ("exhausted", "pending", "tokens", "window_end", "window_start")

    def __init__(self, window_start: int, window: int) -> None:
        self.window_start, self.window_end = window_start, window_start + window
        self.tokens = 0
        self.exhausted = False
        self.pending: asyncio.Future[None] | None = None


class RequestLimiter:
    """One per process: the leases it holds per subject, and the credentials it knows to be refused."""

    def __init__(self, store: CounterStore, *, lease_max: int, clock: Callable[[], float] = time.time) -> None:
        self.store, self.lease_max, self.clock = store, lease_max, clock
        self._buckets: dict[str, _Bucket] = {}
        self._blocked: dict[bytes, tuple[float, dict[str, Any]]] = {}

    def lease_size(self, rate: Rate) -> int:
        return max(1, min(self.lease_max, rate.burst // 20))

    async def admit(self, subject: str, rate: Rate) -> int | None:
        """Spend one request of `subject`: None if allowed, else the seconds until its window ends."""
        while True:
            now = self.clock()
            bucket = self._bucket(subject, rate, now)
            if bucket.tokens > 0:
                bucket.tokens -= 1
                return None
            if bucket.exhausted:
                return max(1, math.ceil(bucket.window_end - now))
            if bucket.pending is not None:  # another request of this process is taking a lease: share it
                await asyncio.shield(bucket.pending)
                continue
            await self._lease(subject, bucket, rate)

    async def _lease(self, subject: str, bucket: _Bucket, rate: Rate) -> None:
        n = self.lease_size(rate)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bucket.pending = done
        try:
            after = await self.store.take(subject, bucket.window_start, n, ttl=rate.window + 60)
        except Exception:
            # Fail open: a counter store that does not answer must not take the whole service down with it.
            log.warning("rate-limit counter unavailable; admitting %s", subject, exc_info=True)
            after = n
        finally:
            bucket.pending = None
            done.set_result(None)
        bucket.tokens += max(0, min(n, rate.burst - (after - n)))
        if after >= rate.burst:
            bucket.exhausted = True

    def _bucket(self, subject: str, rate: Rate, now: float) -> _Bucket:
        window = rate.window
        start = int(now // window) * window
        bucket = self._buckets.get(subject)
        if bucket is None or bucket.window_start != start:
            if len(self._buckets) > _PRUNE_ABOVE:
                self._buckets = {s: b for s, b in self._buckets.items() if b.window_end > now}
            bucket = self._buckets[subject] = _Bucket(start, window)
        return bucket

    def block(self, credential: bytes, retry_after: int, details: dict[str, Any]) -> None:
        """Remember that requests with this (already verified) credential are refused for `retry_after` s."""
        now = self.clock()
        if len(self._blocked) > _PRUNE_ABOVE:
            self._blocked = {c: b for c, b in self._blocked.items() if b[0] > now}
        self._blocked[credential] = (now + retry_after, details)

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
        return refusal(max(1, math.ceil(left)), details)


def refusal(retry_after: int, details: dict[str, Any]) -> RateLimited:
    return RateLimited(retry_after=retry_after, details={**details, "retryAfter": retry_after})
