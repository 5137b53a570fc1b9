"""Invoices: issuing, paying, voiding, failing and refunding them. Every status change is one conditional
UPDATE (`WHERE status IN (...)`), so an invoice is paid, voided or refunded once however many callers race.

Its own module because payments (money in), the life cycle (renewals) and tier changes all change invoices,
and payments must do it through billing, never billing's repository. Paying an invoice starts the period it
pays for, so this module also moves a subscription to ACTIVE (through current.make_current).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import repository as repo
from pockity.billing.current import make_current
from pockity.errors import Conflict, NotFound
from pockity.kit.pagination import Page, page_of
from pockity.kit.periods import period_end
from pockity.kit.time import utcnow
from pockity.models import Invoice, InvoiceStatus, Subscription, SubscriptionStatus, Tier
from pockity.tiers import repository as tiers

OPEN = (InvoiceStatus.PENDING.value, InvoiceStatus.FAILED.value)  # still payable
PAYMENT_DUE = timedelta(days=7)
TOPUP_DUE = timedelta(days=7)


class InvoiceNotFound(NotFound):
    code, message = "invoice_not_found", "Invoice not found."


class InvoiceNotPayable(Conflict):
    code, message = "invoice_not_payable", "This invoice is not open for payment."


def new_invoice(
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


async def issue(session: AsyncSession, invoice: Invoice) -> Invoice:
    """Store a new invoice (its id is known afterwards)."""
    repo.add(session, invoice)
    await session.flush()
    return invoice


async def reissue(session: AsyncSession, refunded: Invoice, tier_id: str, due_at: datetime) -> Invoice:
    """A new open invoice for the same period as a refunded one."""
    return await issue(
        session,
        Invoice(
            user_id=refunded.user_id,
            subscription_id=refunded.subscription_id,
            tier_id=tier_id,
            amount_cents=refunded.amount_cents,
            currency=refunded.currency,
            status=InvoiceStatus.PENDING.value,
            kind="renewal",
            period_start=refunded.period_start,
            period_end=refunded.period_end,
            description=refunded.description,
            due_at=due_at,
        ),
    )


async def create_topup(session: AsyncSession, user_id: str, amount_cents: int, currency: str) -> Invoice:
    """A top-up is an invoice of kind `topup`: paid by any method, its whole amount becomes credit."""
    return await issue(
        session,
        Invoice(
            user_id=user_id,
            subscription_id=None,
            tier_id=None,
            amount_cents=amount_cents,
            currency=currency,
            status=InvoiceStatus.PENDING.value,
            kind="topup",
            description=f"Pockity credit top-up, {amount_cents / 100:.2f} {currency}",
            due_at=utcnow() + TOPUP_DUE,
            refunded_cents=0,
        ),
    )


# --- reading ---------------------------------------------------------------------------------------------


async def get(session: AsyncSession, invoice_id: str) -> Invoice | None:
    """The invoice as stored now (re-read), or None."""
    return await repo.get_invoice(session, invoice_id)


async def own(session: AsyncSession, user_id: str, invoice_id: str) -> Invoice:
    """One of the user's invoices; another user's is not found."""
    invoice = await repo.get_own_invoice(session, user_id, invoice_id)
    if invoice is None:
        raise InvoiceNotFound()
    return invoice


async def open_own(session: AsyncSession, user_id: str, invoice_id: str) -> Invoice:
    """One of the user's invoices that can still be paid."""
    invoice = await own(session, user_id, invoice_id)
    if invoice.status not in OPEN:
        raise InvoiceNotPayable(details={"status": invoice.status})
    return invoice


async def payable(session: AsyncSession, invoice_id: str) -> Invoice:
    """Admin: any user's invoice that can still be paid."""
    invoice = await repo.get_invoice(session, invoice_id)
    if invoice is None:
        raise InvoiceNotFound()
    if invoice.status not in OPEN:
        raise InvoiceNotPayable(details={"status": invoice.status})
    return invoice


async def own_list(session: AsyncSession, user_id: str) -> Page[Invoice]:
    """The user's invoices, newest first."""
    return Page(await repo.list_own_invoices(session, user_id))


async def list_invoices(
    session: AsyncSession, *, status: str | None, user_id: str | None, cursor: str | None, limit: int
) -> Page[Invoice]:
    """Admin: invoices newest first; the cursor is the last id of the previous page."""
    rows = await repo.list_invoices(session, status=status, user_id=user_id, after_id=cursor, limit=limit + 1)
    return page_of(rows, limit)


