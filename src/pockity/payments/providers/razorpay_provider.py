"""Razorpay: orders for invoices, checkout signature verification, and its webhook events.

The official package verifies both signatures (`verify_payment_signature`: HMAC-SHA256(key secret,
"order_id|payment_id"); `verify_webhook_signature`: HMAC-SHA256(webhook secret, raw body) in
`X-Razorpay-Signature`). Its HTTP calls are blocking `requests` calls, so they run in a worker thread;
`RAZORPAY_API_BASE` points the client at another host.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor
from pockity.config import Settings
from pockity.models import Invoice, Payment
from pockity.payments import service
from pockity.payments.service import InvalidSignature, ProviderFailed, ProviderNotConfigured, Received
from pockity.payments.webhooks import Handling, Verified, field, parse_json

NAME = "razorpay"


def load_sdk() -> Any:
    """The razorpay package (and `requests`), imported when first needed — the app loads it at start when
    Razorpay is configured — so a server without Razorpay does not carry it (~5 MiB)."""
    import razorpay  # type: ignore[import-untyped]
    import razorpay.constants.url  # type: ignore[import-untyped]
    import razorpay.errors  # type: ignore[import-untyped]

    return razorpay


def configured(settings: Settings) -> bool:
    """Whether checkouts can be created (the key id and secret are set)."""
    return bool(settings.razorpay_key_id and settings.razorpay_secret)


def _api_base(configured_base: str) -> str:
    """RAZORPAY_API_BASE is documented with /v1 (razorpay 1.x's base); razorpay 2.x adds /v1 to each path itself."""
    base = configured_base.rstrip("/")
    v1 = getattr(load_sdk().constants.url.URL, "V1", None)
    return base[: -len(v1)] if v1 and base.endswith(v1) else base


def _client(settings: Settings) -> Any:
    if not configured(settings):
        raise ProviderNotConfigured("Razorpay is not configured on this server.")
    options = {"base_url": _api_base(settings.razorpay_api_base)} if settings.razorpay_api_base else {}
    return load_sdk().Client(auth=(settings.razorpay_key_id, settings.razorpay_secret), **options)


async def create_order(settings: Settings, invoice: Invoice) -> str:
    """A Razorpay order for exactly this invoice; its id (the checkout widget opens it)."""
    client = _client(settings)
    errors = load_sdk().errors
    data = {
        "amount": invoice.amount_cents,
        "currency": invoice.currency,
        "receipt": invoice.id,
        "notes": {"invoiceId": invoice.id, "userId": invoice.user_id},
    }
    try:
        order = await asyncio.to_thread(client.order.create, data, timeout=settings.provider_timeout_seconds)
    except (errors.BadRequestError, errors.GatewayError, errors.ServerError) as exc:
        raise ProviderFailed(details={"provider": NAME, "message": str(exc)[:300]}) from None
    except OSError as exc:  # requests' connection errors
        raise ProviderFailed(details={"provider": NAME, "message": type(exc).__name__}) from None
    if not isinstance(order, dict) or not isinstance(order.get("id"), str):
        raise ProviderFailed(details={"provider": NAME, "message": "unexpected order response"})
    order_id: str = order["id"]
    return order_id


async def verify_checkout(
    session: AsyncSession,
    settings: Settings,
    user_id: str,
    order_id: str,
    payment_id: str,
    signature: str,
    actor: Actor,
) -> Payment:
    """The browser's proof of payment: valid only if signed with our key secret over order_id|payment_id.
    The amount is the order's (Razorpay captures exactly the order amount)."""
    client = _client(settings)
    if not signature.isascii():  # hmac.compare_digest raises TypeError on non-ASCII
        raise InvalidSignature()
    try:
        client.utility.verify_payment_signature(
            {"razorpay_order_id": order_id, "razorpay_payment_id": payment_id, "razorpay_signature": signature}
        )
    except load_sdk().errors.SignatureVerificationError:
        raise InvalidSignature() from None
    pending = await service.own_checkout(session, NAME, order_id, user_id)
    try:
        return await service.receive(
            session,
            Received(NAME, payment_id, pending.amount_cents, pending.currency, pending.invoice_id, order_id),
            actor,
        )
    except service.Unapplicable:
        raise service.PaymentNotFound("The invoice for this order no longer exists.") from None


def verify(settings: Settings, raw: bytes, signature: str | None, event_id: str | None) -> Verified:
    """A Razorpay webhook whose signature matches the raw body, or InvalidSignature."""
    if not settings.razorpay_webhook_secret:
        raise ProviderNotConfigured("Razorpay webhooks are not configured on this server.")
    if not signature or not signature.isascii():  # hmac.compare_digest raises TypeError on non-ASCII
        raise InvalidSignature()
    text, body = parse_json(raw)
    try:
        load_sdk().Utility(None).verify_webhook_signature(text, signature, settings.razorpay_webhook_secret)
    except load_sdk().errors.SignatureVerificationError:
        raise InvalidSignature() from None
    kind = body.get("event")
    if not isinstance(kind, str):
        raise InvalidSignature("The event has no type.", code="invalid_payload")
    if not event_id:  # X-Razorpay-Event-Id is the documented key; without it, the entity names the event
        entity = field(body, "payload", "refund", "entity", "id") or field(body, "payload", "payment", "entity", "id")
        event_id = f"{kind}:{entity or body.get('created_at')}"
    return Verified(NAME, event_id, kind, body, text)


async def handle(session: AsyncSession, event: Verified, ctx: Handling) -> str:
    """Apply a verified Razorpay event; its outcome for the inbox."""
    payment = field(event.body, "payload", "payment", "entity") or {}
    kind = event.event_type
    if kind in ("payment.captured", "order.paid"):
        if not isinstance(payment.get("id"), str):
            raise service.Unapplicable("payment event without a payment id")
        return await service.receive_event(
            session,
            Received(
                NAME,
                payment["id"],
                payment.get("amount") if isinstance(payment.get("amount"), int) else None,
                payment.get("currency"),
                invoice_id=field(payment, "notes", "invoiceId"),
                checkout_ref=payment.get("order_id"),
            ),
            ctx.actor,
        )
    if kind == "payment.failed":
        return await service.payment_failed(
            session,
            NAME,
            invoice_id=field(payment, "notes", "invoiceId"),
            checkout_ref=payment.get("order_id"),
            reason=str(payment.get("error_description") or kind),
            actor=ctx.actor,
        )
    if kind == "refund.processed":
        refund = field(event.body, "payload", "refund", "entity") or {}
        money = refund.get("payment_id") or payment.get("id")
        total = payment.get("amount_refunded")
        if not isinstance(total, int):  # no payment entity: add this refund to what is recorded
            so_far = await service.refunded_so_far(session, NAME, money) if isinstance(money, str) else 0
            amount = refund.get("amount")
            total = so_far + (amount if isinstance(amount, int) else 0)
        if not isinstance(money, str):
            raise service.Unapplicable("refund without a payment id")
        return await service.refunded(session, NAME, money, total, ctx.actor, grace=ctx.grace)
    return "ignored"
