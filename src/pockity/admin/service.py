"""Admin views that gather several domains (each domain's own rules stay in its service)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.apikeys import service as apikeys
from pockity.audit.service import Actor, record
from pockity.billing import invoices
from pockity.billing import service as billing
from pockity.credits import service as credits
from pockity.credits.schemas import CreditGrantIn
from pockity.kit.periods import add_months
from pockity.models import ApiKey, Invoice, Subscription, Tier, User
from pockity.payments import service as payments
from pockity.storage import service as storage
from pockity.tier_requests import service as tier_requests
from pockity.tiers.service import get_tier
from pockity.users import service as users


@dataclass
class UserDetail:
    user: User
    tier: Tier | None
    subscription: Subscription | None
    pending_subscription: Subscription | None
    usage: storage.Usage
    api_keys: Sequence[ApiKey]
    invoices: Sequence[Invoice]
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
        invoices=(await invoices.own_list(session, user_id)).items,
        credits=await credits.balances(session, user_id),
    )


async def user_keys(session: AsyncSession, user_id: str, actor: Actor) -> Sequence[ApiKey]:
    """A user's API keys for an admin; the look is audited (key names and prefixes say what a user stores)."""
    await users.get_user(session, user_id)
    record(session, actor, "admin.apikeys_listed", target_type="user", target_id=user_id)
    return await apikeys.list_keys(session, user_id)


async def assign_tier(session: AsyncSession, user_id: str, tier_id: str, actor: Actor) -> Subscription:
    """Put a user on any tier (private ones included) at once, without an invoice."""
    await users.get_user(session, user_id)
    tier = await get_tier(session, tier_id)
    return await billing.assign_tier(session, user_id, tier, actor)


async def user_credits(session: AsyncSession, user_id: str, currency: str) -> credits.CreditsView:
    """A user's credit balances and their latest 200 ledger entries; 404 for an unknown user."""
    await users.get_user(session, user_id)
    return await credits.view(session, user_id, currency, limit=200)


async def grant_credits(session: AsyncSession, user_id: str, grant: CreditGrantIn, actor: Actor) -> credits.CreditsView:
    """Grant a user credit (audited; `idempotencyKey` makes a retry grant once) and show the new balance."""
    await users.get_user(session, user_id)
    await credits.admin_grant(
        session,
        user_id,
        grant.amount_cents,
        grant.currency,
        grant.reason,
        actor,
        idempotency_key=grant.idempotency_key,
    )
    return await credits.view(session, user_id, grant.currency)


NEAR_QUOTA_PERCENT = 80  # the first usage alert's threshold (usage.service.alert_level)


@dataclass
class Overview:
    users: int
    usage: storage.Overview  # totals, the biggest users, users at >= NEAR_QUOTA_PERCENT or over
    pending_requests: int
    open_invoices: int
    month_start: datetime
    revenue: dict[str, int]  # cents per currency received this calendar month (UTC)


async def overview(session: AsyncSession, now: datetime) -> Overview:
    """The admin console's front page: each figure from the service that owns it."""
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return Overview(
        users=await users.count_users(session),
        usage=await storage.overview(session, near_percent=NEAR_QUOTA_PERCENT),
        pending_requests=await tier_requests.count_pending(session),
        open_invoices=await invoices.count_open(session),
        month_start=month_start,
        revenue=await payments.revenue(session, month_start, add_months(month_start, 1)),
    )
