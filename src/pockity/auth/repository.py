"""SQL for authentication: one-statement principal lookups and the shared login throttle."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, Table, bindparam, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased

from pockity.db import HotReads, dialect_insert
from pockity.models import LoginThrottle, Tier, User

USER_COLUMNS = (User.id, User.email, User.name, User.role, User.is_active, User.created_at)
UserRow = Row[str, str, str, str, bool, datetime, int | None, int | None]
TokenUserRow = Row[str, str, str, str, bool, datetime, int | None, int | None, str]  # + the password hash

# The user's tier's request-rate limits come with the user, in the same query (a primary-key join).
USER_TIER = aliased(Tier, name="user_tier")
USER_RATE_COLUMNS = (USER_TIER.requests_per_second.label("tier_rps"), USER_TIER.request_burst.label("tier_burst"))

# Built once: constructing a statement per request (and its cache key) costs more than running it.
_USER_BY_ID = (
    select(*USER_COLUMNS, *USER_RATE_COLUMNS, User.password_hash)
    .outerjoin(USER_TIER, USER_TIER.id == User.tier_id)
    .where(User.id == bindparam("user_id"))
)


async def user_row(hot: HotReads, user_id: str) -> TokenUserRow | None:
    """The fields a principal needs and the password hash its token is checked against, in one AUTOCOMMIT
    round trip."""
    row: TokenUserRow | None = await hot.first(_USER_BY_ID, {"user_id": user_id})
    return row


async def blocked_until(reader: AsyncEngine, keys: list[str]) -> datetime | None:
    async with reader.connect() as conn:
        result = await conn.execute(select(func.max(LoginThrottle.blocked_until)).where(LoginThrottle.key.in_(keys)))
        return result.scalar()


async def count_failure(session: AsyncSession, key: str, now: datetime, window_start: datetime) -> int:
    """Add one failure to `key` (restarting a window that has passed) in one atomic upsert."""
    table = LoginThrottle.__table__
    assert isinstance(table, Table)
    insert = dialect_insert(session)
    stale = table.c.window_started_at < window_start
    stmt = (
        insert(table)
        .values(key=key, failures=1, window_started_at=now, blocked_until=None)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "failures": case((stale, 1), else_=table.c.failures + 1),
                "window_started_at": case((stale, now), else_=table.c.window_started_at),
            },
        )
        .returning(table.c.failures)
    )
    result = await session.execute(stmt)
    return int(result.scalar_one())


async def block(session: AsyncSession, key: str, until: datetime) -> None:
    await session.execute(update(LoginThrottle).where(LoginThrottle.key == key).values(blocked_until=until))


async def clear(session: AsyncSession, key: str) -> None:
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
