"""db.Database.transaction: the upload path's units of work straight on asyncpg — committed only when the block
ends, rolled back on an error, a cancelled one leaves nothing and no broken connection behind; the statements are
compiled once, never rely on Python-side defaults, and give the same rows on SQLite and through a session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select

from pockity.db import Database, create_database, statements_of
from pockity.migrate import upgrade
from pockity.models import UsageCounter
from pockity.storage import repository as repo
from tests.fixtures.users import TestUser, make_key


async def _counter(db: Database, scope: str) -> tuple[int, int] | None:
    async with db.reader.connect() as conn:
        row = (
            await conn.execute(
                select(UsageCounter.bytes_reserved, UsageCounter.uploads_open).where(UsageCounter.scope == scope)
            )
        ).first()
    return (row[0], row[1]) if row else None


async def test_a_block_commits_when_it_ends_and_rolls_back_when_it_raises(app: FastAPI) -> None:
    db: Database = app.state.db
    assert db.engine.dialect.name == "postgresql"
    async with db.transaction() as st:
        await repo.ensure_counter(st, "key:tx-commit")
        assert await repo.adjust(st, "key:tx-commit", reserved=5, uploads_open=1)
        assert await _counter(db, "key:tx-commit") is None  # not visible to others before the commit
    assert await _counter(db, "key:tx-commit") == (5, 1)

    with pytest.raises(RuntimeError):
        async with db.transaction() as st:
            assert await repo.adjust(st, "key:tx-commit", reserved=7)
            raise RuntimeError("refused halfway")
    assert await _counter(db, "key:tx-commit") == (5, 1)


async def test_a_cancelled_block_leaves_nothing_and_the_pool_keeps_working(app: FastAPI) -> None:
    db: Database = app.state.db
    async with db.transaction() as st:
        await repo.ensure_counter(st, "key:tx-cancel")
    inside = asyncio.Event()

    async def stuck() -> None:
        async with db.transaction() as st:
            assert await repo.adjust(st, "key:tx-cancel", reserved=9)
            inside.set()
            await st.rows(select(UsageCounter.scope).where(UsageCounter.scope == "x").with_for_update())
            await asyncio.Event().wait()  # cancelled here, the transaction open

    task = asyncio.create_task(stuck())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _counter(db, "key:tx-cancel") == (0, 0)
    for _ in range(db.engine.pool.size() + 2):  # every pooled connection still answers
        async with db.transaction() as st:
            assert await repo.adjust(st, "key:tx-cancel", uploads_open=1)
    assert await _counter(db, "key:tx-cancel") == (0, db.engine.pool.size() + 2)


async def test_statements_relying_on_python_defaults_are_refused(app: FastAPI) -> None:
    db: Database = app.state.db
    with pytest.raises(TypeError, match="name every value"):
        async with db.transaction() as st:  # updated_at has a Python-side default only
            await st.count(insert(UsageCounter).values(scope="key:tx-defaults"))
    assert await _counter(db, "key:tx-defaults") is None


async def test_uploads_compile_their_statements_once(app: FastAPI, client: httpx.AsyncClient, user: TestUser) -> None:
    db: Database = app.state.db
    key = await make_key(client, user, name="tx", scopes=["read", "write"])
    for i in range(3):  # a new name, a replacement, a replacement of another size
        r = await client.put("/api/storage/files/warm.txt", content=b"x" * i, headers=key["headers"])
        assert r.status_code == 201, r.text
    compiled = len(db.compiled)
    for i in range(20):
        name = f"f{i % 4}.txt"  # new names and replacements
        r = await client.put(f"/api/storage/files/{name}", content=b"y" * i, headers=key["headers"])
        assert r.status_code == 201, r.text
    assert len(db.compiled) == compiled


async def test_the_same_rows_on_sqlite_and_through_a_session(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}"
    await asyncio.to_thread(upgrade, url)
    db = create_database(url)
    try:
        async with db.transaction() as st:
            await repo.ensure_counter(st, "key:sqlite")
            assert await repo.try_reserve(st, "key:sqlite", nbytes=10, objects=1, max_bytes=10, max_objects=1)
            assert not await repo.try_reserve(st, "key:sqlite", nbytes=1, objects=0, max_bytes=10, max_objects=1)
        async with db.sessions() as session, session.begin():
            st = await statements_of(session)
            counter = await repo.get_counter(st, "key:sqlite")
            assert (counter.bytes_reserved, counter.objects_reserved) == (10, 1)
        with pytest.raises(RuntimeError):
            async with db.transaction() as st:
                assert await repo.adjust(st, "key:sqlite", reserved=-10, objects_reserved=-1)
                raise RuntimeError("rolled back")
        assert await _counter(db, "key:sqlite") == (10, 0)
    finally:
        await db.dispose()
