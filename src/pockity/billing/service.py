"""Subscriptions and invoices: who is on which tier, what they owe, and when a change takes effect.

The quota always follows the current subscription while it is ACTIVE or TRIALING: `_make_current` is the one
place that switches it, and copies the tier onto the user in the same unit of work. Money moves only through
conditional status changes (PENDING → PAID happens once), so nothing is granted or charged twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import repository as repo
from pockity.errors import Conflict, NotFound
from pockity.kit.pagination import keyset_page
from pockity.kit.periods import monthly_cents, period_end
from pockity.kit.time import utcnow
from pockity.models import Invoice, InvoiceStatus, Subscription, SubscriptionStatus, Tier
from pockity.tiers import repository as tiers

S = SubscriptionStatus
PAYMENT_DUE = timedelta(days=7)
LIVE = (S.ACTIVE.value, S.TRIALING.value)


class InvoiceNotFound(NotFound):
    code, message = "invoice_not_found", "Invoice not found."


class InvoiceNotPayable(Conflict):
    code, message = "invoice_not_payable", "This invoice is not open for payment."


class NothingToCancel(Conflict):
    code, message = "nothing_to_cancel", "There is no paid subscription or pending change to cancel."


@dataclass(frozen=True)
class Change:
    """What a tier change did: `subscription` is the row that carries it, `effective` says when it applies."""

    subscription: Subscription
    invoice: Invoice | None
    effective: str  # "now" | "on_payment" | "period_end"


def _sub_snapshot(sub: Subscription | None) -> dict[str, object] | None:
    if sub is None:
        return None
    return {"id": sub.id, "tierId": sub.tier_id, "status": sub.status, "scheduledTierId": sub.scheduled_tier_id}


async def _make_current(session: AsyncSession, user_id: str, new: Subscription, *, ended_status: S) -> None:
    """Replace the user's current subscription with `new` and move the quota to its tier."""
    old = await repo.current_subscription(session, user_id, lock=True)
    if old is not None and old.id != new.id:
        old.is_current, old.status, old.ended_at = False, ended_status.value, utcnow()
        await session.flush()  # the partial unique index allows one current row per user
    new.is_current = True
    await session.flush()
    await repo.set_user_tier(session, user_id, new.tier_id if new.status in LIVE else None)


async def start_default(session: AsyncSession, user_id: str) -> Subscription | None:
    """A new account's subscription on the default tier (none when no default tier is configured)."""
    tier_id = await tiers.default_tier_id(session)
    if tier_id is None:
        return None
    sub = Subscription(
        user_id=user_id, tier_id=tier_id, status=S.ACTIVE.value, provider="manual", cancel_at_period_end=False
    )
    repo.add(session, sub)
    await _make_current(session, user_id, sub, ended_status=S.CANCELLED)
    return sub


async def _drop_pending(session: AsyncSession, user_id: str, actor: Actor) -> None:
    """A newer change replaces a change still waiting for payment: its invoice is voided, never charged."""
    for pending in await repo.pending_subscriptions(session, user_id):
        pending.status, pending.ended_at = S.CANCELLED.value, utcnow()
        for invoice in await repo.invoices_of_subscription(session, pending.id, InvoiceStatus.PENDING.value):
            await repo.transition_invoice(
                session,
                invoice.id,
                [InvoiceStatus.PENDING.value],
                status=InvoiceStatus.VOID.value,
                note="replaced by a newer tier change",
            )
            record(
                session,
                actor,
                "invoice.voided",
                target_type="invoice",
                target_id=invoice.id,
                details={"reason": "replaced"},
            )


def _invoice(sub: Subscription, tier: Tier, due_in: timedelta) -> Invoice:
    return Invoice(
        user_id=sub.user_id,
        subscription_id=sub.id,
        tier_id=tier.id,
        amount_cents=tier.price_cents,
        currency=tier.currency,
        status=InvoiceStatus.PENDING.value,
        description=f"Pockity {tier.name}, {tier.billing_period}",
        due_at=utcnow() + due_in,
    )


