"""Uploads that end with their outcome unknown, and uploads that outlive their reservation's TTL.

A backend that stores the bytes and then fails (S3 down or the server killed after the write, before the
answer) must never leave a file the client was told failed counted; a slow upload must keep its reservation.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.auth.schemas import Principal
from pockity.kit.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.models import AuditEvent, Reservation
from pockity.storage import uploads
from pockity.storage.backends import ObjectInfo, StorageUnavailable
from pockity.storage.tasks import release_expired_reservations
from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.storage import local_files, reservation_count, stored_rows, usage
from tests.fixtures.users import TestUser, make_user


class LandsThenFails:
    """The real local backend, except that a write can store its bytes and then fail (the answer is lost), and
    deletes can fail (S3 unreachable)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lose_answers = False
        self.refuse_deletes = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], **kwargs: Any) -> ObjectInfo:
        info: ObjectInfo = await self.inner.put_stream(key, chunks, **kwargs)
        if self.lose_answers:
            raise StorageUnavailable("S3 PutObject failed: ServerDisconnectedError.")
        return info

    async def delete(self, key: str) -> None:
        if self.refuse_deletes:
            raise StorageUnavailable("S3 DeleteObject failed: ClientConnectorError.")
        await self.inner.delete(key)


@pytest.fixture
async def flaky(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, LandsThenFails]]:
    async for app in running_app(make_settings(pg_url, tmp_path)):
        backend = LandsThenFails(app.state.storage)
        app.state.storage = backend
        yield app, backend


def _ctx(app: FastAPI) -> JobContext:
    return JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)


async def _expire_all(app: FastAPI) -> int:
    """Run the expiry job as it would run once every left reservation's TTL has passed."""
    async with app.state.db.sessions() as s, s.begin():
        for r in (await s.scalars(select(Reservation))).all():
            r.expires_at = r.expires_at - timedelta(days=1)
    return await release_expired_reservations(_ctx(app))


async def _books(client: httpx.AsyncClient, user: TestUser) -> tuple[object, object, object]:
    u = await usage(client, user)
    return u["bytesUsed"], u["objectCount"], u["bytesReserved"]


async def _past_the_grace(app: FastAPI) -> None:
    """Move every reservation's expiry to now, as if the unknown-outcome grace had passed."""
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(Reservation).values(expires_at=utcnow()))


async def test_new_file_whose_answer_was_lost_is_discarded_at_once_and_again_after_a_grace(
    flaky: tuple[FastAPI, LandsThenFails],
) -> None:
    app, backend = flaky
    async with client_for(app) as client:
        user = await make_user(client, "lost")
        backend.lose_answers = True
        r = await client.put("/api/storage/files/lost.bin", content=b"L" * 700, headers=user.headers)
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable", r.text
        # The bytes had landed; they were never acknowledged, so they are gone and nothing is counted.
        assert local_files(app, user.id) == {} and await stored_rows(app, user.id) == {}
        # The write might still land (S3 goes on with a request its client left): the name stays locked, its
        # bytes reserved, until the expiry job has deleted once more after the grace.
        assert await _books(client, user) == (0, 0, 700) and await reservation_count(app) == 1
        assert await release_expired_reservations(_ctx(app)) == 0  # not due yet
        await app.state.storage.inner.put_stream(
            f"users/{user.id}/lost.bin", _one(b"L" * 700), content_type=None, size_hint=700
        )  # the late write
        await _past_the_grace(app)
        assert await release_expired_reservations(_ctx(app)) == 1
        assert local_files(app, user.id) == {} and await stored_rows(app, user.id) == {}
        assert await _books(client, user) == (0, 0, 0) and await reservation_count(app) == 0


async def test_new_file_left_while_s3_is_away_is_deleted_by_the_expiry_job(
    flaky: tuple[FastAPI, LandsThenFails],
) -> None:
    app, backend = flaky
    async with client_for(app) as client:
        user = await make_user(client, "away")
        backend.lose_answers = backend.refuse_deletes = True
        r = await client.put("/api/storage/files/left.bin", content=b"x" * 900, headers=user.headers)
        assert r.status_code == 503, r.text
        assert local_files(app, user.id) == {"left.bin": 900}  # could not be deleted yet
        assert await reservation_count(app) == 1  # handed to the job, which fails while S3 is away
        await _past_the_grace(app)
        with pytest.raises(StorageUnavailable):
            await release_expired_reservations(_ctx(app))
        assert await reservation_count(app) == 1
        backend.refuse_deletes = False
        await _past_the_grace(app)
        assert await release_expired_reservations(_ctx(app)) == 1
        assert local_files(app, user.id) == {} and await stored_rows(app, user.id) == {}
        assert await _books(client, user) == (0, 0, 0) and await reservation_count(app) == 0
        async with app.state.db.sessions() as s:
            event = (
                await s.scalars(select(AuditEvent).where(AuditEvent.action == "storage.reservation_expired"))
            ).one()
        assert event.details["discarded"] is True and event.details["name"] == "left.bin"


