"""db.HotReads: the per-request path's reads give exactly what SQLAlchemy gives, see every commit at once, and
compile each statement once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, select, text, update

from pockity.apikeys import repository as key_repo
from pockity.auth import repository as auth_repo
from pockity.db import Database, create_database
from pockity.kit import jwt
from pockity.models import ApiKey, StorageObject, User
from pockity.storage import repository as storage_repo
from tests.fixtures.app import TEST_JWT_SECRET
from tests.fixtures.users import TestUser, make_key


def _as_dict(row: Any, names: list[str]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


async def _by_sqlalchemy(db: Database, statement: Any, params: dict[str, Any]) -> list[Any]:
    async with db.reader.connect() as conn:
        return list((await conn.execute(statement, params)).all())


async def _upload(client: httpx.AsyncClient, headers: dict[str, str], name: str, body: bytes) -> None:
    r = await client.put(
        f"/api/storage/files/{name}",
        content=body,
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert r.status_code == 201, r.text


async def test_each_hot_statement_returns_what_sqlalchemy_returns(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser
) -> None:
    db: Database = app.state.db
    assert db.engine.dialect.name == "postgresql"
    key = await make_key(client, user, name="hot", scopes=["read", "write", "list"])
    for name in ("a.txt", "docs/b.txt", "docs/c d.txt", "été/☀.txt"):
        await _upload(client, key["headers"], name, name.encode() * 3)
    async with db.sessions() as session, session.begin():  # JSON columns, as the S3 API stores them
        await session.execute(
            update(StorageObject)
            .where(StorageObject.user_id == user.id, StorageObject.name == "docs/c d.txt")
            .values(headers={"cache-control": "no-store", "x-amz-meta-k": "v"}, part_sizes=[[1, 5]])
        )

    cases: list[tuple[Any, dict[str, Any]]] = [
        (key_repo._AUTH_BY_ACCESS_KEY_ID, {"access_key_id": key["accessKeyId"]}),
        (
            auth_repo._USER_BY_SESSION,
            {"user_id": user.id, "session_id": jwt.decode_token(user.token, TEST_JWT_SECRET).session_id},
        ),
        (storage_repo._OBJECT_META, {"user_id": user.id, "name": "docs/c d.txt"}),
        (storage_repo._USAGE, {"user_id": user.id, "scope": storage_repo.user_scope(user.id)}),
        (key_repo._LISTED, {"user_id": user.id}),
    ]
    for low, high, after in ((False, False, False), (True, True, False), (True, True, True), (False, False, True)):
        params = {"user_id": user.id, "low": "docs/", "high": "docs0", "after": "docs/b.txt", "limit": 10}
        cases.append((storage_repo._listing(low, high, after), params))
    for statement, params in cases:
        expected = await _by_sqlalchemy(db, statement, params)
        assert expected, f"setup: {statement} found nothing"
        names = list(expected[0]._fields)
        got = await db.hot.all(statement, params)
        assert [_as_dict(r, names) for r in got] == [dict(r._mapping) for r in expected]
        first = await db.hot.first(statement, params)
        assert first is not None and _as_dict(first, names) == dict(expected[0]._mapping)

    meta = await storage_repo.object_meta(db.hot, user.id, "docs/c d.txt")
    assert meta is not None
    assert meta.headers == {"cache-control": "no-store", "x-amz-meta-k": "v"}  # JSON decoded
    assert meta.part_sizes == [[1, 5]]
    assert meta.updated_at.tzinfo is not None and meta.updated_at.utcoffset().total_seconds() == 0
    listed = await storage_repo.list_names(db.hot, user.id, prefix="docs/", after=None, limit=10)
    assert [r.key for r in listed] == ["docs/b.txt", "docs/c d.txt"]
    assert await storage_repo.object_meta(db.hot, user.id, "missing.txt") is None
    with pytest.raises(AttributeError):
        _ = meta.no_such_column


async def test_a_committed_change_is_seen_by_the_next_hot_read(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser
) -> None:
    db: Database = app.state.db
    key = await make_key(client, user, name="revoked soon")
    before = await key_repo.auth_row(db.hot, key["accessKeyId"])
    assert before is not None and before.key_active is True and before.is_active is True
    async with db.sessions() as session, session.begin():
        await session.execute(update(ApiKey).where(ApiKey.access_key_id == key["accessKeyId"]).values(is_active=False))
        await session.execute(update(User).where(User.id == user.id).values(is_active=False))
    after = await key_repo.auth_row(db.hot, key["accessKeyId"])
    assert after is not None and after.key_active is False and after.is_active is False
    r = await client.get("/api/auth/me", headers=key["headers"])
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_revoked", r.text


async def test_listings_reuse_their_eight_compiled_statements(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser
) -> None:
    db: Database = app.state.db
    for i in range(40):
        await storage_repo.list_names(db.hot, user.id, prefix=f"p{i}/" if i % 2 else "", after=None, limit=i + 1)
        await storage_repo.list_names(db.hot, user.id, prefix="", after=f"a{i}", limit=5)
        await storage_repo.list_from(db.hot, user.id, prefix="p/", start=f"p/{i}", limit=5)
    listing = {id(storage_repo._listing(*flags)) for flags in _flag_sets()}
    assert db.hot.compiled_count() <= len(listing) + 8  # the listings plus the few fixed statements


def _flag_sets() -> list[tuple[bool, bool, bool]]:
    return [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]


async def test_expanding_parameters_are_refused(app: FastAPI) -> None:
    db: Database = app.state.db
    with pytest.raises(TypeError):
        await db.hot.all(select(User.id).where(User.id.in_(bindparam("ids", expanding=True))), {"ids": ["x"]})


async def test_on_sqlite_the_same_reads_go_through_the_reader(tmp_path: Path) -> None:
    db = create_database(f"sqlite+aiosqlite:///{tmp_path / 'hot.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES ('a', 1), ('b', 2)"))
        rows = await db.hot.all(text("SELECT id, n FROM t WHERE n >= :n ORDER BY id"), {"n": 1})
        assert [(r.id, r.n) for r in rows] == [("a", 1), ("b", 2)]
        one = await db.hot.first(text("SELECT id FROM t WHERE n = :n"), {"n": 2})
        assert one is not None and one.id == "b"
        assert await db.hot.first(text("SELECT id FROM t WHERE n = :n"), {"n": 3}) is None
    finally:
        await db.dispose()