def _is_downgrade(current: Subscription | None, current_tier: Tier | None, tier: Tier) -> bool:
    """A cheaper tier while a paid period is running waits for that period to end."""
    if current is None or current_tier is None or current.status != S.ACTIVE.value:
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
        return Change(current, None, "period_end")
    now = utcnow()
    sub = Subscription(user_id=user_id, tier_id=tier.id, provider="manual", cancel_at_period_end=False)
    repo.add(session, sub)
    if tier.price_cents == 0:
        sub.status = S.ACTIVE.value
        await _make_current(session, user_id, sub, ended_status=S.CANCELLED)
        return Change(sub, None, "now")
    if tier.trial_days > 0:
        sub.status = S.TRIALING.value
        sub.current_period_start, sub.current_period_end = now, now + timedelta(days=tier.trial_days)
        await _make_current(session, user_id, sub, ended_status=S.CANCELLED)
        invoice = _invoice(sub, tier, timedelta(days=tier.trial_days))
        repo.add(session, invoice)
        await session.flush()
        return Change(sub, invoice, "now")
    sub.status = S.PENDING_PAYMENT.value  # the old tier's limits stay until this is paid
    await session.flush()
    invoice = _invoice(sub, tier, PAYMENT_DUE)
    repo.add(session, invoice)
    await session.flush()
    return Change(sub, invoice, "on_payment")


async def assign_tier(session: AsyncSession, user_id: str, tier: Tier, actor: Actor) -> Subscription:
    """Admin: put a user on any tier at once, as an ACTIVE subscription with no invoice."""
    await _drop_pending(session, user_id, actor)
    before = _sub_snapshot(await repo.current_subscription(session, user_id))
    sub = Subscription(
        user_id=user_id, tier_id=tier.id, status=S.ACTIVE.value, provider="admin", cancel_at_period_end=False
    )
    repo.add(session, sub)
    await _make_current(session, user_id, sub, ended_status=S.CANCELLED)
    record(
        session,
        actor,
        "subscription.assigned",
        target_type="user",
        target_id=user_id,
        details={"before": before, "after": _sub_snapshot(sub)},
    )
    return sub


async def pay_invoice(
    session: AsyncSession,
    invoice_id: str,
    actor: Actor,
    *,
    provider: str = "manual",
    provider_ref: str | None = None,
    note: str | None = None,
) -> Invoice:
    """Mark an invoice paid exactly once and start the period it pays for."""
    invoice = await repo.get_invoice(session, invoice_id)
    if invoice is None:
        raise InvoiceNotFound()
    open_states = [InvoiceStatus.PENDING.value, InvoiceStatus.FAILED.value]
    now = utcnow()
    if not await repo.transition_invoice(
        session,
        invoice_id,
        open_states,
        status=InvoiceStatus.PAID.value,
        paid_at=now,
        provider=provider,
        provider_ref=provider_ref,
        note=note,
    ):
        raise InvoiceNotPayable(details={"status": invoice.status})
    invoice = await repo.get_invoice(session, invoice_id)
    assert invoice is not None
    sub = await repo.get_subscription(session, invoice.subscription_id) if invoice.subscription_id else None
    tier = await tiers.get(session, sub.tier_id) if sub else None
    if (
        sub is not None
        and tier is not None
        and sub.status in (S.PENDING_PAYMENT.value, S.TRIALING.value, S.PAST_DUE.value)
    ):
        # A trial's paid period starts when the trial ends; anything else starts now.
        start = sub.current_period_end if sub.status == S.TRIALING.value and sub.current_period_end else now
        sub.status, sub.current_period_start = S.ACTIVE.value, start
        sub.current_period_end = period_end(start, tier.billing_period)
        await _make_current(session, sub.user_id, sub, ended_status=S.CANCELLED)
    record(
        session,
        actor,
        "invoice.paid",
        target_type="invoice",
        target_id=invoice.id,
        details={
            "amountCents": invoice.amount_cents,
            "currency": invoice.currency,
            "provider": provider,
            "subscriptionId": invoice.subscription_id,
            "note": note,
        },
    )
    return invoice


