"""Usage history: byte-seconds per day from the sampling job (driven with a fixed clock), and the history API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.kit.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.migrate import upgrade
from pockity.models import UsageCounter, UsageDay
from pockity.usage.service import GIB, day_segments, gb_hours
from pockity.usage.tasks import sample_usage
from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.storage import set_quota
from tests.fixtures.users import TestUser, make_key, make_user

T0 = datetime(2030, 1, 15, 10, 0, tzinfo=UTC)


def _ctx(app: FastAPI) -> JobContext:
    return JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)


async def _put(client: httpx.AsyncClient, user: TestUser, name: str, size: int) -> None:
    r = await client.put(f"/api/storage/files/{name}", content=b"x" * size, headers=user.headers)
    assert r.status_code == 201, r.text


async def _set_counter(app: FastAPI, user_id: str, nbytes: int, objects: int) -> None:
    """Stand-in for large uploads: the job only reads the counter."""
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(
            update(UsageCounter)
            .where(UsageCounter.scope == f"user:{user_id}")
            .values(bytes_used=nbytes, object_count=objects)
        )


async def _days(app: FastAPI, user_id: str) -> dict[date, tuple[int, int, int]]:
    async with app.state.db.sessions() as s:
        rows = (await s.scalars(select(UsageDay).where(UsageDay.user_id == user_id))).all()
    return {r.day: (r.bytes_used, r.object_count, r.byte_seconds) for r in rows}


# --- the arithmetic --------------------------------------------------------------------------------------------


def test_day_segments_split_at_utc_midnight() -> None:
    start = datetime(2030, 1, 15, 23, 59, 30, tzinfo=UTC)
    assert day_segments(start, start + timedelta(seconds=20)) == [(date(2030, 1, 15), 20_000_000)]
    assert day_segments(start, datetime(2030, 1, 17, 0, 0, 10, tzinfo=UTC)) == [
        (date(2030, 1, 15), 30_000_000),
        (date(2030, 1, 16), 86_400_000_000),
        (date(2030, 1, 17), 10_000_000),
    ]
    # A sample exactly at midnight still belongs to (and snapshots) the new day.
    assert day_segments(start, datetime(2030, 1, 16, tzinfo=UTC)) == [
        (date(2030, 1, 15), 30_000_000),
        (date(2030, 1, 16), 0),
    ]


def test_gb_hours_is_a_fixed_precision_string() -> None:
    assert gb_hours(0) == "0.000000"
    assert gb_hours(GIB * 3600) == "1.000000"
    assert gb_hours(GIB * 3600 * 5 // 2) == "2.500000"
    assert gb_hours(GIB * 36) == "0.010000"
    assert gb_hours(GIB * 3600 * 1234567 // 1_000_000) == "1.234567"
    assert gb_hours(1000 * 60) == "0.000000"  # 60 kB-seconds is well below a millionth of a GB-hour


# --- the sampling job ------------------------------------------------------------------------------------------


async def test_samples_accumulate_byte_seconds(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await _put(client, user, "a", 1000)
    first = await sample_usage(_ctx(app), now=T0)
    assert (first.users, first.sampled) == (1, 1)
    # The first sample starts the clock: counts recorded, nothing integrated yet.
    assert await _days(app, user.id) == {T0.date(): (1000, 1, 0)}

    await sample_usage(_ctx(app), now=T0 + timedelta(seconds=60))
    assert await _days(app, user.id) == {T0.date(): (1000, 1, 60_000)}

    await _put(client, user, "b", 500)
    await sample_usage(_ctx(app), now=T0 + timedelta(seconds=90))
    # Each interval is charged at the counter's value when it is sampled (1500 bytes x 30 s).
    assert await _days(app, user.id) == {T0.date(): (1500, 2, 60_000 + 45_000)}

    assert (await client.delete("/api/storage/files/b", headers=user.headers)).status_code == 200
    await sample_usage(_ctx(app), now=T0 + timedelta(seconds=90, microseconds=500_000))
    assert await _days(app, user.id) == {T0.date(): (1000, 1, 105_000 + 500)}


async def test_an_hour_of_ten_gib_is_ten_gb_hours(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await _put(client, user, "a", 1)
    await _set_counter(app, user.id, 10 * GIB, 3)
    await sample_usage(_ctx(app), now=T0)
    for minutes in range(5, 65, 5):
        await sample_usage(_ctx(app), now=T0 + timedelta(minutes=minutes))
    assert await _days(app, user.id) == {T0.date(): (10 * GIB, 3, 10 * GIB * 3600)}
    r = await client.get(
        "/api/storage/usage/history", params={"from": "2030-01-15", "to": "2030-01-15"}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["gbHours"] == "10.000000"


async def test_midnight_splits_the_interval_and_gaps_fill_days(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await _put(client, user, "a", 1000)
    late = datetime(2030, 1, 15, 23, 59, tzinfo=UTC)
    await sample_usage(_ctx(app), now=late)
    await _put(client, user, "b", 1000)
    await sample_usage(_ctx(app), now=late + timedelta(minutes=2))
    days = await _days(app, user.id)
    # 60 s on each side of midnight; the 15th keeps the counts of its own last sample (23:59).
    assert days == {date(2030, 1, 15): (1000, 1, 2000 * 60), date(2030, 1, 16): (2000, 2, 2000 * 60)}

    # The job was down until noon on the 18th: the days in between are filled, each charged its share.
    await sample_usage(_ctx(app), now=datetime(2030, 1, 18, 12, 0, tzinfo=UTC))
    days = await _days(app, user.id)
    assert days[date(2030, 1, 16)] == (2000, 2, 2000 * 86_400)
    assert days[date(2030, 1, 17)] == (2000, 2, 2000 * 86_400)
    assert days[date(2030, 1, 18)] == (2000, 2, 2000 * 43_200)


async def test_concurrent_or_stale_runs_never_count_twice(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, other_user: TestUser
) -> None:
    await _put(client, user, "a", 1000)
    await _put(client, other_user, "a", 10)
    await sample_usage(_ctx(app), now=T0)
    t1 = T0 + timedelta(minutes=1)
    results = await asyncio.gather(*(sample_usage(_ctx(app), now=t1) for _ in range(4)))
    assert sum(r.sampled for r in results) == 2  # each user's interval claimed by exactly one run
    assert (await _days(app, user.id))[T0.date()] == (1000, 1, 60_000)
    assert (await _days(app, other_user.id))[T0.date()] == (10, 1, 600)
    # A run whose clock is behind the last sample integrates nothing (only forward).
    stale = await sample_usage(_ctx(app), now=T0 + timedelta(seconds=30))
    assert stale.sampled == 0
    assert (await _days(app, user.id))[T0.date()] == (1000, 1, 60_000)


async def test_users_without_a_counter_are_not_sampled(app: FastAPI, user: TestUser) -> None:
    result = await sample_usage(_ctx(app), now=T0)
    assert (result.users, result.sampled) == (0, 0)
    assert await _days(app, user.id) == {}


# --- the history API -------------------------------------------------------------------------------------------


async def _two_days(client: httpx.AsyncClient, app: FastAPI, user: TestUser, size: int) -> None:
    await _put(client, user, "a", size)
    await sample_usage(_ctx(app), now=datetime(2030, 1, 15, 12, tzinfo=UTC))
    await sample_usage(_ctx(app), now=datetime(2030, 1, 16, 12, tzinfo=UTC))


async def test_history_shape_and_range(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await _two_days(client, app, user, 1000)
    r = await client.get(
        "/api/storage/usage/history", params={"from": "2030-01-01", "to": "2030-01-31"}, headers=user.headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"from", "to", "items", "asOf"}
    assert (body["from"], body["to"]) == ("2030-01-01", "2030-01-31")
    assert body["asOf"].startswith("2030-01-16T12:00:00")
    assert body["items"] == [
        {
            "day": "2030-01-15",
            "bytesUsed": 1000,
            "objectCount": 1,
            "byteSeconds": 1000 * 43_200,
            "gbHours": gb_hours(1000 * 43_200),
        },
        {
            "day": "2030-01-16",
            "bytesUsed": 1000,
            "objectCount": 1,
            "byteSeconds": 1000 * 43_200,
            "gbHours": "0.000011",
        },
    ]
    one = await client.get(
        "/api/storage/usage/history", params={"from": "2030-01-16", "to": "2030-01-16"}, headers=user.headers
    )
    assert [i["day"] for i in one.json()["items"]] == ["2030-01-16"]
    # An API key may read its user's history, like the current usage.
    key = await make_key(client, user)
    by_key = await client.get(
        "/api/storage/usage/history", params={"from": "2030-01-01", "to": "2030-01-31"}, headers=key["headers"]
    )
    assert by_key.status_code == 200 and by_key.json()["items"] == body["items"]


async def test_history_defaults_to_the_last_30_days(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    today = utcnow().date()
    await _put(client, user, "a", 10)
    await sample_usage(_ctx(app), now=datetime.combine(today, time(0, 0, 1), tzinfo=UTC))
    r = await client.get("/api/storage/usage/history", headers=user.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["to"] == today.isoformat() and body["from"] == (today - timedelta(days=29)).isoformat()
    assert [i["day"] for i in body["items"]] == [today.isoformat()]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2030-02-01", "to": "2030-01-01"}, "invalid_range"),
        ({"from": "2029-01-01", "to": "2030-01-02"}, "range_too_long"),
        ({"from": "2030-13-01", "to": "2030-01-01"}, "validation_error"),
        ({"from": "yesterday"}, "validation_error"),
    ],
)
async def test_history_refuses_bad_ranges(
    client: httpx.AsyncClient, user: TestUser, params: dict[str, str], code: str
) -> None:
    r = await client.get("/api/storage/usage/history", params=params, headers=user.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


async def test_history_allows_366_days(client: httpx.AsyncClient, user: TestUser) -> None:
    r = await client.get(
        "/api/storage/usage/history", params={"from": "2028-01-01", "to": "2028-12-31"}, headers=user.headers
    )
    assert r.status_code == 200 and r.json()["items"] == [] and r.json()["asOf"] is None


async def test_history_is_the_callers_own(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, other_user: TestUser
) -> None:
    await _two_days(client, app, user, 1000)
    r = await client.get(
        "/api/storage/usage/history", params={"from": "2030-01-01", "to": "2030-01-31"}, headers=other_user.headers
    )
    assert r.status_code == 200 and r.json()["items"] == []
    assert (await client.get("/api/storage/usage/history")).status_code == 401


# --- admin -----------------------------------------------------------------------------------------------------


async def test_admin_history_per_user_and_totals(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    await _put(client, user, "a", 1000)
    await _put(client, other_user, "a", 300)
    await _put(client, other_user, "b", 200)
    await _two_days(client, app, user, 1000)  # samples both users at noon on the 15th and the 16th
    params = {"from": "2030-01-15", "to": "2030-01-16"}

    totals = await client.get("/api/admin/usage/history", params=params, headers=admin.headers)
    assert totals.status_code == 200, totals.text
    body = totals.json()
    assert body["userId"] is None and body["asOf"].startswith("2030-01-16T12:00:00")
    assert [(i["day"], i["bytesUsed"], i["objectCount"], i["byteSeconds"], i["users"]) for i in body["items"]] == [
        ("2030-01-15", 1500, 3, 1500 * 43_200, 2),
        ("2030-01-16", 1500, 3, 1500 * 43_200, 2),
    ]

    one = await client.get(
        "/api/admin/usage/history", params={**params, "userId": other_user.id}, headers=admin.headers
    )
    assert one.status_code == 200, one.text
    assert one.json()["userId"] == other_user.id
    assert [(i["bytesUsed"], i["objectCount"], i["users"]) for i in one.json()["items"]] == [(500, 2, 1), (500, 2, 1)]

    missing = await client.get("/api/admin/usage/history", params={"userId": "01" + "0" * 24}, headers=admin.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "user_not_found"
    bad = await client.get(
        "/api/admin/usage/history", params={"from": "2030-02-01", "to": "2030-01-01"}, headers=admin.headers
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_range"
    denied = await client.get("/api/admin/usage/history", headers=user.headers)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_required"


# --- SQLite ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("usage-sqlite")
    url = f"sqlite+aiosqlite:///{directory}/p.db"
    upgrade(url)
    async for application in running_app(make_settings(url, directory)):
        yield application


async def test_sampling_on_sqlite(sqlite_app: FastAPI) -> None:
    """The upserts, the conditional claim and the timestamp comparison behave the same on SQLite."""
    async with client_for(sqlite_app) as client:
        user = await make_user(client, "lite")
        await set_quota(sqlite_app, user.id, storage_bytes=1000)
        await _put(client, user, "a", 900)
        late = datetime(2030, 1, 15, 23, 59, tzinfo=UTC)
        first = await sample_usage(_ctx(sqlite_app), now=late)
        assert first.alerts == 1
        results = await asyncio.gather(
            *(sample_usage(_ctx(sqlite_app), now=late + timedelta(minutes=2)) for _ in range(3))
        )
        assert sum(r.sampled for r in results) == 1 and sum(r.alerts for r in results) == 0
        assert (await sample_usage(_ctx(sqlite_app), now=late)).sampled == 0
        assert await _days(sqlite_app, user.id) == {
            date(2030, 1, 15): (900, 1, 900 * 60),
            date(2030, 1, 16): (900, 1, 900 * 60),
        }
        r = await client.get(
            "/api/storage/usage/history", params={"from": "2030-01-15", "to": "2030-01-16"}, headers=user.headers
        )
        assert r.status_code == 200, r.text
        assert [i["byteSeconds"] for i in r.json()["items"]] == [54_000, 54_000]
        assert r.json()["asOf"].startswith("2030-01-16T00:01:00")
        notes = await client.get("/api/notifications", headers=user.headers)
        assert [n["data"]["threshold"] for n in notes.json()["items"]] == [80]
