"""Usage alerts at 80% and 100% (once per upward crossing), delivered as notifications."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.kit.jobs import JobContext
from pockity.models import AuditEvent
from pockity.usage.tasks import sample_usage
from tests.fixtures.storage import set_quota
from tests.fixtures.users import TestUser

T0 = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
Run = Callable[[], Awaitable[int]]


@pytest.fixture(autouse=True)
def _tiers(restore_tiers: None) -> None:
    """Tests here give users small tiers; the catalogue is put back afterwards."""


@pytest.fixture
def run(app: FastAPI) -> Run:
    """Run the sampling job, a minute later each time."""
    minutes = count()

    async def _run() -> int:
        ctx = JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)
        return (await sample_usage(ctx, now=T0 + timedelta(minutes=next(minutes)))).alerts

    return _run


async def _put(client: httpx.AsyncClient, user: TestUser, name: str, size: int) -> None:
    r = await client.put(f"/api/storage/files/{name}", content=b"x" * size, headers=user.headers)
    assert r.status_code == 201, r.text


async def _delete(client: httpx.AsyncClient, user: TestUser, name: str) -> None:
    assert (await client.delete(f"/api/storage/files/{name}", headers=user.headers)).status_code == 200


async def _alerts(client: httpx.AsyncClient, user: TestUser) -> list[tuple[str, int]]:
    """(metric, threshold) of the user's notifications, oldest first."""
    r = await client.get("/api/notifications", params={"limit": 200}, headers=user.headers)
    assert r.status_code == 200, r.text
    return [(n["data"]["metric"], n["data"]["threshold"]) for n in reversed(r.json()["items"])]


async def test_bytes_alerts_fire_once_per_crossing(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, run: Run
) -> None:
    await set_quota(app, user.id, storage_bytes=1000, max_objects=100)
    await _put(client, user, "a", 500)
    assert await run() == 0
    await _put(client, user, "b", 300)  # 800: exactly 80%
    assert await run() == 1
    assert await run() == 0  # still above 80%: no second alert
    assert await _alerts(client, user) == [("bytes", 80)]

    await _put(client, user, "c", 200)  # 1000: full
    assert await run() == 1
    assert await run() == 0
    assert await _alerts(client, user) == [("bytes", 80), ("bytes", 100)]

    # Below 100 but above 80: 100 re-arms, 80 does not.
    await _delete(client, user, "c")
    await _put(client, user, "c", 100)  # 900
    assert await run() == 0
    await _put(client, user, "c", 200)  # 1000 again
    assert await run() == 1
    assert await _alerts(client, user) == [("bytes", 80), ("bytes", 100), ("bytes", 100)]

    # Below 80: both re-arm; crossing 80 again alerts again.
    await _delete(client, user, "c")
    await _delete(client, user, "b")  # 500
    assert await run() == 0
    await _put(client, user, "b", 350)  # 850
    assert await run() == 1
    assert await _alerts(client, user) == [("bytes", 80), ("bytes", 100), ("bytes", 100), ("bytes", 80)]

    r = await client.get("/api/notifications", headers=user.headers)
    newest = r.json()["items"][0]
    assert newest["kind"] == "usage_alert" and newest["readAt"] is None
    assert newest["title"] == "You have used 80% of your storage"
    assert newest["data"] == {"metric": "bytes", "threshold": 80, "used": 850, "limit": 1000, "percent": 85.0}
    assert "850 B of 1000 B" in newest["body"]

    async with app.state.db.sessions() as s:
        events = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "usage.alert"))).all()
    assert len(events) == 4
    assert {(e.actor_type, e.actor_id, e.target_type, e.target_id) for e in events} == {
        ("system", "jobs", "user", user.id)
    }
    assert sorted(e.details["threshold"] for e in events) == [80, 80, 100, 100]


async def test_object_alerts_and_a_jump_straight_to_full(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, run: Run
) -> None:
    await set_quota(app, user.id, storage_bytes=10_000, max_objects=5)
    for name in ("1", "2", "3"):
        await _put(client, user, name, 1)
    assert await run() == 0
    await _put(client, user, "4", 1)  # 4 of 5 objects
    assert await run() == 1
    await _put(client, user, "5", 10_000 - 4)  # bytes 0% -> 100% and objects 80% -> 100% in one interval
    assert await run() == 2
    assert await run() == 0
    # A jump over both thresholds is one crossing: one alert, at the level reached.
    alerts = await _alerts(client, user)
    assert alerts[0] == ("objects", 80)
    # The two alerts of one run share a millisecond, so their relative order is not defined.
    assert sorted(alerts[1:]) == [("bytes", 100), ("objects", 100)]
    titles = {n["title"] for n in (await client.get("/api/notifications", headers=user.headers)).json()["items"]}
    assert titles == {
        "Your storage is full",
        "You have reached your file limit",
        "You have used 80% of your file allowance",
    }


async def test_a_smaller_tier_alerts_without_new_uploads(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, run: Run
) -> None:
    await set_quota(app, user.id, storage_bytes=1000)
    await _put(client, user, "a", 600)
    assert await run() == 0
    await set_quota(app, user.id, storage_bytes=700)  # 600 of 700 is 85%
    assert await run() == 1
    assert await _alerts(client, user) == [("bytes", 80)]


async def test_alerts_are_per_user(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, other_user: TestUser, run: Run
) -> None:
    await set_quota(app, user.id, storage_bytes=100)
    await _put(client, user, "a", 90)
    await _put(client, other_user, "a", 90)  # the default tier: far from its limit
    assert await run() == 1
    assert await _alerts(client, user) == [("bytes", 80)]
    assert await _alerts(client, other_user) == []
