"""Subscriptions: who is on which tier, and when a tier change takes effect (the user's own requests and an
admin's). Invoices live in invoices.py, the life cycle over time (renewals, PAST_DUE, expiry) in lifecycle.py,
and the one place the current subscription and the quota change in current.py.

The quota always follows the current subscription while it is ACTIVE or TRIALING. Money moves only through
conditional status changes (PENDING → PAID happens once), so nothing is granted or charged twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import invoices
from pockity.billing import repository as repo
from pockity.billing.current import make_current, snapshot
from pockity.errors import Conflict, NotFound
from pockity.kit.pagination import Page, page_of
from pockity.kit.periods import monthly_cents
from pockity.kit.time import utcnow
from pockity.models import Invoice, Subscription, SubscriptionStatus, Tier
from pockity.tiers import repository as tiers


class NoSubscription(NotFound):
    code, message = "no_subscription", "There is no current subscription."


class NothingToCancel(Conflict):
    code, message = "nothing_to_cancel", "There is no paid subscription or pending change to cancel."


@dataclass(frozen=True)
class Change:
    """What a tier change did: `subscription` is the row that carries it, `effective` says when it applies."""

    subscription: Subscription
    invoice: Invoice | None
    effective: str  # "now" | "on_payment" | "period_end"


async def start_default(session: AsyncSession, user_id: str) -> Subscription | None:
    """A new account's subscription on the default tier (none when no default tier is configured)."""
    tier_id = await tiers.default_tier_id(session)
    if tier_id is None:
        return None
    sub = Subscription(
        user_id=user_id,
        tier_id=tier_id,
        status=SubscriptionStatus.ACTIVE.value,
        provider="manual",
        cancel_at_period_end=False,
    )
    repo.add(session, sub)
    await make_current(session, user_id, sub, ended_status=SubscriptionStatus.CANCELLED)
    return sub


async def _drop_pending(session: AsyncSession, user_id: str, actor: Actor) -> None:
    """A newer change replaces a change still waiting for payment: its invoice is voided, never charged."""
    for pending in await repo.pending_subscriptions(session, user_id):
        pending.status, pending.ended_at = SubscriptionStatus.CANCELLED.value, utcnow()
        for invoice in await invoices.open_of(session, pending.id):
            await invoices.void_replaced(session, invoice.id)
            record(
                session,
                actor,
                "invoice.voided",
                target_type="invoice",
                target_id=invoice.id,
                details={"reason": "replaced"},
            )


def _is_downgrade(current: Subscription | None, current_tier: Tier | None, tier: Tier) -> bool:
    """A cheaper tier while a paid period is running waits for that period to end."""
    if current is None or current_tier is None or current.status != SubscriptionStatus.ACTIVE.value:
        return False
    if current.current_period_end is None or current.current_period_end <= utcnow() or current_tier.price_cents == 0:
        return False
    return monthly_cents(tier.price_cents, tier.billing_period) <= monthly_cents(
        current_tier.price_cents, current_tier.billing_period
    )


async def change_tier(session: AsyncSession, user_id: str, tier: Tier, actor: Actor) -> Change:
    """Apply an approved tier: free at once, paid on payment (or now, as a trial), cheaper at period end."""
    await _drop_pending(session, user_id, actor)
    current = await repo.current_subscription(session, user_id, lock=True)
    current_tier = await tiers.get(session, current.tier_id) if current else None
    if _is_downgrade(current, current_tier, tier):
        assert current is not None
        current.scheduled_tier_id, current.cancel_at_period_end = tier.id, False
        await invoices.void_next_period(session, current, "replaced by a scheduled tier change")
        return Change(current, None, "period_end")
    now = utcnow()
    sub = Subscription(user_id=user_id, tier_id=tier.id, provider="manual", cancel_at_period_end=False)
    repo.add(session, sub)
    if tier.price_cents == 0:
        sub.status = SubscriptionStatus.ACTIVE.value
        await make_current(session, user_id, sub, ended_status=SubscriptionStatus.CANCELLED)
        return Change(sub, None, "now")
    if tier.trial_days > 0:
        sub.status = SubscriptionStatus.TRIALING.value
        sub.current_period_start, sub.current_period_end = now, now + timedelta(days=tier.trial_days)
        await make_current(session, user_id, sub, ended_status=SubscriptionStatus.CANCELLED)
        invoice = invoices.new_invoice(sub, tier, timedelta(days=tier.trial_days), period_start=sub.current_period_end)
        return Change(sub, await invoices.issue(session, invoice), "now")
    sub.status = SubscriptionStatus.PENDING_PAYMENT.value  # the old tier's limits stay until this is paid
    await session.flush()
    invoice = await invoices.issue(session, invoices.new_invoice(sub, tier, invoices.PAYMENT_DUE))
    return Change(sub, invoice, "on_payment")


