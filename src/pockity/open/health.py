"""The storage part of the health check without a storage call per probe.

A balancer probing `/api/open/health` every second (from several places) would otherwise cost one S3
HeadBucket each. An `ok` answer is reused for `ttl` seconds; a `StorageUnavailable` raised by any request
(`mark_down`, from the app's error handler) ends that at once, so the next probe checks again; a failing
state is never reused. Probes that find the answer stale while a check is running wait for that check
instead of starting their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

STORAGE_OK_TTL = 5.0  # seconds an `ok` from the storage check is reused


class StorageHealth:
    def __init__(self, ttl: float = STORAGE_OK_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._clock = ttl, clock
        self._ok_until = 0.0
        self._generation = 0  # bumped by mark_down: a check that started before it cannot mark ok
        self._lock = asyncio.Lock()

    def mark_down(self) -> None:
        self._ok_until = 0.0
        self._generation += 1

    def fresh(self) -> bool:
        """True while a recent `ok` stands (no check is needed)."""
        return self._clock() < self._ok_until

    async def check(self, ping: Callable[[], Awaitable[None]]) -> None:
        """Return if storage is known ok (recently, with no failure since), else `ping()`; raises what it raises."""
        if self.fresh():
            return
        async with self._lock:
            if self.fresh():
                return
            generation = self._generation
            await ping()
            if generation == self._generation:
                self._ok_until = self._clock() + self._ttl
