"""db.ReadSessionDep: read-only routes' ORM session on the AUTOCOMMIT reader refuses every write."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update

from pockity.db import Database, ReadOnlyViolation
from pockity.models import User


async def test_read_session_reads_without_a_transaction_and_refuses_writes(app: FastAPI) -> None:
    db: Database = app.state.db
    async with db.read_sessions() as session:
        assert (await session.execute(select(User.id).limit(1))).all() is not None
        assert (await session.execute(text("SELECT 1"))).scalar() == 1
        with pytest.raises(ReadOnlyViolation):
            await session.execute(update(User).where(User.id == "nobody").values(name="x"))
        with pytest.raises(ReadOnlyViolation):
            await session.execute(text("UPDATE users SET name = 'x' WHERE id = 'nobody'"))
        session.add(User(email="read-only@example.com", name="x", password_hash="x", role="USER"))
        with pytest.raises(ReadOnlyViolation):
            await session.flush()
        await session.rollback()
    async with db.reader.connect() as conn:
        found = await conn.execute(select(User.id).where(User.email == "read-only@example.com"))
        assert found.first() is None
