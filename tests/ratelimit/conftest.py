"""The shared counter stores under test: PostgreSQL, SQLite (the embedded default) and Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pockity.db import create_database
from pockity.migrate import upgrade
from pockity.ratelimit.limiter import CounterStore
from pockity.ratelimit.redis_store import RedisCounters
from pockity.ratelimit.repository import DatabaseCounters

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('rl')) / 'pockity.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return REDIS_URL
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[CounterStore]:
    """A counter store; each test uses fresh subjects (uuid), so no window is shared between tests."""
    counters: CounterStore
    if store_url.startswith("redis"):
        counters = RedisCounters(store_url, f"pockity-test-{uuid.uuid4().hex[:8]}:")
        yield counters
        await counters.close()
        return
    db = create_database(store_url)
    try:
        yield DatabaseCounters(db.reader)
    finally:
        await db.dispose()
