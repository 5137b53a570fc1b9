"""SQL for tiers."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.models import Tier


async def get(session: AsyncSession, tier_id: str) -> Tier | None:
    return await session.get(Tier, tier_id)


async def default_tier_id(session: AsyncSession) -> str | None:
    stmt = select(Tier.id).where(Tier.is_default.is_(True), Tier.is_archived.is_(False)).limit(1)
    return (await session.execute(stmt)).scalar()
