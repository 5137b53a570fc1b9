"""SQL for the shared token buckets: one atomic upsert per lease, and dropping buckets that are full anyway."""

from __future__ import annotations

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pockity.models import RateBucket
from pockity.ratelimit.limiter import Lease, Rate, lease_from

# limiter.grant() in one statement: the SET expressions all see the row as it was, so `granted` and the new
# `tat_us` come from the same old TAT. PostgreSQL and SQLite apply an upsert atomically (row lock / one writer).
_TAKE = """
INSERT INTO rate_buckets (subject, tat_us, granted)
VALUES (:subject, CAST(:now AS BIGINT) + CAST(:n AS BIGINT) * CAST(:interval AS BIGINT), :n)
ON CONFLICT (subject) DO UPDATE SET
  granted = {max}(0, {min}(CAST(:n AS BIGINT),
    (CAST(:now AS BIGINT) + CAST(:cap AS BIGINT) - {max}(rate_buckets.tat_us, CAST(:now AS BIGINT)))
    / CAST(:interval AS BIGINT))),
  tat_us = {max}(rate_buckets.tat_us, CAST(:now AS BIGINT)) + CAST(:interval AS BIGINT) * {max}(0, {min}(
    CAST(:n AS BIGINT),
    (CAST(:now AS BIGINT) + CAST(:cap AS BIGINT) - {max}(rate_buckets.tat_us, CAST(:now AS BIGINT)))
    / CAST(:interval AS BIGINT)))
RETURNING granted, tat_us
"""


def _take_statement(dialect: str) -> str:
    if dialect == "postgresql":
        return _TAKE.format(max="GREATEST", min="LEAST")
    return _TAKE.format(max="MAX", min="MIN")  # SQLite's multi-argument scalar functions


class DatabaseCounters:
    """The CounterStore on the database, on the AUTOCOMMIT engine: one round trip per lease."""

    def __init__(self, reader: AsyncEngine) -> None:
        self.reader = reader
        self._stmt = text(_take_statement(reader.dialect.name))  # built once, like the auth queries

    async def take(self, subject: str, now_us: int, n: int, rate: Rate) -> Lease:
        params = {"subject": subject, "now": now_us, "n": n, "interval": rate.interval_us, "cap": rate.capacity_us}
        async with self.reader.connect() as conn:
            granted, tat_us = (await conn.execute(self._stmt, params)).one()
        return lease_from(int(granted), int(tat_us), now_us, n, rate)

    async def close(self) -> None:
        """Nothing of its own: the engine is the application's."""


async def delete_full_buckets(reader: AsyncEngine, before_us: int) -> int:
    """Drop buckets that were full again before `before_us` (a missing bucket is a full one)."""
    async with reader.connect() as conn:
        result = await conn.execute(delete(RateBucket).where(RateBucket.tat_us < before_us))
        return int(result.rowcount)
