"""The request limiter on every store: a shared token bucket, exact across processes, leased not per request."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

from pockity.ratelimit.limiter import CounterStore, Lease, Rate, RequestLimiter

T0 = 1_900_000_000.0  # clock values below are exact in binary, so microseconds never round


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting:
    """A store that counts its round trips (and, without an inner store, fails like one that is down)."""

    def __init__(self, inner: CounterStore | None) -> None:
        self.inner, self.calls = inner, 0

    async def take(self, subject: str, now_us: int, n: int, rate: Rate) -> Lease:
        self.calls += 1
        if self.inner is None:
            raise ConnectionError("store down")
        return await self.inner.take(subject, now_us, n, rate)

    async def close(self) -> None:
        """Nothing to close."""


def _subject() -> str:
    return f"user:{uuid.uuid4().hex[:20]}"


async def _admitted(limiter: RequestLimiter, subject: str, rate: Rate, times: int) -> int:
    return sum([await limiter.admit(subject, rate) is None for _ in range(times)])


async def test_a_burst_at_once_then_one_request_per_interval(store: CounterStore) -> None:
    rate = Rate(per_second=8, burst=80)  # one request every 0.125 s; 80 at once after 10 s of quiet
    clock = Clock()
    limiter = RequestLimiter(store, lease_max=7, clock=clock)
    subject = _subject()
    assert await _admitted(limiter, subject, rate, 85) == 80
    assert await limiter.admit(subject, rate) == 0.125  # the wait until the next request fits
    clock.now += 0.125
    assert await _admitted(limiter, subject, rate, 3) == 1
    clock.now += 0.5
    assert await _admitted(limiter, subject, rate, 10) == 4
    clock.now += 100  # a long quiet spell refills the bucket to the burst, no more
    assert await _admitted(limiter, subject, rate, 100) == 80
    assert await _admitted(limiter, _subject(), rate, 1) == 1  # a limit is per subject


async def test_several_processes_together_never_pass_the_bucket(store: CounterStore) -> None:
    rate = Rate(per_second=1, burst=100)
    clock = Clock()
    processes = [RequestLimiter(store, lease_max=5, clock=clock) for _ in range(3)]
    subject = _subject()
    admitted = 0
    for i in range(150):
        admitted += await processes[i % 3].admit(subject, rate) is None
    assert admitted == 100
    clock.now += 2  # two more for whichever process asks first
    admitted = sum([await processes[i % 3].admit(subject, rate) is None for i in range(30)])
    assert admitted == 2


async def test_concurrent_requests_of_one_process_share_leases(store: CounterStore) -> None:
    counting = Counting(store)
    limiter = RequestLimiter(counting, lease_max=10, clock=Clock())
    rate = Rate(per_second=4, burst=200)
    subject = _subject()
    results = await asyncio.gather(*(limiter.admit(subject, rate) for _ in range(300)))
    assert sum(r is None for r in results) == 200
    assert {r for r in results if r is not None} == {0.25}  # refused: the next request fits in 0.25 s
    assert counting.calls == 21  # 20 leases of 10, and one that found the bucket empty


async def test_an_empty_bucket_costs_no_round_trip_until_it_refills(store: CounterStore) -> None:
    counting = Counting(store)
    clock = Clock()
    limiter = RequestLimiter(counting, lease_max=10, clock=clock)
    rate = Rate(1, 20)  # leases of 1 (a twentieth of the burst)
    subject = _subject()
    assert await _admitted(limiter, subject, rate, 50) == 20
    assert counting.calls == 21
    clock.now += 0.5
    assert await _admitted(limiter, subject, rate, 100) == 0
    assert counting.calls == 21
    clock.now += 0.5
    assert await _admitted(limiter, subject, rate, 100) == 1
    assert counting.calls == 23  # the one that fitted, and the one that found the bucket empty again


async def test_a_store_that_does_not_answer_admits() -> None:
    # Fail open: a store that is down must not take the whole service down with it.
    counting = Counting(None)
    limiter = RequestLimiter(counting, lease_max=10, clock=Clock())
    assert await _admitted(limiter, "user:x", Rate(1, 200), 25) == 25
    assert counting.calls == 3  # leases of 10 all the same


@pytest.mark.parametrize(
    ("per_second", "burst", "expected"),
    [
        (None, None, Rate(50, 500)),  # the server's defaults
        (5, None, Rate(5, 50)),  # as many seconds of requests as the default burst holds
        (5, 7, Rate(5, 7)),
        (None, 30, Rate(50, 30)),
    ],
)
def test_a_tier_rate_resolves_against_the_defaults(per_second: int | None, burst: int | None, expected: Rate) -> None:
    assert Rate.resolve(per_second, burst, Rate(50, 500)) == expected


def test_a_refused_credential_is_remembered_for_its_wait() -> None:
    clock = Clock(100.0)
    limiter = RequestLimiter(Counting(None), lease_max=1, clock=clock)
    limiter.block(b"cred", 2.5, {"scope": "user"})
    refused = limiter.blocked(b"cred")
    assert refused is not None and refused.headers["Retry-After"] == "3" and refused.wait == 2.5
    assert refused.details == {"scope": "user", "retryAfter": 3}
    assert limiter.blocked(b"other") is None
    clock.now = 102.5
    assert limiter.blocked(b"cred") is None


async def test_requests_over_the_rate_queue_for_turns_within_the_patience(store: CounterStore) -> None:
    # Real time: one request every 50 ms, none saved up. Fifteen at once: one now, then one per turn for as
    # many turns as fit in the patience (0.5 s: ten), the rest refused at once with the time they would wait.
    limiter = RequestLimiter(store, lease_max=10)
    rate, subject = Rate(per_second=20, burst=1), _subject()
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one() -> tuple[float | None, float]:
        wait = await limiter.admit(subject, rate, patience=0.5)
        return wait, loop.time() - started

    results = await asyncio.gather(*(one() for _ in range(15)))
    admitted = sorted(at for wait, at in results if wait is None)
    refused = [(wait, at) for wait, at in results if wait is not None]
    assert 9 <= len(admitted) <= 11, results
    # Refused at once, knowing their turn lies past the patience (the last turn may just miss it, at its end).
    at_once = [wait for wait, at in refused if at < 0.2]
    assert len(at_once) >= 4 and all(wait > 0.5 for wait in at_once), refused
    assert all(at < 0.6 for _, at in refused), refused
    assert admitted[-1] >= 0.45  # spread over the patience, not all at once
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert sum(gaps) / len(gaps) >= 0.045, gaps
