"""Request rates and concurrent uploads per user and per tier-linked key, through the API (PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.models import UsageCounter
from pockity.storage.repository import user_scope
from tests.fixtures.storage import local_files, reservation_count, set_quota, usage
from tests.fixtures.users import TestUser, make_key, make_user


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app: FastAPI) -> Iterator[Clock]:
    """The app's limiter on a clock the test moves, so no bucket refills while a test runs."""
    limiter = app.state.limiter
    saved = limiter.clock
    limiter.clock = Clock()
    yield limiter.clock
    limiter.clock = saved


async def _limited_tier(client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user_id: str, **limits: int) -> str:
    """A tier with these fair-sharing limits (set through the admin API), the user put on it."""
    tier_id = await set_quota(app, user_id, storage_bytes=10**9)
    r = await client.patch(f"/api/tiers/admin/{tier_id}", json=limits, headers=admin.headers)
    assert r.status_code == 200, r.text
    for name, value in limits.items():
        assert r.json()[name] == value
    return tier_id


def _refusal(r: httpx.Response) -> dict[str, object]:
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "rate_limited"
    assert r.headers["Retry-After"] == str(error["details"]["retryAfter"])
    return error["details"]  # type: ignore[no-any-return]


async def test_a_user_past_its_tiers_burst_is_refused_until_the_bucket_refills(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser, other_user: TestUser, clock: Clock
) -> None:
    await _limited_tier(client, app, admin, user.id, requestsPerSecond=1, requestBurst=5)
    key = await make_key(client, user)  # spends one of the five
    for _ in range(4):
        assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
    details = _refusal(await client.get("/api/storage/usage", headers=user.headers))
    assert details == {"scope": "user", "perSecond": 1, "burst": 5, "retryAfter": 1}
    # Every credential of the user shares the user's bucket; other users are untouched.
    assert _refusal(await client.get("/api/auth/me", headers=key["headers"]))["scope"] == "user"
    assert (await client.get("/api/auth/me", headers=other_user.headers)).status_code == 200
    clock.now += 2  # two requests' worth
    assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200
    assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
    _refusal(await client.get("/api/auth/me", headers=user.headers))


async def test_a_refused_key_with_a_wrong_secret_is_401_not_429(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser, clock: Clock
) -> None:
    await _limited_tier(client, app, admin, user.id, requestsPerSecond=1, requestBurst=3)
    key = await make_key(client, user)
    for _ in range(2):
        assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200
    _refusal(await client.get("/api/auth/me", headers=key["headers"]))
    _refusal(await client.get("/api/auth/me", headers=key["headers"]))  # remembered: no authentication query
    wrong = {**key["headers"], "X-Secret-Key": key["secretKey"][:-1] + ("A" if key["secretKey"][-1] != "A" else "B")}
    r = await client.get("/api/auth/me", headers=wrong)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


async def test_a_key_on_a_tier_of_its_own_has_its_own_limit(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser, clock: Clock
) -> None:
    holder = await make_user(client, "tierholder")
    key_tier = await _limited_tier(client, app, admin, holder.id, requestsPerSecond=1, requestBurst=3)
    key = await make_key(client, user, tierId=key_tier)
    for _ in range(3):
        assert (await client.get("/api/storage/usage", headers=key["headers"])).status_code == 200
    details = _refusal(await client.get("/api/storage/usage", headers=key["headers"]))
    assert (details["scope"], details["burst"]) == ("key", 3)
    # The user's other credentials keep the user's (default) limit.
    assert (await client.get("/api/storage/usage", headers=user.headers)).status_code == 200


def _slow_body(started: asyncio.Event, gate: asyncio.Event) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        started.set()  # the server took the first chunk: its reservation (and slot) is held
        await gate.wait()
        yield b"b" * 1000

    return body()


async def _uploads_open(app: FastAPI, scope: str) -> int:
    async with app.state.db.sessions() as s:
        found = await s.scalar(select(UsageCounter.uploads_open).where(UsageCounter.scope == scope))
    return int(found or 0)


async def test_uploads_open_at_once_are_limited_per_user(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser, clock: Clock
) -> None:
    await _limited_tier(client, app, admin, user.id, maxConcurrentUploads=2)
    started, gate = [asyncio.Event(), asyncio.Event()], asyncio.Event()
    first = [
        asyncio.create_task(
            client.put(f"/api/storage/files/slow-{i}", content=_slow_body(started[i], gate), headers=user.headers)
        )
        for i in range(2)
    ]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 10)
    assert await _uploads_open(app, user_scope(user.id)) == 2
    r = await client.put("/api/storage/files/third", content=b"c", headers=user.headers)
    details = _refusal(r)
    assert (details["scope"], details["limit"], details["uploadsOpen"]) == ("user", 2, 2)
    gate.set()
    assert [(await t).status_code for t in first] == [201, 201]
    assert (await client.put("/api/storage/files/third", content=b"c", headers=user.headers)).status_code == 201
    assert await _uploads_open(app, user_scope(user.id)) == 0
    assert local_files(app, user.id) == {"slow-0": 2000, "slow-1": 2000, "third": 1}
    assert await reservation_count(app) == 0


async def test_a_tier_linked_key_has_its_own_upload_slots(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser, clock: Clock
) -> None:
    holder = await make_user(client, "tierholder")
    key_tier = await _limited_tier(client, app, admin, holder.id, maxConcurrentUploads=1)
    key = await make_key(client, user, tierId=key_tier)
    started, gate = asyncio.Event(), asyncio.Event()
    slow = asyncio.create_task(
        client.put("/api/storage/files/slow", content=_slow_body(started, gate), headers=key["headers"])
    )
    await asyncio.wait_for(started.wait(), 10)
    assert _refusal(await client.put("/api/storage/files/k2", content=b"k", headers=key["headers"]))["scope"] == "key"
    assert (await client.put("/api/storage/files/u2", content=b"u", headers=user.headers)).status_code == 201
    gate.set()
    assert (await slow).status_code == 201
    assert (await client.put("/api/storage/files/k2", content=b"k", headers=key["headers"])).status_code == 201


async def test_a_cancelled_direct_upload_gives_its_slot_back_while_its_bytes_stay_held(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser, clock: Clock
) -> None:
    await _limited_tier(client, app, admin, user.id, maxConcurrentUploads=1)
    r = await client.post("/api/storage/uploads", json={"key": "d.bin", "size": 500}, headers=user.headers)
    assert r.status_code == 201, r.text
    upload = r.json()
    _refusal(await client.put("/api/storage/files/x", content=b"x", headers=user.headers))
    assert (await client.delete(f"/api/storage/uploads/{upload['uploadId']}", headers=user.headers)).status_code == 200
    # A hold keeps the form's bytes reserved until it expires, but no upload slot.
    assert (await usage(client, user))["bytesReserved"] == 500
    assert (await client.put("/api/storage/files/x", content=b"x", headers=user.headers)).status_code == 201
    assert await _uploads_open(app, user_scope(user.id)) == 0
