"""Reconciliation: the bucket and the database walked side by side; drift repaired, counted, audited."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.audit.service import Actor
from pockity.db import unit_of_work
from pockity.kit.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.migrate import upgrade
from pockity.models import AuditEvent, ReconciliationReport, Reservation, UsageCounter, User
from pockity.storage import reconcile as rec
from pockity.storage import repository as repo
from pockity.storage import service as storage_service
from pockity.storage.backends import ObjectInfo
from pockity.storage.tasks import reconcile_job
from pockity.storage.uploads import record_object
from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.storage import MIB, reservation_count, set_quota, stored_rows, usage
from tests.fixtures.users import TestUser, make_user

ADMIN = Actor.system("test")


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _put(app: FastAPI, user_id: str, name: str, data: bytes) -> None:
    """Write behind Pockity's back: straight to the backend, no row, no usage."""
    await app.state.storage.put_stream(f"users/{user_id}/{name}", _one(data), content_type="text/plain")


async def _upload(client: httpx.AsyncClient, user: TestUser, name: str, data: bytes) -> None:
    r = await client.put(f"/api/storage/files/{name}", content=data, headers=user.headers)
    assert r.status_code == 201, r.text


async def _bucket(app: FastAPI, user_id: str) -> dict[str, int]:
    """What the backend really holds for the user: name -> size."""
    prefix = f"users/{user_id}/"
    return {i.key[len(prefix) :]: i.size async for i in app.state.storage.iter_objects(prefix)}


async def _counter(app: FastAPI, user_id: str) -> tuple[int, int]:
    async with app.state.db.sessions() as s:
        c = await s.get(UsageCounter, repo.user_scope(user_id))
    return (c.bytes_used, c.object_count) if c else (0, 0)


async def _events(app: FastAPI, action: str) -> list[AuditEvent]:
    async with app.state.db.sessions() as s:
        return list((await s.scalars(select(AuditEvent).where(AuditEvent.action == action))).all())


async def _drifted_user(app: FastAPI, client: httpx.AsyncClient) -> TestUser:
    """A user whose bucket and rows disagree in every way: one object of each kind of drift."""
    user = await make_user(client, "drift")
    await set_quota(app, user.id, 10 * MIB)
    await _upload(client, user, "kept.txt", b"k" * 10)
    await _upload(client, user, "gone.txt", b"g" * 20)
    await _upload(client, user, "docs/changed.txt", b"c" * 30)
    await _put(app, user.id, "docs/adopted.bin", b"a" * 40)  # no row
    await app.state.storage.delete(f"users/{user.id}/gone.txt")  # row without object
    await _put(app, user.id, "docs/changed.txt", b"C" * 35)  # size and etag differ
    return user


def _expected_drift(**extra: Any) -> dict[str, Any]:
    return {
        "adopted": 1,
        "removed": 1,
        "corrected": 1,
        "bytesDrift": 40 - 20 + 5,
        "objectsDrift": 0,
        "counterFixed": False,
        **extra,
    }


# --- local backend ---------------------------------------------------------------------------------------


async def test_dry_run_reports_and_changes_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await _drifted_user(app, client)
    rows_before, counter_before = await stored_rows(app, user.id), await _counter(app, user.id)
    report = await rec.reconcile(app.state.db, app.state.storage, dry_run=True, actor=ADMIN)
    assert (report.status, report.dry_run, report.trigger) == ("DONE", True, "cli")
    assert (report.adopted, report.removed, report.corrected, report.objects_seen) == (1, 1, 1, 3)
    assert report.drift == {user.id: _expected_drift()}
    assert await stored_rows(app, user.id) == rows_before
    assert await _counter(app, user.id) == counter_before == (60, 3)
    assert await _events(app, "storage.reconciled") == []  # nothing applied, nothing to audit
    assert len(await _events(app, "storage.reconciliation_run")) == 1


