"""Money in and out of invoices: receiving a payment once, paying from credits, refunds, top-ups.

Every provider ends up here. `receive` is the one way money is applied: the payment row moves to CONFIRMED
with one conditional UPDATE, and what it brought is split between the invoice and the credit balance (an
overpayment, a partial payment, a payment for an invoice already paid or voided all become credit — money
is never dropped). A provider's id for the money (`provider_payment_id`) is unique per provider, so two
events about the same money — a checkout completion and a payment event, in either order — apply it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import invoices, lifecycle
from pockity.billing.invoices import InvoiceNotPayable
from pockity.credits import service as credits
from pockity.errors import Conflict, NotFound, PockityError
from pockity.kit.money import amount
from pockity.kit.pagination import Page, page_of
from pockity.kit.time import utcnow
from pockity.models import Invoice, InvoiceStatus, Payment, PaymentEvent, PaymentStatus
from pockity.notifications import service as notifications
from pockity.payments import repository as repo


class ProviderNotConfigured(PockityError):
    status, code, message = 503, "provider_not_configured", "This payment method is not configured on this server."


class ProviderFailed(PockityError):
    status, code, message = 502, "provider_error", "The payment provider did not accept the request."


class InvalidSignature(PockityError):
    status, code, message = 400, "invalid_signature", "The signature is missing or does not match."


class PaymentNotFound(NotFound):
    code, message = "payment_not_found", "Payment not found."


class PaymentNotPending(Conflict):
    code, message = "payment_not_pending", "This payment has already been resolved."


class NotYet(Exception):
    """A verified event that refers to something not recorded yet (a refund before the payment it refunds):
    answered 503 so the provider delivers it again later, by when the earlier event has usually arrived."""


class Unapplicable(Exception):
    """A verified event that can never be applied (unknown invoice, wrong currency): it is stored, marked
    processed with this reason, and left for an admin — retrying would not help."""


@dataclass(frozen=True)
class Received:
    """Money a provider says arrived. `amount_cents` None means "the invoice's amount" (a provider event that
    only says the invoice it was created for is settled)."""

    provider: str
    provider_payment_id: str
    amount_cents: int | None
    currency: str | None
    invoice_id: str | None = None
    checkout_ref: str | None = None


def payment_for(invoice: Invoice, provider: str, **values: object) -> Payment:
    """A PENDING payment of `invoice`'s amount by `provider` (not stored yet)."""
    return Payment(
        user_id=invoice.user_id,
        invoice_id=invoice.id,
        provider=provider,
        status=PaymentStatus.PENDING.value,
        amount_cents=invoice.amount_cents,
        currency=invoice.currency,
        credited_cents=0,
        refunded_cents=0,
        **values,
    )


async def start_payment(session: AsyncSession, invoice: Invoice, provider: str, **values: object) -> Payment:
    """A PENDING payment row for a checkout about to be created (its ref is filled in afterwards)."""
    payment = payment_for(invoice, provider, **values)
    repo.add(session, payment)
    await session.flush()
    return payment


async def checkout_created(session: AsyncSession, payment_id: str, checkout_ref: str) -> None:
    """The provider made the session/order for a PENDING attempt: remember its id to match its events."""
    await repo.transition_payment(session, payment_id, [PaymentStatus.PENDING.value], checkout_ref=checkout_ref)


async def checkout_refused(session: AsyncSession, payment_id: str) -> None:
    """The provider refused to start the checkout: the attempt is over; it must not look pending for ever."""
    await repo.transition_payment(
        session,
        payment_id,
        [PaymentStatus.PENDING.value],
        status=PaymentStatus.FAILED.value,
        note="the provider refused the checkout",
    )


async def own_checkout(session: AsyncSession, provider: str, checkout_ref: str, user_id: str) -> Payment:
    """The user's payment attempt for a provider's session/order id; another user's is not found."""
    payment = await repo.payment_by_checkout(session, provider, checkout_ref)
    if payment is None or payment.user_id != user_id:
        raise PaymentNotFound("No checkout with this order id.")
    return payment


async def refunded_so_far(session: AsyncSession, provider: str, provider_payment_id: str) -> int:
    """What has been refunded of a provider's payment until now (0 when the payment is not recorded)."""
    payment = await repo.payment_by_provider_id(session, provider, provider_payment_id)
    return payment.refunded_cents if payment is not None else 0


