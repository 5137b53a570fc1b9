"""Reservations left by a crashed process expire; the job releases them and repairs that name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from pockity.db import unit_of_work
from pockity.kit.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.models import AuditEvent, Reservation
from pockity.storage import repository as repo
from pockity.storage.tasks import release_expired_reservations
from tests.fixtures.storage import local_files, reservation_count, stored_rows, usage
from tests.fixtures.users import TestUser


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _crashed_reservation(app: FastAPI, user_id: str, name: str, nbytes: int, *, ago: timedelta) -> None:
    """What a process leaves when it dies mid-upload: a reservation and reserved usage."""
    async with unit_of_work(app.state.db) as s:
        await repo.ensure_counter(s, repo.user_scope(user_id))
        assert await repo.try_reserve(
            s, repo.user_scope(user_id), nbytes=nbytes, objects=1, max_bytes=10**9, max_objects=10
        )
        s.add(
            Reservation(
                user_id=user_id,
                name=name,
                bytes=nbytes,
                objects=1,
                key_bytes=0,
                key_objects=0,
                expires_at=utcnow() - ago,
            )
        )


def _ctx(app: FastAPI) -> JobContext:
    return JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)


async def test_crash_after_the_backend_write_is_adopted(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await _crashed_reservation(app, user.id, "orphan.bin", 500, ago=timedelta(seconds=1))
    await app.state.storage.put_stream(f"users/{user.id}/orphan.bin", _one(b"o" * 321), content_type="x/y")
    assert (await usage(client, user))["bytesReserved"] == 500
    assert await release_expired_reservations(_ctx(app)) == 1
    assert await stored_rows(app, user.id) == {"orphan.bin": 321}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (321, 1, 0)
    assert await reservation_count(app) == 0
    async with app.state.db.sessions() as s:
        event = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "storage.reservation_expired"))).one()
    assert event.details["repair"] == "adopted" and event.details["name"] == "orphan.bin"


async def test_crash_before_the_backend_write_just_releases(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await _crashed_reservation(app, user.id, "never.bin", 700, ago=timedelta(seconds=1))
    await _crashed_reservation(app, user.id, "still-running.bin", 100, ago=timedelta(seconds=-600))  # not expired
    assert await release_expired_reservations(_ctx(app)) == 1
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 100)
    assert await stored_rows(app, user.id) == {} and local_files(app, user.id) == {}


async def test_crash_mid_delete_drops_the_row(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    assert (await client.put("/api/storage/files/gone.txt", content=b"g" * 50, headers=user.headers)).status_code == 201
    # The delete removed the file, then died before its database commit; its lock is left behind.
    await app.state.storage.delete(f"users/{user.id}/gone.txt")
    async with unit_of_work(app.state.db) as s:
        s.add(
            Reservation(
                user_id=user.id,
                name="gone.txt",
                bytes=0,
                objects=0,
                key_bytes=0,
                key_objects=0,
                expires_at=utcnow() - timedelta(seconds=1),
            )
        )
    assert await release_expired_reservations(_ctx(app)) == 1
    assert await stored_rows(app, user.id) == {}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"]) == (0, 0)
