"""Admin views that gather several domains (each domain's own rules stay in its service)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.apikeys import service as apikeys
from pockity.audit.service import Actor
from pockity.billing import service as billing
from pockity.models import Subscription
from pockity.payments import credits
from pockity.storage import service as storage
from pockity.tiers.service import get_tier
from pockity.users import service as users


@dataclass
class UserDetail:
    user: Any
    tier: Any
    subscription: Any
    pending_subscription: Any
    usage: storage.Usage
    api_keys: Any
    invoices: Any
    credits: dict[str, int]


async def user_detail(session: AsyncSession, user_id: str) -> UserDetail:
    """One user with tier, subscription, usage, keys, invoices and credit balances."""
    user = await users.get_user(session, user_id)
    state = await billing.subscription_state(session, user_id)
    return UserDetail(
        user=user,
        tier=state.tier,
        subscription=state.current,
        pending_subscription=state.pending,
        usage=await storage.usage(session, user_id),
        api_keys=await apikeys.list_keys(session, user_id),
        invoices=await billing.own_invoices(session, user_id),
        credits=await credits.balances(session, user_id),
    )


async def assign_tier(session: AsyncSession, user_id: str, tier_id: str, actor: Actor) -> Subscription:
    """Put a user on any tier (private ones included) at once, without an invoice."""
    await users.get_user(session, user_id)
    tier = await get_tier(session, tier_id)
    return await billing.assign_tier(session, user_id, tier, actor)