async def receive(session: AsyncSession, money: Received, actor: Actor) -> Payment:
    """Apply money a provider reports, once, and return the payment as stored. Raises Unapplicable when it
    cannot be matched to an invoice."""
    payment = (await _receive(session, money, actor))[0]
    await session.refresh(payment)  # apply_received changed the row with UPDATEs
    return payment


async def receive_event(session: AsyncSession, money: Received, actor: Actor) -> str:
    """`receive` for a webhook: its outcome says whether this event applied the money or found it applied."""
    return "applied" if (await _receive(session, money, actor))[1] else "already_applied"


async def _receive(session: AsyncSession, money: Received, actor: Actor) -> tuple[Payment, bool]:
    payment = await repo.payment_by_provider_id(session, money.provider, money.provider_payment_id)
    if payment is not None and payment.status in (PaymentStatus.CONFIRMED.value, PaymentStatus.REFUNDED.value):
        return payment, False  # the same money again (a replay, or a second event about it)
    if payment is None and money.checkout_ref:
        by_checkout = await repo.payment_by_checkout(session, money.provider, money.checkout_ref)
        if by_checkout is not None and by_checkout.provider_payment_id in (None, money.provider_payment_id):
            payment = by_checkout
            if payment.status in (PaymentStatus.CONFIRMED.value, PaymentStatus.REFUNDED.value):
                return payment, False
    if payment is None:
        invoice = await invoices.get(session, money.invoice_id) if money.invoice_id else None
        if invoice is None:
            raise Unapplicable(f"no invoice {money.invoice_id!r} for {money.provider} payment")
        payment = payment_for(
            invoice, money.provider, checkout_ref=money.checkout_ref, provider_payment_id=money.provider_payment_id
        )
        try:
            async with session.begin_nested():
                repo.add(session, payment)
        except IntegrityError:  # another event about the same money got there first
            existing = await repo.payment_by_provider_id(session, money.provider, money.provider_payment_id)
            if existing is None:
                raise
            return existing, False
    if money.currency is not None and money.currency.upper() != payment.currency:
        raise Unapplicable(f"currency {money.currency} does not match the invoice's {payment.currency}")
    amount = payment.amount_cents if money.amount_cents is None else money.amount_cents
    applied = await apply_received(session, payment, amount, actor, provider_payment_id=money.provider_payment_id)
    return payment, applied


async def apply_received(
    session: AsyncSession,
    payment: Payment,
    received_cents: int,
    actor: Actor,
    *,
    provider_payment_id: str | None = None,
    note: str | None = None,
) -> bool:
    """Confirm `payment` with what arrived, once; pay its invoice and credit whatever the invoice did not take."""
    values: dict[str, object] = {
        "status": PaymentStatus.CONFIRMED.value,
        "received_cents": received_cents,
        "resolved_at": utcnow(),
    }
    if provider_payment_id:
        values["provider_payment_id"] = provider_payment_id
    if note is not None:
        values["note"] = note
    if actor.type == "user" and actor.id:
        values["resolved_by"] = actor.id
    if not await repo.transition_payment(
        session, payment.id, [PaymentStatus.PENDING.value, PaymentStatus.FAILED.value], **values
    ):
        return False
    invoice = await invoices.get(session, payment.invoice_id) if payment.invoice_id else None
    credited, reason = received_cents, "unapplied_payment"
    if invoice is not None and invoice.status in invoices.OPEN:
        if invoice.kind == "topup":  # all of it is credit; the top-up invoice closes once it is covered
            if await repo.received_for_invoice(session, invoice.id) >= invoice.amount_cents:
                await invoices.pay_invoice(
                    session, invoice.id, actor, provider=payment.provider, provider_ref=payment.id
                )
            reason = "topup"
        elif received_cents >= invoice.amount_cents:
            await invoices.pay_invoice(session, invoice.id, actor, provider=payment.provider, provider_ref=payment.id)
            credited, reason = received_cents - invoice.amount_cents, "overpayment"
        else:
            reason = "partial_payment"
    if credited > 0:
        await credits.grant(
            session,
            payment.user_id,
            credited,
            payment.currency,
            reason=reason,
            key=f"payment:{payment.id}",
            reference=payment.id,
            note=f"invoice {invoice.id}" if invoice else None,
        )
        await repo.transition_payment(session, payment.id, [PaymentStatus.CONFIRMED.value], credited_cents=credited)
    _receipt(session, payment, received_cents, invoice.id if invoice else None, credited)
    record(
        session,
        actor,
        "payment.received",
        target_type="payment",
        target_id=payment.id,
        details={
            "provider": payment.provider,
            "invoiceId": payment.invoice_id,
            "receivedCents": received_cents,
            "creditedCents": credited,
            "creditReason": reason if credited else None,
        },
    )
    if reason == "partial_payment" and invoice is not None:
        # Earlier partial payments (or other credit) may now cover the invoice.
        if await credits.balance(session, payment.user_id, invoice.currency) >= invoice.amount_cents:
            await pay_with_credits(session, payment.user_id, invoice.id, actor)
    return True