async def assign_tier(session: AsyncSession, user_id: str, tier: Tier, actor: Actor) -> Subscription:
    """Admin: put a user on any tier at once, as an ACTIVE subscription with no invoice."""
    await _drop_pending(session, user_id, actor)
    before = snapshot(await repo.current_subscription(session, user_id))
    sub = Subscription(
        user_id=user_id,
        tier_id=tier.id,
        status=SubscriptionStatus.ACTIVE.value,
        provider="admin",
        cancel_at_period_end=False,
    )
    repo.add(session, sub)
    await make_current(session, user_id, sub, ended_status=SubscriptionStatus.CANCELLED)
    record(
        session,
        actor,
        "subscription.assigned",
        target_type="user",
        target_id=user_id,
        details={"before": before, "after": snapshot(sub)},
    )
    return sub


async def cancel(session: AsyncSession, user_id: str, actor: Actor) -> Subscription:
    """Cancel a change waiting for payment, or else the paid subscription at the end of its period."""
    pending = await repo.pending_subscriptions(session, user_id)
    if pending:
        await _drop_pending(session, user_id, actor)
        record(session, actor, "subscription.cancelled", target_type="subscription", target_id=pending[0].id)
        return pending[0]
    current = await repo.current_subscription(session, user_id, lock=True)
    tier = await tiers.get(session, current.tier_id) if current else None
    if current is None or tier is None or tier.price_cents == 0 or current.cancel_at_period_end:
        raise NothingToCancel()
    current.cancel_at_period_end, current.scheduled_tier_id = True, None
    await invoices.void_next_period(session, current, "subscription cancelled at period end")
    record(
        session,
        actor,
        "subscription.cancel_scheduled",
        target_type="subscription",
        target_id=current.id,
        details={"periodEnd": current.current_period_end.isoformat() if current.current_period_end else None},
    )
    return current


async def set_auto_renew(session: AsyncSession, user_id: str, enabled: bool, actor: Actor) -> Subscription:
    """Renew the current subscription from the credit balance at each period end (or stop), audited."""
    current = await repo.current_subscription(session, user_id, lock=True)
    if current is None:
        raise NoSubscription()
    before = current.auto_renew_from_credits
    current.auto_renew_from_credits = enabled
    await session.flush()
    record(
        session,
        actor,
        "subscription.auto_renew",
        target_type="subscription",
        target_id=current.id,
        details={"before": before, "after": enabled},
    )
    return current


@dataclass(frozen=True)
class SubscriptionState:
    current: Subscription | None
    tier: Tier | None
    pending: Subscription | None


async def subscription_state(session: AsyncSession, user_id: str) -> SubscriptionState:
    """The user's current subscription and its tier, and a change waiting for payment, if any."""
    pending = await repo.pending_subscriptions(session, user_id)
    current = await repo.current_subscription(session, user_id)
    tier = await tiers.get(session, current.tier_id) if current else None
    return SubscriptionState(current, tier, pending[0] if pending else None)


async def current_subscription(session: AsyncSession, user_id: str) -> Subscription | None:
    """The user's current subscription, if any."""
    return await repo.current_subscription(session, user_id)


async def list_subscriptions(
    session: AsyncSession, *, status: str | None, user_id: str | None, cursor: str | None, limit: int
) -> Page[Subscription]:
    """Admin: subscriptions oldest first."""
    rows = await repo.list_subscriptions(session, status=status, user_id=user_id, after_id=cursor, limit=limit + 1)
    return page_of(rows, limit)