# --- status changes --------------------------------------------------------------------------------------


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
        if sub.status != SubscriptionStatus.ACTIVE.value:
            sub.provider = provider  # how the subscription was paid for
        await start_paid_period(session, sub, invoice, now)
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


async def start_paid_period(session: AsyncSession, sub: Subscription, invoice: Invoice, now: datetime) -> None:
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
    unpaid = (
        SubscriptionStatus.PENDING_PAYMENT.value,
        SubscriptionStatus.TRIALING.value,
        SubscriptionStatus.PAST_DUE.value,
    )
    if sub.status in unpaid:
        sub.status, sub.grace_ends_at = SubscriptionStatus.ACTIVE.value, None
        sub.current_period_start, sub.current_period_end = start, end
        await make_current(session, sub.user_id, sub, ended_status=SubscriptionStatus.CANCELLED)
    elif (
        sub.status == SubscriptionStatus.ACTIVE.value
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
    before = invoice.status
    if not await repo.transition_invoice(session, invoice_id, OPEN, status=InvoiceStatus.VOID.value, note=note):
        raise InvoiceNotPayable("Only an open invoice can be voided.", details={"status": invoice.status})
    invoice = await repo.get_invoice(session, invoice_id)
    assert invoice is not None
    sub = await repo.get_subscription(session, invoice.subscription_id) if invoice.subscription_id else None
    if sub is not None and sub.status == SubscriptionStatus.PENDING_PAYMENT.value and not sub.is_current:
        sub.status, sub.ended_at = SubscriptionStatus.CANCELLED.value, utcnow()
    record(
        session,
        actor,
        "invoice.voided",
        target_type="invoice",
        target_id=invoice.id,
        details={"before": {"status": before}, "after": {"status": invoice.status}, "note": note},
    )
    return invoice


async def void_open(session: AsyncSession, subscription_id: str, note: str) -> None:
    """Void every open invoice of a subscription that is ending (a payment arriving later becomes credit)."""
    for invoice in await repo.invoices_of_subscription(session, subscription_id, *OPEN):
        await repo.transition_invoice(session, invoice.id, OPEN, status=InvoiceStatus.VOID.value, note=note)


async def void_replaced(session: AsyncSession, invoice_id: str) -> None:
    """A pending invoice whose tier change a newer change replaced: never charged."""
    await repo.transition_invoice(
        session,
        invoice_id,
        [InvoiceStatus.PENDING.value],
        status=InvoiceStatus.VOID.value,
        note="replaced by a newer tier change",
    )


async def void_next_period(session: AsyncSession, sub: Subscription, reason: str) -> None:
    """An invoice issued ahead for the next period is void once that period will not happen as invoiced."""
    for invoice in await repo.invoices_of_subscription(session, sub.id, *OPEN):
        if invoice.period_start is not None and invoice.period_start == sub.current_period_end:
            await repo.transition_invoice(session, invoice.id, OPEN, status=InvoiceStatus.VOID.value, note=reason)


async def mark_failed(session: AsyncSession, invoice_id: str) -> bool:
    """A provider reported a failed attempt: a PENDING invoice becomes FAILED (still payable). True if it did."""
    return await repo.transition_invoice(
        session, invoice_id, [InvoiceStatus.PENDING.value], status=InvoiceStatus.FAILED.value
    )


async def add_refund(session: AsyncSession, invoice: Invoice, cents: int) -> bool:
    """Record `cents` more refunded on a PAID invoice; True when that refunds it in full (it is REFUNDED)."""
    refunded = invoice.refunded_cents + cents
    full = refunded >= invoice.amount_cents
    await repo.transition_invoice(
        session,
        invoice.id,
        [InvoiceStatus.PAID.value],
        refunded_cents=refunded,
        status=InvoiceStatus.REFUNDED.value if full else InvoiceStatus.PAID.value,
    )
    return full


async def open_of(session: AsyncSession, subscription_id: str) -> Sequence[Invoice]:
    """A subscription's open invoices, oldest first."""
    return await repo.invoices_of_subscription(session, subscription_id, *OPEN)


async def count_open(session: AsyncSession) -> int:
    """Admin: invoices still payable (pending or failed)."""
    return await repo.count_invoices(session, OPEN)