def _receipt(
    session: AsyncSession, payment: Payment, received_cents: int, invoice_id: str | None, credited: int
) -> None:
    """The payer's receipt: a notification and an email with the amount and the method."""
    got = amount(received_cents, payment.currency)
    applied = f" for invoice {invoice_id}" if invoice_id else ""
    extra = f" {amount(credited, payment.currency)} of it was added to your credit balance." if credited else ""
    body = f"We received {got} by {payment.provider}{applied}.{extra} Payment reference: {payment.id}."
    data: dict[str, object] = {
        "paymentId": payment.id,
        "invoiceId": invoice_id,
        "amountCents": received_cents,
        "currency": payment.currency,
        "method": payment.provider,
        "creditedCents": credited,
    }
    notifications.notify(session, payment.user_id, "billing.payment_received", f"Payment received: {got}", body, data)


async def pay_with_credits(session: AsyncSession, user_id: str, invoice_id: str, actor: Actor) -> Invoice:
    """Pay an open invoice from the credit balance: one conditional debit, then the invoice is paid once."""
    invoice = await invoices.open_own(session, user_id, invoice_id)
    if invoice.kind == "topup":
        raise InvoiceNotPayable("A top-up cannot be paid with credits.", code="topup_not_payable_with_credits")
    if not await credits.debit(
        session,
        user_id,
        invoice.amount_cents,
        invoice.currency,
        reason="invoice",
        key=f"invoice:{invoice.id}",
        reference=invoice.id,
    ):
        have = await credits.balance(session, user_id, invoice.currency)
        raise credits.InsufficientCredits(
            details={"balanceCents": have, "amountCents": invoice.amount_cents, "currency": invoice.currency}
        )
    return await invoices.pay_invoice(session, invoice.id, actor, provider="credits")


async def payment_failed(
    session: AsyncSession, provider: str, *, invoice_id: str | None, checkout_ref: str | None, reason: str, actor: Actor
) -> str:
    """A provider says an attempt failed: the attempt is FAILED and an open invoice is marked FAILED (still
    payable). Nothing is charged and the subscription is left to the life cycle."""
    payment = await repo.payment_by_checkout(session, provider, checkout_ref) if checkout_ref else None
    if payment is not None:
        await repo.transition_payment(
            session, payment.id, [PaymentStatus.PENDING.value], status=PaymentStatus.FAILED.value, note=reason[:500]
        )
        invoice_id = invoice_id or payment.invoice_id
    invoice = await invoices.get(session, invoice_id) if invoice_id else None
    if invoice is None:
        raise Unapplicable(f"no invoice {invoice_id!r} for a failed {provider} payment")
    if await invoices.mark_failed(session, invoice.id):
        body = (
            f"Your {provider} payment of {amount(invoice.amount_cents, invoice.currency)} for invoice {invoice.id} "
            "did not go through. Nothing was charged; the invoice is still open and can be paid again."
        )
        data: dict[str, object] = {"invoiceId": invoice.id, "method": provider}
        notifications.notify(session, invoice.user_id, "billing.payment_failed", "A payment failed", body, data)
        record(
            session,
            actor,
            "invoice.payment_failed",
            target_type="invoice",
            target_id=invoice.id,
            details={"provider": provider, "reason": reason[:500]},
        )
        return "invoice_failed"
    return "noted"


async def checkout_abandoned(session: AsyncSession, provider: str, checkout_ref: str) -> str:
    """A checkout that expired unpaid: its PENDING attempt is closed as FAILED, the invoice is untouched."""
    payment = await repo.payment_by_checkout(session, provider, checkout_ref)
    if payment is None:
        return "ignored"
    closed = await repo.transition_payment(
        session,
        payment.id,
        [PaymentStatus.PENDING.value],
        status=PaymentStatus.FAILED.value,
        note="checkout expired unpaid",
    )
    return "closed" if closed else "noted"


