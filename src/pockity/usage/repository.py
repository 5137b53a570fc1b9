"""SQL for usage history and sampling state. Tenant queries start from an owner-scoped statement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.db import dialect_insert
from pockity.models import Tier, UsageCounter, UsageDay, UsageState, User

# --- sampling -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterRow:
    user_id: str
    bytes_used: int
    object_count: int
    byte_limit: int | None  # None: the user has no tier
    object_limit: int | None


async def counters_page(session: AsyncSession, *, after: str | None, limit: int) -> list[CounterRow]:
    """Users with a `user:{id}` counter, in id order after `after`, with their tier's limits."""
    stmt = (
        select(User.id, UsageCounter.bytes_used, UsageCounter.object_count, Tier.storage_bytes, Tier.max_objects)
        .join(UsageCounter, UsageCounter.scope == literal("user:") + User.id)
        .outerjoin(Tier, Tier.id == User.tier_id)
        .order_by(User.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(User.id > after)
    return [CounterRow(*row) for row in (await session.execute(stmt)).all()]


async def states_for(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, UsageState]:
    if not user_ids:
        return {}
    stmt = select(UsageState).where(UsageState.user_id.in_(user_ids)).execution_options(populate_existing=True)
    return {s.user_id: s for s in (await session.scalars(stmt)).all()}


async def start_state(session: AsyncSession, user_id: str, now: datetime, bytes_level: int, objects_level: int) -> bool:
    """The user's first sample: create the state row; False if another process created it first."""
    stmt = (
        dialect_insert(session)(UsageState)
        .values(user_id=user_id, last_sampled_at=now, bytes_level=bytes_level, objects_level=objects_level)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    result = await session.execute(stmt)
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def advance_state(
    session: AsyncSession, user_id: str, *, since: datetime, now: datetime, bytes_level: int, objects_level: int
) -> bool:
    """Claim the interval (since, now]: only if no one moved the state since it was read, and only forward."""
    stmt = (
        update(UsageState)
        .where(UsageState.user_id == user_id, UsageState.last_sampled_at == since, UsageState.last_sampled_at < now)
        .values(last_sampled_at=now, bytes_level=bytes_level, objects_level=objects_level)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def add_to_day(
    session: AsyncSession,
    user_id: str,
    day: date,
    *,
    bytes_used: int,
    object_count: int,
    byte_seconds: int,
    snapshot: bool,
) -> None:
    """Add byte-seconds to the user's day (one upsert); `snapshot` also makes these counts the day's latest."""
    stmt = dialect_insert(session)(UsageDay).values(
        user_id=user_id, day=day, bytes_used=bytes_used, object_count=object_count, byte_seconds=byte_seconds
    )
    changes: dict[str, Any] = {"byte_seconds": UsageDay.byte_seconds + stmt.excluded.byte_seconds}
    if snapshot:
        changes.update(bytes_used=stmt.excluded.bytes_used, object_count=stmt.excluded.object_count)
    await session.execute(stmt.on_conflict_do_update(index_elements=["user_id", "day"], set_=changes))


# --- history --------------------------------------------------------------------------------------------------


def _owned_days(user_id: str) -> Select[UsageDay]:
    return select(UsageDay).where(UsageDay.user_id == user_id)


async def days(session: AsyncSession, user_id: str, start: date, end: date) -> Sequence[UsageDay]:
    stmt = _owned_days(user_id).where(UsageDay.day >= start, UsageDay.day <= end).order_by(UsageDay.day)
    return (await session.scalars(stmt)).all()


async def day_totals(session: AsyncSession, start: date, end: date) -> list[tuple[date, int, int, int, int]]:
    """(day, bytes, objects, byte-seconds, users) summed over every user, per day."""
    stmt = (
        select(
            UsageDay.day,
            func.sum(UsageDay.bytes_used),
            func.sum(UsageDay.object_count),
            func.sum(UsageDay.byte_seconds),
            func.count(),
        )
        .where(UsageDay.day >= start, UsageDay.day <= end)
        .group_by(UsageDay.day)
        .order_by(UsageDay.day)
    )
    return [
        (day, int(used), int(objects), int(seconds), users)
        for day, used, objects, seconds, users in await session.execute(stmt)
    ]


async def last_sampled(session: AsyncSession, user_id: str | None) -> datetime | None:
    """When the user (or, with None, anyone) was last sampled."""
    stmt = select(func.max(UsageState.last_sampled_at))
    if user_id is not None:
        stmt = stmt.where(UsageState.user_id == user_id)
    return (await session.execute(stmt)).scalar_one_or_none()
