"""Stripe: Checkout Sessions for invoices, and its webhook events.

The official package does the signing work: `WebhookSignature.verify_header` checks `Stripe-Signature`
(t=..., v1=HMAC-SHA256(secret, "t.body")) with a 5-minute tolerance. The SDK is synchronous, so calls run in
a worker thread; `STRIPE_API_BASE` points it at another host (tests run a local server there).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.config import Settings
from pockity.models import Invoice, Payment
from pockity.payments import service
from pockity.payments.service import InvalidSignature, ProviderFailed, ProviderNotConfigured, Received
from pockity.payments.webhooks import Handling, Verified, field, parse_json

if TYPE_CHECKING:
    import stripe
    from stripe.params.checkout import SessionCreateParams

NAME = "stripe"
TOLERANCE_SECONDS = 300


def configured(settings: Settings) -> bool:
    """Whether checkouts can be created (the secret key is set)."""
    return bool(settings.stripe_secret_key)


def load_sdk() -> Any:
    """The stripe package, imported when first needed (the app loads it at start when Stripe is configured):
    it adds ~10 MiB to a process, which a server without Stripe should not pay."""
    import stripe

    return stripe


def _client(settings: Settings) -> stripe.StripeClient:
    sdk = load_sdk()
    if not settings.stripe_secret_key:
        raise ProviderNotConfigured("Stripe is not configured on this server.")
    client: stripe.StripeClient = sdk.StripeClient(
        settings.stripe_secret_key,
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
        max_network_retries=1,
        http_client=sdk.RequestsClient(timeout=settings.provider_timeout_seconds),
    )
    return client


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str | None  # where to send the user


async def create_checkout(settings: Settings, invoice: Invoice, payment: Payment, email: str) -> CheckoutSession:
    """A Checkout Session for exactly this invoice; the invoice id travels as client_reference_id and in
    metadata (also on the PaymentIntent, so refunds can be traced)."""
    stripe = load_sdk()
    client = _client(settings)
    base = settings.base_url
    params: SessionCreateParams = {
        "mode": "payment",
        "client_reference_id": invoice.id,
        "customer_email": email,
        "metadata": {"invoiceId": invoice.id, "userId": invoice.user_id, "paymentId": payment.id},
        "payment_intent_data": {"metadata": {"invoiceId": invoice.id, "paymentId": payment.id}},
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": invoice.currency.lower(),
                    "unit_amount": invoice.amount_cents,
                    "product_data": {"name": invoice.description},
                },
            }
        ],
        "success_url": settings.checkout_success_url or f"{base}/billing/paid?invoice={invoice.id}",
        "cancel_url": settings.checkout_cancel_url or f"{base}/billing/cancelled?invoice={invoice.id}",
    }
    try:
        session = await asyncio.to_thread(
            client.v1.checkout.sessions.create,
            params,
            {"idempotency_key": f"pockity-checkout-{payment.id}"},
        )
    except stripe.StripeError as exc:
        raise ProviderFailed(details={"provider": NAME, "message": str(exc.user_message or exc)[:300]}) from None
    return CheckoutSession(session.id, session.url)


def verify(settings: Settings, raw: bytes, signature: str | None) -> Verified:
    """A Stripe event whose `Stripe-Signature` matches the raw body within the tolerance, or InvalidSignature."""
    if not settings.stripe_webhook_secret:
        raise ProviderNotConfigured("Stripe webhooks are not configured on this server.")
    stripe = load_sdk()
    text, body = parse_json(raw)
    if signature is not None and not signature.isascii():  # hmac.compare_digest raises TypeError on these
        raise InvalidSignature()
    try:
        stripe.WebhookSignature.verify_header(text, signature, settings.stripe_webhook_secret, TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError:
        raise InvalidSignature() from None
    event_id, event_type = body.get("id"), body.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise InvalidSignature("The event has no id or type.", code="invalid_payload")
    return Verified(NAME, event_id, event_type, body, text)


def _invoice_id(obj: object) -> str | None:
    for candidate in (
        field(obj, "metadata", "invoiceId"),
        field(obj, "client_reference_id"),
        field(obj, "subscription_details", "metadata", "invoiceId"),
        field(obj, "parent", "subscription_details", "metadata", "invoiceId"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _money_id(obj: object) -> str | None:
    pi = field(obj, "payment_intent")
    if isinstance(pi, dict):
        pi = pi.get("id")
    return pi if isinstance(pi, str) and pi else None


async def handle(session: AsyncSession, event: Verified, ctx: Handling) -> str:
    """Apply a verified Stripe event; its outcome for the inbox."""
    obj = field(event.body, "data", "object")
    if not isinstance(obj, dict):
        raise service.Unapplicable("event has no data.object")
    kind = event.event_type
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        if obj.get("payment_status") != "paid":
            return "awaiting_payment"  # an asynchronous method: async_payment_succeeded follows
        return await service.receive_event(
            session,
            Received(
                NAME,
                _money_id(obj) or str(obj.get("id")),
                _int(obj.get("amount_total")),
                _currency(obj),
                invoice_id=_invoice_id(obj),
                checkout_ref=obj.get("id"),
            ),
            ctx.actor,
        )
    if kind == "invoice.paid":
        return await service.receive_event(
            session,
            Received(
                NAME,
                _money_id(obj) or str(obj.get("id")),
                _int(obj.get("amount_paid")),
                _currency(obj),
                invoice_id=_invoice_id(obj),
            ),
            ctx.actor,
        )
    if kind in ("invoice.payment_failed", "checkout.session.async_payment_failed"):
        reason = field(obj, "last_finalization_error", "message") or kind
        return await service.payment_failed(
            session,
            NAME,
            invoice_id=_invoice_id(obj),
            checkout_ref=obj.get("id") if kind.startswith("checkout.") else None,
            reason=str(reason),
            actor=ctx.actor,
        )
    if kind == "checkout.session.expired":
        # The user left without paying: that attempt is over; the invoice stays open (nothing failed).
        ref = obj.get("id")
        return await service.checkout_abandoned(session, NAME, ref) if isinstance(ref, str) else "ignored"
    if kind == "charge.refunded":
        money = _money_id(obj) or obj.get("id")
        total = _int(obj.get("amount_refunded"))
        if not isinstance(money, str) or total is None:
            raise service.Unapplicable("charge.refunded without payment_intent or amount_refunded")
        return await service.refunded(session, NAME, money, total, ctx.actor, grace=ctx.grace)
    return "ignored"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _currency(obj: object) -> str | None:
    value = obj.get("currency") if isinstance(obj, dict) else None
    return value.upper() if isinstance(value, str) else None