async def refunded(
    session: AsyncSession,
    provider: str,
    provider_payment_id: str,
    refunded_total_cents: int,
    actor: Actor,
    *,
    grace: timedelta,
) -> str:
    """The provider returned money: first the part that became credit is taken back, then the invoice part
    marks the invoice REFUNDED (and a refunded current period goes PAST_DUE). `refunded_total_cents` is the
    payment's cumulative refund, so a replay or an older event changes nothing."""
    payment = await repo.payment_by_provider_id(session, provider, provider_payment_id)
    if payment is None:
        raise NotYet(f"no {provider} payment {provider_payment_id!r} to refund yet")
    received = payment.received_cents or 0
    total = min(refunded_total_cents, received)
    before = payment.refunded_cents
    if total <= before:
        return "noted"
    delta = total - before
    status = PaymentStatus.REFUNDED.value if total >= received else payment.status
    await repo.transition_payment(session, payment.id, [payment.status], refunded_cents=total, status=status)
    credit_left = max(0, payment.credited_cents - before)
    from_credit = min(delta, credit_left)
    if from_credit:
        await credits.take_back(
            session,
            payment.user_id,
            from_credit,
            payment.currency,
            reason="refund",
            key=f"refund:{payment.id}:{total}",
            reference=payment.id,
        )
    from_invoice = delta - from_credit
    invoice = await invoices.get(session, payment.invoice_id) if payment.invoice_id else None
    if from_invoice > 0 and invoice is not None and invoice.status == InvoiceStatus.PAID.value:
        if await invoices.add_refund(session, invoice, from_invoice):  # refunded in full
            invoice = await invoices.get(session, invoice.id)
            assert invoice is not None
            await lifecycle.invoice_refunded(session, invoice, actor, grace=grace)
    record(
        session,
        actor,
        "payment.refunded",
        target_type="payment",
        target_id=payment.id,
        details={
            "provider": provider,
            "refundedCents": delta,
            "refundedTotalCents": total,
            "fromCreditCents": from_credit,
            "invoiceId": payment.invoice_id,
        },
    )
    return "refunded"


async def create_topup(session: AsyncSession, user_id: str, amount_cents: int, currency: str, actor: Actor) -> Invoice:
    """A top-up is an invoice of kind `topup`: paid by any method, its whole amount becomes credit."""
    invoice = await invoices.create_topup(session, user_id, amount_cents, currency)
    record(
        session,
        actor,
        "credits.topup_requested",
        target_type="invoice",
        target_id=invoice.id,
        details={"amountCents": amount_cents, "currency": currency},
    )
    return invoice


async def own_payments(session: AsyncSession, user_id: str) -> Page[Payment]:
    """The user's latest 200 payments, newest first."""
    return Page(await repo.list_own_payments(session, user_id, 200))


async def pay_manually(session: AsyncSession, invoice_id: str, actor: Actor, note: str | None) -> Invoice:
    """Admin: money arrived outside any integration (a bank transfer). Recorded as a `manual` payment so a
    top-up still becomes credit and the payment history stays complete."""
    invoice = await invoices.payable(session, invoice_id)
    payment = payment_for(invoice, "manual", note=note)
    repo.add(session, payment)
    await session.flush()
    await apply_received(session, payment, invoice.amount_cents, actor, note=note)
    paid = await invoices.get(session, invoice_id)
    assert paid is not None
    return paid


async def list_payments(
    session: AsyncSession,
    *,
    status: str | None,
    provider: str | None,
    user_id: str | None,
    cursor: str | None,
    limit: int,
) -> Page[Payment]:
    """Admin: payments newest first; the cursor is the last id of the previous page."""
    rows = await repo.list_payments(
        session, status=status, provider=provider, user_id=user_id, after_id=cursor, limit=limit + 1
    )
    return page_of(rows, limit)


async def list_events(
    session: AsyncSession, *, provider: str | None, unprocessed: bool, cursor: str | None, limit: int
) -> Page[PaymentEvent]:
    """Admin: the inbox, newest first."""
    rows = await repo.list_events(session, provider=provider, unprocessed=unprocessed, after_id=cursor, limit=limit + 1)
    return page_of(rows, limit)


async def revenue(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """Admin: money received from payments confirmed in [start, end), net of refunds so far, in cents per
    currency (one query). Invoices paid from credits are not counted again: that money was counted when it
    arrived, and granted credit was never money."""
    return await repo.received_between(session, start, end)