async def test_new_file_left_by_a_killed_server_is_discarded_not_adopted(
    flaky: tuple[FastAPI, LandsThenFails],
) -> None:
    """A crash after the write: the reservation stays (with its discard mark) until it expires."""
    app, _ = flaky
    async with client_for(app) as client:
        user = await make_user(client, "killed")
        ok = await client.put("/api/storage/files/kept.bin", content=b"k" * 100, headers=user.headers)
        assert ok.status_code == 201
        # What `begin` + the backend write leave when the process dies before `finish`.
        principal = _principal(user)
        ticket = await uploads.begin(app.state.db, principal, "crashed.bin", 300, app.state.upload_policy)
        assert ticket.discard
        await app.state.storage.inner.put_stream(
            f"users/{user.id}/crashed.bin", _one(b"c" * 300), content_type=None, size_hint=300
        )
        assert await _books(client, user) == (100, 1, 300)
        assert await _expire_all(app) == 1
        assert local_files(app, user.id) == {"kept.bin": 100}
        assert await stored_rows(app, user.id) == {"kept.bin": 100}
        assert await _books(client, user) == (100, 1, 0) and await reservation_count(app) == 0


async def test_replacement_whose_answer_was_lost_keeps_the_file_and_follows_s3(
    flaky: tuple[FastAPI, LandsThenFails],
) -> None:
    app, backend = flaky
    async with client_for(app) as client:
        user = await make_user(client, "replace")
        assert (
            await client.put("/api/storage/files/doc.txt", content=b"o" * 40, headers=user.headers)
        ).status_code == 201
        backend.lose_answers = True
        r = await client.put("/api/storage/files/doc.txt", content=b"n" * 64, headers=user.headers)
        assert r.status_code == 503, r.text
        # The live file is never deleted: the key holds the new bytes, and the job makes the row follow them.
        assert local_files(app, user.id) == {"doc.txt": 64}
        assert await release_expired_reservations(_ctx(app)) == 1
        assert await stored_rows(app, user.id) == {"doc.txt": 64}
        assert await _books(client, user) == (64, 1, 0) and await reservation_count(app) == 0


@pytest.fixture
async def short_ttl_app(pg_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    async for app in running_app(make_settings(pg_url, tmp_path)):
        app.state.upload_policy = dataclasses.replace(app.state.upload_policy, reservation_ttl=timedelta(seconds=1.0))
        yield app


async def test_slow_upload_keeps_its_reservation_past_the_ttl(short_ttl_app: FastAPI) -> None:
    """The heartbeat: a body that takes several TTLs is never taken by the expiry job running meanwhile."""
    app = short_ttl_app
    sent = asyncio.Event()
    taken = 0

    async def slow_body() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"s" * 1000
            await asyncio.sleep(0.7)  # 4.2 s in all: four TTLs (a beat has TTL/3 to land, even on a busy machine)
        sent.set()

    async def expiry_job() -> None:
        nonlocal taken
        while not sent.is_set():
            taken += await release_expired_reservations(_ctx(app))
            await asyncio.sleep(0.1)

    async with client_for(app) as client:
        user = await make_user(client, "slow")
        job = asyncio.create_task(expiry_job())
        r = await client.put(
            "/api/storage/files/slow.bin", content=slow_body(), headers={**user.headers, "Content-Length": "6000"}
        )
        await job
        assert r.status_code == 201, r.text
        assert taken == 0
        assert await stored_rows(app, user.id) == {"slow.bin": 6000}
        assert await _books(client, user) == (6000, 1, 0) and await reservation_count(app) == 0


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _principal(user: TestUser) -> Principal:
    return Principal(user_id=user.id, email=user.email, name="killed", role="USER", is_active=True, created_at=utcnow())