async def test_drift_is_repaired_counted_and_audited(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await _drifted_user(app, client)
    clean = await make_user(client, "clean")
    await set_quota(app, clean.id, MIB)
    await _upload(client, clean, "fine.txt", b"f" * 7)

    report = await rec.reconcile(app.state.db, app.state.storage, actor=ADMIN)

    assert report.status == "DONE" and report.finished_at is not None and report.error is None
    assert (report.adopted, report.removed, report.corrected, report.objects_seen) == (1, 1, 1, 4)
    assert report.drift == {user.id: _expected_drift()}  # the clean user has no entry
    rows = await stored_rows(app, user.id)
    assert rows == await _bucket(app, user.id) == {"kept.txt": 10, "docs/adopted.bin": 40, "docs/changed.txt": 35}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (85, 3, 0)
    async with app.state.db.sessions() as s:
        stored = await s.get(ReconciliationReport, report.id)
    assert stored is not None and stored.drift == report.drift and stored.status == "DONE"

    (event,) = await _events(app, "storage.reconciled")
    assert (event.actor_type, event.actor_id, event.target_type, event.target_id) == ("system", "test", "user", user.id)
    assert event.details == {**_expected_drift(), "reportId": report.id}
    (run,) = await _events(app, "storage.reconciliation_run")
    assert run.target_id == report.id and run.details["status"] == "DONE" and run.details["usersWithDrift"] == 1

    again = await rec.reconcile(app.state.db, app.state.storage, user_id=user.id, actor=ADMIN)
    assert (again.adopted, again.removed, again.corrected, again.drift) == (0, 0, 0, {})
    assert again.scope_user_id == user.id and again.objects_seen == 3


async def test_adopted_object_can_then_be_read_and_deleted(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    await set_quota(app, user.id, MIB)
    await _put(app, user.id, "orphan.txt", b"o" * 12)
    await rec.reconcile(app.state.db, app.state.storage, user_id=user.id, actor=ADMIN)
    r = await client.get("/api/storage/files/orphan.txt/content", headers=user.headers)
    assert r.status_code == 200 and r.content == b"o" * 12
    assert (await client.delete("/api/storage/files/orphan.txt", headers=user.headers)).status_code == 200
    assert (await usage(client, user))["bytesUsed"] == 0


async def test_name_with_a_reservation_in_flight_is_skipped(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    await _put(app, user.id, "uploading.bin", b"u" * 50)  # the upload's bytes have landed; settle has not run
    async with unit_of_work(app.state.db) as s:
        s.add(
            Reservation(
                user_id=user.id,
                name="uploading.bin",
                bytes=50,
                objects=1,
                key_bytes=0,
                key_objects=0,
                expires_at=utcnow() + timedelta(minutes=5),
            )
        )
    for dry_run in (True, False):
        report = await rec.reconcile(app.state.db, app.state.storage, dry_run=dry_run, actor=ADMIN)
        assert (report.adopted, report.objects_seen, report.drift) == (0, 1, {}), dry_run
    assert await stored_rows(app, user.id) == {}
    assert await reservation_count(app) == 1  # the upload's own lock is untouched


async def test_a_name_settled_since_the_walk_saw_it_is_left_alone(app: FastAPI, client: httpx.AsyncClient) -> None:
    """The walk nominated the name (an orphan, or a stale size) but its upload has settled since: the re-check
    under the lock finds row and object agreeing, so nothing is adopted twice or overwritten."""
    user = await make_user(client)
    await set_quota(app, user.id, MIB)
    await _upload(client, user, "raced.txt", b"r" * 10)
    for dry_run in (True, False):
        assert await rec.repair_name(app.state.db, app.state.storage, user.id, "raced.txt", dry_run=dry_run) is None
    assert await _counter(app, user.id) == (10, 1)
    assert await stored_rows(app, user.id) == {"raced.txt": 10}


async def test_an_upload_started_during_a_repair_waits_and_succeeds(app: FastAPI, client: httpx.AsyncClient) -> None:
    """While a name is being repaired its lock is held, uncommitted: an upload of it waits, then goes on."""
    user = await make_user(client)
    await set_quota(app, user.id, MIB)
    await _put(app, user.id, "orphan.txt", b"o" * 5)
    storage = app.state.storage
    racing: list[asyncio.Task[httpx.Response]] = []

    class Racing:
        def __getattr__(self, attr: str) -> Any:
            return getattr(storage, attr)

        async def head(self, key: str) -> ObjectInfo:
            upload = client.put("/api/storage/files/orphan.txt", content=b"N" * 70, headers=user.headers)
            racing.append(asyncio.create_task(upload))
            await asyncio.sleep(0.3)
            assert not racing[0].done()  # waiting for the name's lock, not refused
            return await storage.head(key)  # type: ignore[no-any-return]

    repair = await rec.repair_name(app.state.db, Racing(), user.id, "orphan.txt")
    assert repair == rec.Repair("adopted", 5, 1)
    r = await asyncio.wait_for(racing[0], 10)
    assert r.status_code == 201, r.text
    assert await stored_rows(app, user.id) == {"orphan.txt": 70}
    assert await _counter(app, user.id) == (70, 1)
    assert await reservation_count(app) == 0


async def test_counter_drift_is_recomputed(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    await set_quota(app, user.id, MIB)
    await _upload(client, user, "a.txt", b"a" * 100)
    async with unit_of_work(app.state.db) as s:
        await s.execute(
            update(UsageCounter)
            .where(UsageCounter.scope == repo.user_scope(user.id))
            .values(bytes_used=7, object_count=5)
        )
    dry = await rec.reconcile(app.state.db, app.state.storage, dry_run=True, actor=ADMIN)
    assert dry.drift[user.id]["bytesDrift"] == 93 and await _counter(app, user.id) == (7, 5)
    report = await rec.reconcile(app.state.db, app.state.storage, actor=ADMIN)
    assert report.drift == {
        user.id: {
            "adopted": 0,
            "removed": 0,
            "corrected": 0,
            "bytesDrift": 93,
            "objectsDrift": -4,
            "counterFixed": True,
        }
    }
    assert await _counter(app, user.id) == (100, 1)
    assert len(await _events(app, "storage.reconciled")) == 1


async def test_recount_waits_for_a_settle_holding_the_counter(app: FastAPI, client: httpx.AsyncClient) -> None:
    """The race a single `UPDATE ... SET bytes_used = (SELECT sum ...)` loses: a settle that has moved the
    counter but not committed. The recount must include its row once it commits, not overwrite it."""
    user = await make_user(client)
    await set_quota(app, user.id, MIB)
    await _upload(client, user, "first.txt", b"1" * 10)
    db = app.state.db
    async with db.sessions() as settle:
        await settle.begin()
        await record_object(settle, user.id, "second.txt", size=25, etag="e", content_type=None, writer_key_id=None)
        recount = asyncio.create_task(rec.recount_usage(db, user.id))
        await asyncio.sleep(0.3)
        assert not recount.done()  # waiting for the settle's counter lock
        await settle.commit()
    assert await asyncio.wait_for(recount, 5) == (0, 0)
    assert await _counter(app, user.id) == (35, 2)


async def test_the_listing_prefix_always_ends_with_a_slash(app: FastAPI, client: httpx.AsyncClient) -> None:
    """users/{id} without the slash would also list users/{id}0/...: craft two such ids."""
    base = "r" + uuid.uuid4().hex[:8]
    short, long = base + "1", base + "10"
    async with unit_of_work(app.state.db) as s:
        for user_id in (short, long):
            s.add(User(id=user_id, email=f"{user_id}@example.com", name=user_id, password_hash="x"))
    await _put(app, short, "mine.txt", b"m" * 3)
    await _put(app, long, "theirs.txt", b"t" * 4)

    prefixes: list[str] = []
    storage = app.state.storage

    class Spy:
        def __getattr__(self, attr: str) -> Any:
            return getattr(storage, attr)

        def iter_objects(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
            prefixes.append(prefix)
            return storage.iter_objects(prefix, start_after)  # type: ignore[no-any-return]

    report = await rec.reconcile(app.state.db, Spy(), user_id=short, actor=ADMIN)
    assert prefixes == [f"users/{short}/"]
    assert report.objects_seen == 1
    assert await stored_rows(app, short) == {"mine.txt": 3}
    assert await stored_rows(app, long) == {}
    assert await _counter(app, short) == (3, 1)

    prefixes.clear()
    await rec.reconcile(app.state.db, Spy(), actor=ADMIN)
    assert sorted(prefixes) == [f"users/{short}/", f"users/{long}/"]
    assert await stored_rows(app, short) == {"mine.txt": 3} and await stored_rows(app, long) == {"theirs.txt": 4}


async def test_names_object_names_rejects_are_not_adopted(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    await _put(app, user.id, "bad\x01name.txt", b"x" * 5)
    await _put(app, user.id, "good.txt", b"g" * 6)
    report = await rec.reconcile(app.state.db, app.state.storage, actor=ADMIN)
    assert await stored_rows(app, user.id) == {"good.txt": 6}
    assert report.drift[user.id]["invalid"] == 1
    assert report.drift[user.id]["invalidKeys"] == [f"users/{user.id}/bad\x01name.txt"]
    assert report.adopted == 1 and report.objects_seen == 2


async def test_an_unordered_listing_fails_the_run_without_removing_rows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await make_user(client)
    await set_quota(app, user.id, MIB)
    for name in ("a.txt", "b.txt", "c.txt"):
        await _upload(client, user, name, b"x")
    storage = app.state.storage

    class Shuffled:
        def __getattr__(self, attr: str) -> Any:
            return getattr(storage, attr)

        async def iter_objects(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
            infos = [i async for i in storage.iter_objects(prefix, start_after)]
            for info in reversed(infos):
                yield info

    report = await rec.reconcile(app.state.db, Shuffled(), actor=ADMIN)
    assert report.status == "FAILED" and report.error is not None and "ListingOutOfOrder" in report.error
    assert report.finished_at is not None
    assert await stored_rows(app, user.id) == {"a.txt": 1, "b.txt": 1, "c.txt": 1}
    (run,) = await _events(app, "storage.reconciliation_run")
    assert run.details["status"] == "FAILED"


async def test_the_job_and_a_background_run(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    await _put(app, user.id, "bg.txt", b"b" * 9)
    ctx = JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)
    report = await reconcile_job(ctx)
    assert (report.trigger, report.status, report.adopted) == ("job", "DONE", 1)
    (event,) = await _events(app, "storage.reconciled")
    assert (event.actor_type, event.actor_id) == ("system", "jobs")

    await _put(app, user.id, "bg2.txt", b"b" * 2)
    started, task = await rec.start_reconcile(app.state.db, app.state.storage, user_id=user.id, actor=ADMIN)
    assert (started.status, started.trigger, started.scope_user_id) == ("RUNNING", "admin", user.id)
    done = await asyncio.wait_for(task, 10)
    assert (done.id, done.status, done.adopted) == (started.id, "DONE", 1)
    async with app.state.db.sessions() as s:
        page, cursor = await storage_service.list_reports(s, limit=1)
        assert [r.id for r in page] == [done.id] and cursor == done.id
        rest, _ = await storage_service.list_reports(s, cursor=cursor, limit=10)
        assert [r.id for r in rest] == [report.id]
        assert (await storage_service.get_report(s, done.id)).status == "DONE"
    with pytest.raises(storage_service.ReconciliationNotFound):
        async with app.state.db.sessions() as s:
            await storage_service.get_report(s, "0" * 26)
    from pockity.users.service import UserNotFound

    with pytest.raises(UserNotFound):
        await rec.reconcile(app.state.db, app.state.storage, user_id="nobody", actor=ADMIN)


async def test_failing_backend_fails_the_run(app: FastAPI, client: httpx.AsyncClient) -> None:
    from pockity.storage.backends import StorageUnavailable

    user = await make_user(client)
    await _put(app, user.id, "x.txt", b"x")
    storage = app.state.storage

    class Down:
        def __getattr__(self, attr: str) -> Any:
            return getattr(storage, attr)

        async def head(self, key: str) -> ObjectInfo:
            raise StorageUnavailable("S3 HeadObject failed")

    report = await rec.reconcile(app.state.db, Down(), actor=ADMIN)
    assert report.status == "FAILED" and "StorageUnavailable" in (report.error or "")
    assert await stored_rows(app, user.id) == {} and await reservation_count(app) == 0  # the lock rolled back
    ctx = JobContext(db=app.state.db, storage=Down(), settings=app.state.settings)
    with pytest.raises(rec.ReconciliationFailed):
        await reconcile_job(ctx)


# --- S3 (Ceph RGW) -----------------------------------------------------------------------------------------


async def test_s3_drift_is_repaired(s3_app: FastAPI, s3_client: httpx.AsyncClient) -> None:
    user = await _drifted_user(s3_app, s3_client)
    await _put(s3_app, user.id, "bad//name.txt", b"x" * 3)  # S3 accepts it; object_names does not
    await _put(s3_app, user.id, "folder/", b"")  # a console's "folder" marker

    dry = await rec.reconcile(s3_app.state.db, s3_app.state.storage, dry_run=True, actor=ADMIN)
    assert dry.status == "DONE" and (dry.adopted, dry.removed, dry.corrected) == (1, 1, 1)
    assert await stored_rows(s3_app, user.id) == {"kept.txt": 10, "gone.txt": 20, "docs/changed.txt": 30}

    report = await rec.reconcile(s3_app.state.db, s3_app.state.storage, actor=ADMIN)
    invalid = [f"users/{user.id}/bad//name.txt", f"users/{user.id}/folder/"]
    assert report.drift == {user.id: _expected_drift(invalid=2, invalidKeys=invalid)}
    assert report.objects_seen == 5
    rows = await stored_rows(s3_app, user.id)
    assert rows == {"kept.txt": 10, "docs/adopted.bin": 40, "docs/changed.txt": 35}
    u = await usage(s3_client, user)
    assert (u["bytesUsed"], u["objectCount"]) == (85, 3)
    async with s3_app.state.db.sessions() as s:
        adopted = await repo.get_object(s, user.id, "docs/adopted.bin")
    assert adopted is not None and adopted.content_type == "text/plain"  # from the HEAD, not the listing
    (event,) = await _events(s3_app, "storage.reconciled")
    assert event.target_id == user.id and event.details["adopted"] == 1


async def test_s3_reconcile_during_uploads_never_double_counts(s3_app: FastAPI, s3_client: httpx.AsyncClient) -> None:
    user = await make_user(s3_client)
    await set_quota(s3_app, user.id, 50 * MIB, max_objects=1000)
    # Work for the reconciler: orphans, some of which the uploads below also write.
    for i in range(20):
        await _put(s3_app, user.id, f"f{i:02d}.bin", b"o" * (100 + i))
    await _upload(s3_client, user, "stale.bin", b"s" * 10)
    await s3_app.state.storage.delete(f"users/{user.id}/stale.bin")

    for round_ in range(2):
        uploads = [
            _upload(s3_client, user, f"f{i:02d}.bin" if i % 2 else f"new{round_}-{i}.bin", b"u" * (1000 + i))
            for i in range(10)
        ]
        results = await asyncio.gather(
            rec.reconcile(s3_app.state.db, s3_app.state.storage, user_id=user.id, actor=ADMIN, concurrency=3),
            *uploads,
            return_exceptions=True,
        )
        for result in results[1:]:
            assert result is None, result  # every upload succeeded
        report = results[0]
        assert isinstance(report, ReconciliationReport) and report.status == "DONE", report

    assert await reservation_count(s3_app) == 0
    rows, bucket = await stored_rows(s3_app, user.id), await _bucket(s3_app, user.id)
    u = await usage(s3_client, user)
    assert rows == bucket
    assert (u["bytesUsed"], u["objectCount"]) == (sum(rows.values()), len(rows))
    assert u["bytesReserved"] == 0
    # A last run finds nothing left to fix.
    final = await rec.reconcile(s3_app.state.db, s3_app.state.storage, user_id=user.id, actor=ADMIN)
    assert final.drift == {}


# --- SQLite (the embedded default) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    directory = Path(tmp_path_factory.mktemp("reconcile-sqlite"))
    url = f"sqlite+aiosqlite:///{directory}/p.db"
    upgrade(url)
    async for application in running_app(make_settings(url, directory)):
        yield application


async def test_sqlite_drift_is_repaired_during_uploads(sqlite_app: FastAPI) -> None:
    async with client_for(sqlite_app) as client:
        user = await _drifted_user(sqlite_app, client)
        report, *_ = await asyncio.gather(
            rec.reconcile(sqlite_app.state.db, sqlite_app.state.storage, user_id=user.id, actor=ADMIN),
            *(_upload(client, user, f"up-{i}.txt", b"u" * (i + 1)) for i in range(5)),
        )
        assert isinstance(report, ReconciliationReport) and report.status == "DONE"
        assert report.drift[user.id]["adopted"] == 1
        rows = await stored_rows(sqlite_app, user.id)
        assert rows == await _bucket(sqlite_app, user.id)
        assert {k: v for k, v in rows.items() if not k.startswith("up-")} == {
            "kept.txt": 10,
            "docs/adopted.bin": 40,
            "docs/changed.txt": 35,
        }
        u = await usage(client, user)
        assert (u["bytesUsed"], u["objectCount"]) == (sum(rows.values()), len(rows))
        again = await rec.reconcile(sqlite_app.state.db, sqlite_app.state.storage, user_id=user.id, actor=ADMIN)
        assert again.drift == {}


async def test_a_cancelled_background_run_is_marked_failed(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    await _put(app, user.id, "slow.txt", b"s")
    storage = app.state.storage

    class Slow:
        def __getattr__(self, attr: str) -> Any:
            return getattr(storage, attr)

        async def iter_objects(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
            await asyncio.sleep(30)
            async for info in storage.iter_objects(prefix, start_after):
                yield info

    started, task = await rec.start_reconcile(app.state.db, Slow(), actor=ADMIN)
    await asyncio.sleep(0.1)
    await asyncio.wait_for(rec.cancel_background(), 10)
    assert task.cancelled()
    async with app.state.db.sessions() as s:
        stored = await storage_service.get_report(s, started.id)
    assert (stored.status, stored.error) == ("FAILED", "cancelled") and stored.finished_at is not None
