"""SQL for API keys. Tenant queries start from `_owned(user_id)`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from pockity.auth.repository import USER_COLUMNS, USER_RATE_COLUMNS, USER_TIER
from pockity.db import HotReads
from pockity.models import ApiKey, Tier, User


def _owned(user_id: str) -> Select[ApiKey]:
    return select(ApiKey).where(ApiKey.user_id == user_id)


def add(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)


async def lock_owner(session: AsyncSession, user_id: str) -> None:
    """Serialise key creation per user (PostgreSQL row lock; SQLite transactions are already serial)."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


async def count_active(session: AsyncSession, user_id: str, now: datetime) -> int:
    stmt = (
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.user_id == user_id,
            ApiKey.is_active.is_(True),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
    )
    return int((await session.execute(stmt)).scalar_one())


async def tier_exists(session: AsyncSession, tier_id: str) -> bool:
    stmt = select(Tier.id).where(Tier.id == tier_id, Tier.is_archived.is_(False))
    return (await session.execute(stmt)).first() is not None


async def get_owned(session: AsyncSession, user_id: str, key_id: str) -> ApiKey | None:
    return (await session.scalars(_owned(user_id).where(ApiKey.id == key_id))).first()


async def list_owned(session: AsyncSession, user_id: str) -> Sequence[ApiKey]:
    return (await session.scalars(_owned(user_id).order_by(ApiKey.id.desc()))).all()


# What the key list shows (never the sealed secret), as plain rows.
_LISTED = (
    select(
        ApiKey.id,
        ApiKey.name,
        ApiKey.access_key_id,
        ApiKey.scopes,
        ApiKey.prefix,
        ApiKey.tier_id,
        ApiKey.is_active,
        ApiKey.expires_at,
        ApiKey.revoked_at,
        ApiKey.created_at,
        ApiKey.last_used_at,
        ApiKey.last_used_ip,
        ApiKey.request_count,
    )
    .where(ApiKey.user_id == bindparam("user_id"))
    .order_by(ApiKey.id.desc())
)


async def list_owned_rows(hot: HotReads, user_id: str) -> Sequence[Any]:
    """The owner's keys, newest first, in one AUTOCOMMIT round trip without building entities."""
    return await hot.all(_LISTED, {"user_id": user_id})


async def get_any(session: AsyncSession, key_id: str) -> ApiKey | None:
    """Admin lookup, across users."""
    return await session.get(ApiKey, key_id)


AUTH_COLUMNS = (
    ApiKey.id.label("key_id"),
    ApiKey.name.label("key_name"),
    ApiKey.access_key_id,
    ApiKey.secret_sealed,
    ApiKey.kek_id,
    ApiKey.scopes,
    ApiKey.prefix,
    ApiKey.tier_id,
    ApiKey.is_active.label("key_active"),
    ApiKey.expires_at,
    *USER_COLUMNS,
    *USER_RATE_COLUMNS,
)
_KEY_TIER = aliased(Tier, name="key_tier")


_AUTH_BY_ACCESS_KEY_ID = (
    select(*AUTH_COLUMNS, _KEY_TIER.requests_per_second.label("key_rps"), _KEY_TIER.request_burst.label("key_burst"))
    .join(User, User.id == ApiKey.user_id)
    .outerjoin(USER_TIER, USER_TIER.id == User.tier_id)
    .outerjoin(_KEY_TIER, _KEY_TIER.id == ApiKey.tier_id)
    .where(ApiKey.access_key_id == bindparam("access_key_id"))
)


async def auth_row(hot: HotReads, access_key_id: str) -> Any:
    """The key and its user in one AUTOCOMMIT round trip (the statement is built once)."""
    return await hot.first(_AUTH_BY_ACCESS_KEY_ID, {"access_key_id": access_key_id})


async def add_activity(
    session: AsyncSession, key_id: str, *, count: int, last_used_at: datetime, last_ip: str | None
) -> None:
    """Fold a batch of uses in; concurrent flushes from other processes add up, and the newest use wins."""
    newer = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < last_used_at)
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(
            request_count=ApiKey.request_count + count,
            last_used_at=case((newer, last_used_at), else_=ApiKey.last_used_at),
            last_used_ip=case((newer, last_ip), else_=ApiKey.last_used_ip),
        )
    )


async def iter_sealed_not_under(
    session: AsyncSession, kek_id: str, batch: int = 500
) -> AsyncIterator[Sequence[ApiKey]]:
    """Keys sealed under another KEK than `kek_id`, in batches (for rotation)."""
    after = ""
    while True:
        stmt = select(ApiKey).where(ApiKey.kek_id != kek_id, ApiKey.id > after).order_by(ApiKey.id).limit(batch)
        rows = (await session.scalars(stmt)).all()
        if not rows:
            return
        yield rows
        after = rows[-1].id
