"""Crypto payment processors that settle our invoices by webhook: Coinbase Commerce and BTCPay Server.

Neither has an official Python package; both sign the raw body with HMAC-SHA256 and a shared secret:
Coinbase Commerce in `X-CC-Webhook-Signature` (hex), BTCPay Server in `BTCPay-Sig` ("sha256=" + hex).
The charge's / store invoice's metadata carries our invoice id (`invoiceId`, or BTCPay's `orderId`).
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.config import Settings
from pockity.payments import crypto, service
from pockity.payments.service import InvalidSignature, ProviderNotConfigured, Received
from pockity.payments.webhooks import Handling, JsonObject, Verified, field, parse_json

COINBASE = "coinbase"
BTCPAY = "btcpay"


def _hmac_ok(secret: str, raw: bytes, given: str) -> bool:
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.strip().lower())


def _cents(amount: object) -> int | None:
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value < 0:
        return None
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_FLOOR))


# --- Coinbase Commerce -------------------------------------------------------------------------------------


def verify_coinbase(settings: Settings, raw: bytes, signature: str | None) -> Verified:
    """A Coinbase Commerce event whose signature matches the raw body, or InvalidSignature."""
    secret = settings.coinbase_commerce_webhook_secret
    if not secret:
        raise ProviderNotConfigured("Coinbase Commerce webhooks are not configured on this server.")
    if not signature or not _hmac_ok(secret, raw, signature):
        raise InvalidSignature()
    text, body = parse_json(raw)
    event_id, kind = field(body, "event", "id"), field(body, "event", "type")
    if not isinstance(event_id, str) or not isinstance(kind, str):
        raise InvalidSignature("The event has no id or type.", code="invalid_payload")
    return Verified(COINBASE, event_id, kind, body, text)


def _coinbase_received(charge: JsonObject) -> tuple[int | None, str | None]:
    """What arrived, in the charge's local (fiat) currency: the confirmed payments' sum, else the price."""
    total, currency, seen = 0, None, False
    for payment in charge.get("payments") or []:
        if str(field(payment, "status") or "").upper() != "CONFIRMED":
            continue
        cents = _cents(field(payment, "value", "local", "amount"))
        if cents is not None:
            total, seen = total + cents, True
            currency = field(payment, "value", "local", "currency") or currency
    if seen:
        return total, currency
    return _cents(field(charge, "pricing", "local", "amount")), field(charge, "pricing", "local", "currency")


async def handle_coinbase(session: AsyncSession, event: Verified, ctx: Handling) -> str:
    """Apply a verified Coinbase Commerce event; its outcome for the inbox."""
    charge = field(event.body, "event", "data")
    if not isinstance(charge, dict):
        raise service.Unapplicable("event without data")
    if event.event_type in ("charge:confirmed", "charge:resolved"):
        amount, currency = _coinbase_received(charge)
        if amount is None:
            raise service.Unapplicable("charge without an amount")
        money = charge.get("id") or charge.get("code")
        if not isinstance(money, str):
            raise service.Unapplicable("charge without an id")
        return await service.receive_event(
            session,
            Received(COINBASE, money, amount, currency, invoice_id=field(charge, "metadata", "invoiceId")),
            ctx.actor,
        )
    if event.event_type == "charge:failed":
        return "noted"  # nothing was received; the invoice stays open
    return "ignored"


# --- BTCPay Server -----------------------------------------------------------------------------------------


def verify_btcpay(settings: Settings, raw: bytes, signature: str | None) -> Verified:
    """A BTCPay Server event whose signature matches the raw body, or InvalidSignature."""
    secret = settings.btcpay_webhook_secret
    if not secret:
        raise ProviderNotConfigured("BTCPay Server webhooks are not configured on this server.")
    if not signature or not signature.startswith("sha256=") or not _hmac_ok(secret, raw, signature[7:]):
        raise InvalidSignature()
    text, body = parse_json(raw)
    # A redelivery has a new deliveryId and names the first one: both are the same event.
    event_id = body.get("originalDeliveryId") or body.get("deliveryId")
    kind = body.get("type")
    if not isinstance(event_id, str) or not isinstance(kind, str):
        raise InvalidSignature("The event has no deliveryId or type.", code="invalid_payload")
    return Verified(BTCPAY, event_id, kind, body, text)


def _our_invoice(body: JsonObject) -> str | None:
    value = field(body, "metadata", "invoiceId") or field(body, "metadata", "orderId")
    return value if isinstance(value, str) else None


async def handle_btcpay(session: AsyncSession, event: Verified, ctx: Handling) -> str:
    """Apply a verified BTCPay Server event; its outcome for the inbox."""
    store_invoice = event.body.get("invoiceId")
    if not isinstance(store_invoice, str):
        raise service.Unapplicable("event without invoiceId")
    if event.event_type == "InvoiceSettled":
        # The settled event carries no amount: the store invoice was created for our invoice's amount, which
        # is what `amount_cents=None` applies (see README: only Pockity should create invoices on the store).
        return await service.receive_event(
            session, Received(BTCPAY, store_invoice, None, None, invoice_id=_our_invoice(event.body)), ctx.actor
        )
    if event.event_type == "InvoiceReceivedPayment":
        if not event.body.get("afterExpiration"):
            return "noted"  # InvoiceSettled follows when the store invoice is fully paid
        # Paid after the store invoice expired: it will never settle, so the coins become credit at our rate.
        value = field(event.body, "payment", "value")
        rate = await crypto.current_rate(session, "BTC")
        if rate is None:
            raise service.Unapplicable("late BTC payment and no current BTC rate to value it; confirm it by hand")
        try:
            cents = _cents(Decimal(str(value)) * Decimal(rate.rate)) if value is not None else None
        except InvalidOperation:  # not a number: permanent, retrying would not help
            cents = None
        payment_id = field(event.body, "payment", "id")
        if not cents or not isinstance(payment_id, str):
            raise service.Unapplicable("late payment without a value or id")
        outcome = await service.receive_event(
            session,
            Received(
                BTCPAY, f"{store_invoice}:{payment_id}", cents, rate.currency, invoice_id=_our_invoice(event.body)
            ),
            ctx.actor,
        )
        return "applied_late" if outcome == "applied" else outcome
    return "ignored"
