"""Starting a card (Stripe) or Razorpay checkout for an invoice.

Three steps, like an upload: a PENDING payment is committed first (so the provider's events can always be
matched to it), the provider is called outside any transaction, then its session/order id is recorded — or,
if the provider refused, the attempt is closed as FAILED.
"""

from __future__ import annotations

from typing import Any

from pockity.auth.schemas import Principal
from pockity.config import Settings
from pockity.db import Database, unit_of_work
from pockity.payments import service
from pockity.payments.providers import razorpay_provider, stripe_provider


async def start(
    db: Database, settings: Settings, principal: Principal, invoice_id: str, provider: str
) -> dict[str, Any]:
    configured = stripe_provider.configured if provider == "stripe" else razorpay_provider.configured
    if not configured(settings):
        raise service.ProviderNotConfigured(f"{provider} is not configured on this server.")
    async with unit_of_work(db) as session:
        invoice = await service.open_own_invoice(session, principal.user_id, invoice_id)
        payment = await service.start_payment(session, invoice, provider)
        session.expunge(invoice)
    out: dict[str, Any] = {
        "provider": provider,
        "payment_id": payment.id,
        "invoice_id": invoice.id,
        "amount_cents": invoice.amount_cents,
        "currency": invoice.currency,
    }
    try:
        if provider == "stripe":
            made = await stripe_provider.create_checkout(settings, invoice, payment, principal.email)
            ref = str(made["id"])
            out |= {"url": made["url"], "session_id": ref}
        else:
            order = await razorpay_provider.create_order(settings, invoice)
            ref = str(order["id"])
            out |= {"order_id": ref, "key_id": settings.razorpay_key_id}
    except service.ProviderFailed:
        async with unit_of_work(db) as session:
            await service.checkout_refused(session, payment.id)
        raise
    async with unit_of_work(db) as session:
        await service.checkout_created(session, payment.id, ref)
    return out
