"""Subscriptions and invoices: who is on which tier, what they owe, and when a change takes effect.

The quota always follows the current subscription while it is ACTIVE or TRIALING: `_make_current` is the one
place that switches it, and copies the tier onto the user in the same unit of work. Money moves only through
conditional status changes (PENDING → PAID happens once), so nothing is granted or charged twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import repository as repo
from pockity.credits import service as credits
from pockity.errors import Conflict, NotFound
from pockity.kit.pagination import keyset_page
from pockity.kit.periods import monthly_cents, period_end
from pockity.kit.time import utcnow
from pockity.models import Invoice, InvoiceStatus, Subscription, SubscriptionStatus, Tier
from pockity.notifications import service as notifications
from pockity.tiers import repository as tiers

S = SubscriptionStatus
PAYMENT_DUE = timedelta(days=7)
LIVE = (S.ACTIVE.value, S.TRIALING.value)
OPEN = (InvoiceStatus.PENDING.value, InvoiceStatus.FAILED.value)
UNPAID = (S.PAST_DUE.value, S.PENDING_PAYMENT.value)
HOLD_PAST_DUE = "past_due"


class InvoiceNotFound(NotFound):
    code, message = "invoice_not_found", "Invoice not found."


class InvoiceNotPayable(Conflict):
    code, message = "invoice_not_payable", "This invoice is not open for payment."


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


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency}"


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
        for invoice in await repo.invoices_of_subscription(session, pending.id, *OPEN):
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


def _invoice(
    sub: Subscription,
    tier: Tier,
    due_in: timedelta,
    *,
    kind: str = "subscription",
    period_start: datetime | None = None,
) -> Invoice:
    """An invoice for one period of `sub` on `tier`; the period is known for trials and renewals (a new paid
    subscription's period starts when it is paid)."""
    return Invoice(
        user_id=sub.user_id,
        subscription_id=sub.id,
        tier_id=tier.id,
        amount_cents=tier.price_cents,
        currency=tier.currency,
        status=InvoiceStatus.PENDING.value,
        kind=kind,
        period_start=period_start,
        period_end=period_end(period_start, tier.billing_period) if period_start else None,
        description=f"Pockity {tier.name}, {tier.billing_period}",
        due_at=(period_start or utcnow()) + due_in if kind == "renewal" else utcnow() + due_in,
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
        await _void_next_period(session, current, "replaced by a scheduled tier change")
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
        invoice = _invoice(sub, tier, timedelta(days=tier.trial_days), period_start=sub.current_period_end)
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
    """Mark an invoice paid exactly once and start (or extend) the period it pays for."""
    invoice = await repo.get_invoice(session, invoice_id)
    if invoice is None:
        raise InvoiceNotFound()
    now = utcnow()
    if not await repo.transition_invoice(
        session,
        invoice_id,
        OPEN,
        status=InvoiceStatus.PAID.value,
        paid_at=now,
        provider=provider,
        provider_ref=provider_ref,
        note=note,
    ):
        raise InvoiceNotPayable(details={"status": invoice.status})
    invoice = await repo.get_invoice(session, invoice_id)
    assert invoice is not None
    sub = await repo.lock_subscription(session, invoice.subscription_id) if invoice.subscription_id else None
    if sub is not None:
        if sub.status != S.ACTIVE.value:
            sub.provider = provider  # how the subscription was paid for
        await _start_paid_period(session, sub, invoice, now)
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


async def _start_paid_period(session: AsyncSession, sub: Subscription, invoice: Invoice, now: datetime) -> None:
    """A paid invoice makes its subscription ACTIVE for the invoice's period (recorded on the invoice)."""
    tier = await tiers.get(session, sub.tier_id)
    if tier is None:
        return
    if invoice.period_start is not None and invoice.period_end is not None:
        start, end = invoice.period_start, invoice.period_end
    else:  # a new paid subscription: its first period starts now
        start = now
        end = period_end(start, tier.billing_period)
        invoice.period_start, invoice.period_end = start, end
    if sub.status in (S.PENDING_PAYMENT.value, S.TRIALING.value, S.PAST_DUE.value):
        sub.status, sub.grace_ends_at = S.ACTIVE.value, None
        sub.current_period_start, sub.current_period_end = start, end
        await _make_current(session, sub.user_id, sub, ended_status=S.CANCELLED)
    elif (
        sub.status == S.ACTIVE.value
        and sub.is_current
        and (sub.current_period_end is None or end > sub.current_period_end)
    ):  # a renewal paid for the next period
        sub.current_period_start, sub.current_period_end = start, end
    await session.flush()


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
    await _void_next_period(session, current, "subscription cancelled at period end")
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
    """At the end of a period: a scheduled downgrade starts, a cancelled subscription falls to the default tier.
    A paid target tier starts with a period that is already due, so the renewal step bills it at once."""
    target = sub.scheduled_tier_id if not sub.cancel_at_period_end else await tiers.default_tier_id(session)
    ended = S.CANCELLED if sub.cancel_at_period_end else S.EXPIRED
    new = await _replace(session, sub, target, ended, start=sub.current_period_end)
    record(
        session,
        actor,
        "subscription.period_change",
        target_type="user",
        target_id=sub.user_id,
        details={"before": _sub_snapshot(sub), "after": _sub_snapshot(new)},
    )
    return new


async def _replace(
    session: AsyncSession, sub: Subscription, tier_id: str | None, ended: S, *, start: datetime | None
) -> Subscription | None:
    """End `sub` and make a new ACTIVE subscription on `tier_id` current (none: no storage; data is kept)."""
    now = utcnow()
    await _void_next_period(session, sub, f"subscription {ended.value.lower()}")
    tier = await tiers.get(session, tier_id) if tier_id else None
    if tier is None:
        sub.is_current, sub.status, sub.ended_at = False, ended.value, now
        await session.flush()
        await repo.set_user_tier(session, sub.user_id, None)
        return None
    new = Subscription(
        user_id=sub.user_id,
        tier_id=tier.id,
        status=S.ACTIVE.value,
        provider=sub.provider,
        cancel_at_period_end=False,
        auto_renew_from_credits=sub.auto_renew_from_credits,
    )
    if tier.price_cents > 0:
        new.current_period_start = new.current_period_end = start or now
    repo.add(session, new)
    await _make_current(session, sub.user_id, new, ended_status=ended)
    return new


# --- renewals and the life cycle ---------------------------------------------------------------------------


async def run_lifecycle(
    session: AsyncSession,
    subscription_id: str,
    actor: Actor,
    *,
    grace: timedelta,
    notice: timedelta = timedelta(0),
) -> str | None:
    """Do what is due for one subscription, under its row lock (so two runners do it once): the next period's
    invoice `notice` ahead of the period end (so it can be paid before), a period change, a renewal (from
    credits, or PAST_DUE with the invoice open), or the end of a grace period."""
    now = utcnow()
    # Another runner working on this subscription has it locked: skip it (that runner does it, once).
    sub = await repo.lock_subscription(session, subscription_id, skip_locked=True)
    if sub is None or not sub.is_current:
        return None
    if sub.status in UNPAID:
        if sub.grace_ends_at is None or sub.grace_ends_at > now:
            return None
        return await _expire(session, sub, actor)
    if sub.status not in LIVE or sub.current_period_end is None:
        return None
    if sub.current_period_end > now:
        return await _invoice_ahead(session, sub, actor, grace, now + notice)
    if sub.status == S.ACTIVE.value and (sub.scheduled_tier_id or sub.cancel_at_period_end):
        new = await apply_period_end(session, sub, actor)
        if new is not None and new.current_period_end is not None:
            await run_lifecycle(session, new.id, actor, grace=grace, notice=notice)
        return "period_change"
    tier = await tiers.get(session, sub.tier_id)
    if tier is None or tier.price_cents == 0:
        sub.current_period_end = None  # a free tier has no periods to renew
        return None
    invoice = await _invoice_for_next_period(session, sub, tier, grace)
    if invoice.status == InvoiceStatus.PAID.value:  # paid ahead: the period simply continues
        await _start_paid_period(session, sub, invoice, now)
        return "renewed"
    if sub.auto_renew_from_credits and await credits.debit(
        session,
        sub.user_id,
        invoice.amount_cents,
        invoice.currency,
        reason="renewal",
        key=f"invoice:{invoice.id}",
        reference=invoice.id,
    ):
        await pay_invoice(session, invoice.id, actor, provider="credits", note="auto-renewed from credits")
        notifications.notify(
            session,
            sub.user_id,
            "billing.renewed",
            "Subscription renewed from credits",
            f"{_money(invoice.amount_cents, invoice.currency)} was taken from your credit balance for the next period.",
            {"invoiceId": invoice.id, "subscriptionId": sub.id},
        )
        record(
            session,
            actor,
            "subscription.renewed",
            target_type="subscription",
            target_id=sub.id,
            details={"invoiceId": invoice.id, "amountCents": invoice.amount_cents, "from": "credits"},
        )
        return "renewed"
    before = _sub_snapshot(sub)
    sub.status = S.PAST_DUE.value if sub.status == S.ACTIVE.value else S.PENDING_PAYMENT.value
    sub.grace_ends_at = sub.current_period_end + grace
    await repo.set_billing_hold(session, sub.user_id, HOLD_PAST_DUE)
    notifications.notify(
        session,
        sub.user_id,
        "billing.past_due",
        "Payment due: uploads are paused",
        f"Invoice {invoice.id} ({_money(invoice.amount_cents, invoice.currency)}) is unpaid. Your files stay "
        f"readable; uploads resume once it is paid. Unpaid after {sub.grace_ends_at:%Y-%m-%d}, the subscription "
        "ends and your account returns to the free tier (nothing is deleted).",
        {"invoiceId": invoice.id, "subscriptionId": sub.id, "graceEndsAt": sub.grace_ends_at.isoformat()},
    )
    record(
        session,
        actor,
        "subscription.past_due",
        target_type="subscription",
        target_id=sub.id,
        details={
            "before": before,
            "after": _sub_snapshot(sub),
            "invoiceId": invoice.id,
            "graceEndsAt": sub.grace_ends_at.isoformat(),
        },
    )
    return "past_due"


async def _void_next_period(session: AsyncSession, sub: Subscription, reason: str) -> None:
    """An invoice issued ahead for the next period is void once that period will not happen as invoiced."""
    for invoice in await repo.invoices_of_subscription(session, sub.id, *OPEN):
        if invoice.period_start is not None and invoice.period_start == sub.current_period_end:
            await repo.transition_invoice(session, invoice.id, OPEN, status=InvoiceStatus.VOID.value, note=reason)


async def _invoice_ahead(
    session: AsyncSession, sub: Subscription, actor: Actor, grace: timedelta, horizon: datetime
) -> str | None:
    """Issue the next period's invoice once the period end is within the notice: the user can pay it before the
    period ends (paying it early extends the period at once). Credits are only used at the period end."""
    assert sub.current_period_end is not None
    if (
        sub.status != S.ACTIVE.value
        or sub.scheduled_tier_id
        or sub.cancel_at_period_end
        or sub.current_period_end > horizon
    ):
        return None
    tier = await tiers.get(session, sub.tier_id)
    if tier is None or tier.price_cents == 0:
        return None
    if await repo.live_invoice_for_period(session, sub.id, sub.current_period_end) is not None:
        return None
    invoice = await _invoice_for_next_period(session, sub, tier, grace)
    notifications.notify(
        session,
        sub.user_id,
        "billing.invoice",
        "Your next invoice",
        f"Invoice {invoice.id} ({_money(invoice.amount_cents, invoice.currency)}) is for the period starting "
        f"{sub.current_period_end:%Y-%m-%d}"
        + (
            "; it will be paid from your credits if they cover it."
            if sub.auto_renew_from_credits
            else "; pay it before then to keep uploading without a pause."
        ),
        {"invoiceId": invoice.id, "subscriptionId": sub.id},
    )
    record(
        session,
        actor,
        "invoice.issued",
        target_type="invoice",
        target_id=invoice.id,
        details={
            "subscriptionId": sub.id,
            "amountCents": invoice.amount_cents,
            "periodStart": sub.current_period_end.isoformat(),
            "autoRenewFromCredits": sub.auto_renew_from_credits,
        },
    )
    return "invoiced"


async def _invoice_for_next_period(session: AsyncSession, sub: Subscription, tier: Tier, grace: timedelta) -> Invoice:
    """The invoice for the period starting at the current period's end: the trial's own invoice, one issued
    before, or a new renewal invoice (at most one live invoice per period, by a unique index)."""
    assert sub.current_period_end is not None
    existing = await repo.live_invoice_for_period(session, sub.id, sub.current_period_end)
    if existing is not None:
        return existing
    if sub.status == S.TRIALING.value:  # a trial invoice from before invoices carried their period
        for invoice in await repo.invoices_of_subscription(session, sub.id, *OPEN):
            invoice.period_start = sub.current_period_end
            invoice.period_end = period_end(sub.current_period_end, tier.billing_period)
            await session.flush()  # pay_invoice re-reads the invoice (populate_existing): keep the period
            return invoice
    invoice = _invoice(sub, tier, grace, kind="renewal", period_start=sub.current_period_end)
    repo.add(session, invoice)
    await session.flush()
    return invoice


async def _expire(session: AsyncSession, sub: Subscription, actor: Actor) -> str:
    """Grace is over: open invoices are voided (a late payment becomes credit) and the user falls back to the
    default tier, or to no storage. Nothing stored is deleted."""
    for invoice in await repo.invoices_of_subscription(session, sub.id, *OPEN):
        await repo.transition_invoice(
            session, invoice.id, OPEN, status=InvoiceStatus.VOID.value, note="subscription expired unpaid"
        )
    before = _sub_snapshot(sub)
    new = await _replace(session, sub, await tiers.default_tier_id(session), S.EXPIRED, start=None)
    notifications.notify(
        session,
        sub.user_id,
        "billing.expired",
        "Subscription ended",
        "The grace period ended unpaid, so the subscription has ended"
        + (" and your account is on the free tier." if new else ".")
        + " Your files are kept; request a tier to get more room again.",
        {"subscriptionId": sub.id},
    )
    record(
        session,
        actor,
        "subscription.expired",
        target_type="subscription",
        target_id=sub.id,
        details={"before": before, "after": _sub_snapshot(new)},
    )
    return "expired"


async def invoice_refunded(session: AsyncSession, invoice: Invoice, actor: Actor, *, grace: timedelta) -> None:
    """A refunded invoice that paid the period running now leaves that period unpaid: the subscription goes
    PAST_DUE with a grace period and the period is invoiced again. A refund of a past period changes nothing."""
    if invoice.subscription_id is None or invoice.period_end is None:
        return
    sub = await repo.lock_subscription(session, invoice.subscription_id)
    if (
        sub is None
        or not sub.is_current
        or sub.status != S.ACTIVE.value
        or sub.current_period_end != invoice.period_end
    ):
        return
    tier = await tiers.get(session, sub.tier_id)
    if tier is None:
        return
    reissued = Invoice(
        user_id=sub.user_id,
        subscription_id=sub.id,
        tier_id=tier.id,
        amount_cents=invoice.amount_cents,
        currency=invoice.currency,
        status=InvoiceStatus.PENDING.value,
        kind="renewal",
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        description=invoice.description,
        due_at=utcnow() + grace,
    )
    repo.add(session, reissued)
    before = _sub_snapshot(sub)
    sub.status, sub.grace_ends_at = S.PAST_DUE.value, utcnow() + grace
    await session.flush()
    await repo.set_billing_hold(session, sub.user_id, HOLD_PAST_DUE)
    notifications.notify(
        session,
        sub.user_id,
        "billing.past_due",
        "Payment refunded: uploads are paused",
        f"The payment for the current period was refunded. Invoice {reissued.id} is open for it; your files stay "
        "readable and uploads resume once it is paid.",
        {"invoiceId": reissued.id, "subscriptionId": sub.id, "graceEndsAt": sub.grace_ends_at.isoformat()},
    )
    record(
        session,
        actor,
        "subscription.past_due",
        target_type="subscription",
        target_id=sub.id,
        details={"before": before, "after": _sub_snapshot(sub), "invoiceId": reissued.id, "reason": "refund"},
    )


async def set_auto_renew(session: AsyncSession, user_id: str, enabled: bool, actor: Actor) -> Subscription:
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
