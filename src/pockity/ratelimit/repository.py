"""SQL for the shared rate-limit windows: one atomic upsert per lease, and the cleanup of old windows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from pockity.models import RateWindow

_TABLE = RateWindow.__table__
assert isinstance(_TABLE, Table)


def _take_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(RateWindow)
    return stmt.on_conflict_do_update(
        index_elements=[_TABLE.c.subject, _TABLE.c.window_start],
        set_={"count": _TABLE.c.count + stmt.excluded.count},
    ).returning(_TABLE.c.count)


class DatabaseCounters:
    """The CounterStore on the database: `INSERT ... ON CONFLICT DO UPDATE SET count = count + n RETURNING count`
    on the AUTOCOMMIT engine (one round trip; PostgreSQL and SQLite both apply it atomically)."""

    def __init__(self, reader: AsyncEngine) -> None:
        self.reader = reader
        self._stmt = _take_statement(reader.dialect.name)  # built once, like the auth queries

    async def take(self, subject: str, window_start: int, n: int, ttl: int) -> int:
        async with self.reader.connect() as conn:
            params = {"subject": subject, "window_start": window_start, "count": n}
            result = await conn.execute(self._stmt, params)
            return int(result.scalar_one())

    async def close(self) -> None:
        """Nothing of its own: the engine is the application's."""


async def delete_windows_before(reader: AsyncEngine, window_start: int) -> int:
    """Drop windows that started before `window_start` (one statement)."""
    async with reader.connect() as conn:
        result = await conn.execute(delete(RateWindow).where(RateWindow.window_start < window_start))
        return int(result.rowcount)
