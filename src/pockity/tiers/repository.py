"""SQL for tiers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

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
