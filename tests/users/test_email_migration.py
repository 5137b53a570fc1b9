"""The migration that normalises stored emails: on SQLite and PostgreSQL, it rewrites look-alikes and refuses
(changing nothing) when two existing accounts would end up with the same address."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from pockity.migrate import upgrade
from tests.fixtures.database import ADMIN_URL, _admin
from tests.users.test_email_normalisation import full_width

BEFORE = "0010_upload_holds"
THIS = "0011_normalise_emails"


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each kind, migrated to the revision before this one."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
        upgrade(url, BEFORE)
        yield url
        return
    name = f"pockity_mig_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    try:
        upgrade(url, BEFORE)
        yield url
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def insert_users(url: str, emails: dict[str, str]) -> None:
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        for user_id, email in emails.items():
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, email, name, password_hash, role, is_active, created_at, updated_at) "
                    "VALUES (:id, :email, 'n', 'x', 'USER', true, :now, :now)"
                ),
                {"id": user_id, "email": email, "now": now},
            )
    await engine.dispose()


async def state(url: str) -> tuple[str, dict[str, str]]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one()
        rows = dict((await conn.execute(sa.text("SELECT id, email FROM users"))).all())
    await engine.dispose()
    return str(version), {str(k): str(v) for k, v in rows.items()}


async def test_look_alikes_are_rewritten(fresh_url: str) -> None:
    await insert_users(
        fresh_url,
        {
            "u1": full_width("alice") + "@example.com",  # full-width local part, stored before the rule
            "u2": "bob@example.com",
            "u3": "\u2170van@example.com",
            "u4": "not an email",
        },
    )
    upgrade(fresh_url, THIS)
    assert await state(fresh_url) == (
        THIS,
        {"u1": "alice@example.com", "u2": "bob@example.com", "u3": "ivan@example.com", "u4": "not an email"},
    )


async def test_colliding_accounts_are_refused_not_merged(fresh_url: str) -> None:
    rows = {
        "u1": "alice@example.com",
        "u2": full_width("alice") + "@example.com",
        "u3": full_width("bob") + "@example.com",
    }
    await insert_users(fresh_url, rows)
    with pytest.raises(RuntimeError, match="held by more than one account") as refused:
        upgrade(fresh_url)
    message = str(refused.value)
    assert "'alice@example.com': u1 ('alice@example.com'), u2 ('" + full_width("alice") + "@example.com')" in message
    assert "u3" not in message
    assert await state(fresh_url) == (BEFORE, rows)  # nothing changed, not even the one that could be
