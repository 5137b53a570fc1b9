"""The upload path's shortcuts: counters created only on a miss, the INSERT-first settle of a new name, one
UPDATE per counter in a settle, and the one-query limits read. Each must give what the longer way gave."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import delete, select, update

from pockity.db import unit_of_work
from pockity.models import UsageCounter, User
from pockity.storage import uploads
from pockity.storage.repository import key_scope, user_scope
from tests.fixtures.storage import reservation_count, set_quota, stored_rows, usage
from tests.fixtures.users import TestUser, make_key, make_user


async def _counter(app: FastAPI, scope: str) -> tuple[int, int, int, int] | None:
    async with app.state.db.sessions() as s:
        c = await s.get(UsageCounter, scope)
        return (c.bytes_used, c.object_count, c.bytes_reserved, c.objects_reserved) if c else None


async def _drop_counter(app: FastAPI, scope: str) -> None:
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(delete(UsageCounter).where(UsageCounter.scope == scope))


async def test_first_uploads_create_the_user_and_key_counters(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    key = await make_key(client, user)
    assert await _counter(app, user_scope(user.id)) is None and await _counter(app, key_scope(key["id"])) is None
    assert (await client.put("/api/storage/files/a", content=b"a" * 10, headers=key["headers"])).status_code == 201
    assert await _counter(app, user_scope(user.id)) == (10, 1, 0, 0)
    assert await _counter(app, key_scope(key["id"])) == (10, 1, 0, 0)
    assert (await client.put("/api/storage/files/b", content=b"b" * 5, headers=key["headers"])).status_code == 201
    assert await _counter(app, key_scope(key["id"])) == (15, 2, 0, 0)


async def test_a_first_upload_over_a_fresh_key_tier_is_refused_with_its_details(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    tiny = await set_quota(app, (await make_user(client, "tierholder")).id, storage_bytes=10)
    key = await make_key(client, user, tierId=tiny)
    r = await client.put("/api/storage/files/big", content=b"x" * 11, headers=key["headers"])
    assert r.status_code == 413, r.text
    details = r.json()["error"]["details"]
    assert (details["scope"], details["usedBytes"], details["remainingBytes"]) == ("key", 0, 10)
    # The refused unit of work leaves nothing: no hold on the user (reserved first), no counters, no reservation.
    assert await _counter(app, user_scope(user.id)) is None and await _counter(app, key_scope(key["id"])) is None
    assert await reservation_count(app) == 0
    assert (await client.put("/api/storage/files/big", content=b"x" * 10, headers=key["headers"])).status_code == 201


async def test_a_stale_new_name_hint_still_replaces_the_row(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    assert (await client.put("/api/storage/files/f", content=b"f" * 100, headers=user.headers)).status_code == 201
    async with unit_of_work(app.state.db) as session:
        obj = await uploads.record_object(
            session, user.id, "f", size=40, etag="e40", content_type=None, writer_key_id=None, expect_new=True
        )
    assert (obj.size, obj.etag) == (40, "e40")
    assert await stored_rows(app, user.id) == {"f": 40}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (40, 1, 0)


async def test_a_missing_writer_counter_gets_what_it_got_from_one_update_per_change(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    """Before: the old writer's UPDATE found no row, then the counter was created and the new size added."""
    key = await make_key(client, user)
    assert (await client.put("/api/storage/files/k", content=b"k" * 100, headers=key["headers"])).status_code == 201
    await _drop_counter(app, key_scope(key["id"]))
    async with unit_of_work(app.state.db) as session:
        await uploads.record_object(
            session, user.id, "k", size=70, etag="e70", content_type=None, writer_key_id=key["id"]
        )
    assert await _counter(app, key_scope(key["id"])) == (70, 1, 0, 0)
    assert await _counter(app, user_scope(user.id)) == (70, 1, 0, 0)


async def test_a_replacement_settles_usage_and_the_hold_of_every_scope(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    one, two = await make_key(client, user), await make_key(client, user)
    assert (await client.put("/api/storage/files/r", content=b"1" * 100, headers=one["headers"])).status_code == 201
    # Another key replaces it with a bigger file: usage moves from key one to key two, holds are given back.
    assert (await client.put("/api/storage/files/r", content=b"2" * 150, headers=two["headers"])).status_code == 201
    assert await _counter(app, user_scope(user.id)) == (150, 1, 0, 0)
    assert await _counter(app, key_scope(one["id"])) == (0, 0, 0, 0)
    assert await _counter(app, key_scope(two["id"])) == (150, 1, 0, 0)
    # The same key shrinks it: nothing to reserve, one object throughout.
    assert (await client.put("/api/storage/files/r", content=b"3" * 20, headers=two["headers"])).status_code == 201
    assert await _counter(app, user_scope(user.id)) == (20, 1, 0, 0)
    assert await _counter(app, key_scope(two["id"])) == (20, 1, 0, 0)
    assert await reservation_count(app) == 0


async def test_billing_hold_stops_uploads_with_a_tier_key_too(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    tier = await set_quota(app, (await make_user(client, "tierholder")).id, storage_bytes=1000)
    key = await make_key(client, user, tierId=tier)
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(User).where(User.id == user.id).values(billing_hold="past_due"))
    for headers in (key["headers"], user.headers):
        r = await client.put("/api/storage/files/x", content=b"x", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    async with app.state.db.sessions() as s:
        assert await s.scalar(select(User.billing_hold).where(User.id == user.id)) == "past_due"
    assert await reservation_count(app) == 0
