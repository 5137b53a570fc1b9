"""SQL for tiers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import String, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from pockity.db import Statements, statements_of
from pockity.models import Tier, User


async def get(session: AsyncSession, tier_id: str) -> Tier | None:
    return await session.get(Tier, tier_id)


class WriterTiers(NamedTuple):
    billing_hold: str | None
    tier: Tier | None  # the user's
    key_tier: Tier | None  # the API key's, when one was asked for


async def for_writer(session: AsyncSession, user_id: str, key_tier_id: str | None = None) -> WriterTiers | None:
    """The user's billing hold and tier, and the tier an API key is linked to, in ONE query (None: no such user).

    Every upload starts with this read, so it is one round trip instead of one per row (user, tier, key tier).
    """
    users_tier = select(User.billing_hold, Tier).outerjoin(Tier, Tier.id == User.tier_id).where(User.id == user_id)
    if key_tier_id is None:
        row = (await session.execute(users_tier)).first()
        return WriterTiers(row[0], row[1], None) if row else None
    key_tier = aliased(Tier)
    with_key = users_tier.add_columns(key_tier).outerjoin(key_tier, key_tier.id == key_tier_id)
    found = (await session.execute(with_key)).first()
    return WriterTiers(found[0], found[1], found[2]) if found else None


class TierLimits(NamedTuple):
    """The columns of a tier that limit a writer."""

    id: str
    storage_bytes: int
    max_objects: int
    max_object_size_bytes: int | None
    max_concurrent_uploads: int | None


class WriterLimitTiers(NamedTuple):
    billing_hold: str | None
    tier: TierLimits | None  # the user's
    key_tier: TierLimits | None  # the API key's, when one was asked for


def _writer_limits() -> object:
    users, user_tier, key_tier = User.__table__, Tier.__table__.alias("user_tier"), Tier.__table__.alias("key_tier")
    columns = [users.c.billing_hold]
    for prefix, tier in (("u_", user_tier), ("k_", key_tier)):
        columns += [tier.c[name].label(prefix + name) for name in TierLimits._fields]
    joined = users.outerjoin(user_tier, user_tier.c.id == users.c.tier_id).outerjoin(
        key_tier, key_tier.c.id == bindparam("key_tier_id", type_=String)
    )
    return select(*columns).select_from(joined).where(users.c.id == bindparam("user_id"))


_WRITER_LIMITS = _writer_limits()


async def writer_limits(
    runner: AsyncSession | Statements, user_id: str, key_tier_id: str | None = None
) -> WriterLimitTiers | None:
    """for_writer's limits as one Core statement (for the upload path's transaction); None: no such user."""
    st = await statements_of(runner) if isinstance(runner, AsyncSession) else runner
    rows = await st.rows(_WRITER_LIMITS, {"user_id": user_id, "key_tier_id": key_tier_id})
    if not rows:
        return None
    row = rows[0]

    def tier(prefix: str) -> TierLimits | None:
        if getattr(row, prefix + "id") is None:
            return None
        return TierLimits(*(getattr(row, prefix + name) for name in TierLimits._fields))

    return WriterLimitTiers(row.billing_hold, tier("u_"), tier("k_") if key_tier_id else None)


async def default_tier_id(session: AsyncSession) -> str | None:
    stmt = select(Tier.id).where(Tier.is_default.is_(True), Tier.is_archived.is_(False)).limit(1)
    return (await session.execute(stmt)).scalar()


async def list_public(session: AsyncSession) -> Sequence[Tier]:
    stmt = (
        select(Tier)
        .where(Tier.is_public.is_(True), Tier.is_archived.is_(False))
        .order_by(Tier.price_cents, Tier.storage_bytes, Tier.name)
    )
    return (await session.scalars(stmt)).all()


async def list_all_with_user_counts(session: AsyncSession) -> Sequence[tuple[Tier, int]]:
    users = select(User.tier_id, func.count().label("n")).group_by(User.tier_id).subquery()
    stmt = (
        select(Tier, func.coalesce(users.c.n, 0))
        .outerjoin(users, users.c.tier_id == Tier.id)
        .order_by(Tier.is_archived, Tier.price_cents, Tier.name)
    )
    return [(tier, int(n)) for tier, n in (await session.execute(stmt)).all()]


async def get_by_name(session: AsyncSession, name: str) -> Tier | None:
    return (await session.scalars(select(Tier).where(func.lower(Tier.name) == name.lower()))).first()


def add(session: AsyncSession, tier: Tier) -> None:
    session.add(tier)


async def clear_default(session: AsyncSession, except_id: str | None = None) -> None:
    """Unset the default flag everywhere else (at most one default tier; the unique index enforces it)."""
    stmt = update(Tier).where(Tier.is_default.is_(True))
    if except_id:
        stmt = stmt.where(Tier.id != except_id)
    await session.execute(stmt.values(is_default=False).execution_options(synchronize_session="fetch"))