async def void_invoice(session: AsyncSession, invoice_id: str, actor: Actor, *, note: str | None = None) -> Invoice:
    """Void an open invoice; the change it was for is cancelled (a running subscription is left alone)."""
    invoice = await repo.get_invoice(session, invoice_id)
    if invoice is None:
        raise InvoiceNotFound()
    open_states = [InvoiceStatus.PENDING.value, InvoiceStatus.FAILED.value]
    before = invoice.status
    if not await repo.transition_invoice(session, invoice_id, open_states, status=InvoiceStatus.VOID.value, note=note):
        raise InvoiceNotPayable("Only an open invoice can be voided.", details={"status": invoice.status})
    invoice = await repo.get_invoice(session, invoice_id)
    assert invoice is not None
    sub = await repo.get_subscription(session, invoice.subscription_id) if invoice.subscription_id else None
    if sub is not None and sub.status == S.PENDING_PAYMENT.value and not sub.is_current:
        sub.status, sub.ended_at = S.CANCELLED.value, utcnow()
    record(
        session,
        actor,
        "invoice.voided",
        target_type="invoice",
        target_id=invoice.id,
        details={"before": {"status": before}, "after": {"status": invoice.status}, "note": note},
    )
    return invoice


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
    record(
        session,
        actor,
        "subscription.cancel_scheduled",
        target_type="subscription",
        target_id=current.id,
        details={"periodEnd": current.current_period_end.isoformat() if current.current_period_end else None},
    )
    return current


async def apply_period_end(session: AsyncSession, sub: Subscription, actor: Actor) -> Subscription | None:
    """At the end of a period: a scheduled downgrade starts, a cancelled subscription falls to the default tier."""
    now = utcnow()
    target = sub.scheduled_tier_id if not sub.cancel_at_period_end else await tiers.default_tier_id(session)
    tier = await tiers.get(session, target) if target else None
    ended = S.CANCELLED if sub.cancel_at_period_end else S.EXPIRED
    if tier is None:  # cancelled with no default tier: no storage (data is kept, uploads refused)
        sub.is_current, sub.status, sub.ended_at = False, ended.value, now
        await session.flush()
        await repo.set_user_tier(session, sub.user_id, None)
        return None
    new = Subscription(
        user_id=sub.user_id, tier_id=tier.id, status=S.ACTIVE.value, provider=sub.provider, cancel_at_period_end=False
    )
    if tier.price_cents > 0:
        new.current_period_start = sub.current_period_end or now
        new.current_period_end = period_end(new.current_period_start, tier.billing_period)
    repo.add(session, new)
    await _make_current(session, sub.user_id, new, ended_status=ended)
    if tier.price_cents > 0:
        repo.add(session, _invoice(new, tier, PAYMENT_DUE))
    record(
        session,
        actor,
        "subscription.period_change",
        target_type="user",
        target_id=sub.user_id,
        details={"before": _sub_snapshot(sub), "after": _sub_snapshot(new)},
    )
    return new


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


async def own_invoices(session: AsyncSession, user_id: str) -> Sequence[Invoice]:
    """The user's invoices, newest first."""
    return await repo.list_own_invoices(session, user_id)


async def list_invoices(
    session: AsyncSession, *, status: str | None, user_id: str | None, cursor: str | None, limit: int
) -> tuple[Sequence[Invoice], str | None]:
    """Admin: invoices newest first; the cursor is the last id of the previous page."""
    rows = await repo.list_invoices(session, status=status, user_id=user_id, after_id=cursor, limit=limit + 1)
    return keyset_page(rows, limit)


async def list_subscriptions(
    session: AsyncSession, *, status: str | None, user_id: str | None, cursor: str | None, limit: int
) -> tuple[Sequence[Subscription], str | None]:
    """Admin: subscriptions oldest first."""
    rows = await repo.list_subscriptions(session, status=status, user_id=user_id, after_id=cursor, limit=limit + 1)
    return keyset_page(rows, limit)
