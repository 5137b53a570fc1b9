"""Crypto payments: ETH, USDC (ERC-20) and BTC to the operator's own addresses, confirmed by an admin.

Quotes: USDC is 1:1 with USD; ETH and BTC use the admin-set rate until it expires. A quote is only offered for
USD invoices. The user submits the transaction hash (unique across all invoices); the admin checks the chain,
then confirms with the amount that arrived (converted at the rate quoted when the hash was submitted) or
rejects. Over- and under-payments become credit through payments.service.apply_received.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import invoices
from pockity.config import Settings
from pockity.errors import Conflict, ValidationFailed
from pockity.kit.pagination import Page
from pockity.kit.time import utcnow
from pockity.models import CryptoRate, Invoice, Payment, PaymentStatus
from pockity.payments import repository as repo
from pockity.payments import service
from pockity.payments.schemas import InvoiceDetail, QuoteOut

_EVM_TX = re.compile(r"^0x[0-9a-f]{64}$")
_BTC_TX = re.compile(r"^[0-9a-f]{64}$")
_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BTC_ADDRESS = re.compile(r"^(bc1|tb1|bcrt1)[02-9ac-hj-np-z]{8,87}$|^[13mn2][1-9A-HJ-NP-Za-km-z]{25,34}$")


@dataclass(frozen=True)
class Asset:
    symbol: str
    decimals: int  # how precisely amounts are quoted
    tx: re.Pattern[str]
    address: re.Pattern[str]
    fixed_usd_rate: Decimal | None = None


ASSETS = {
    "ETH": Asset("ETH", 8, _EVM_TX, _EVM_ADDRESS),
    "USDC": Asset("USDC", 2, _EVM_TX, _EVM_ADDRESS, fixed_usd_rate=Decimal(1)),
    "BTC": Asset("BTC", 8, _BTC_TX, _BTC_ADDRESS),
}
RATE_CURRENCY = "USD"


class TxHashUsed(Conflict):
    code, message = "tx_hash_used", "This transaction hash has already been submitted for a payment."


class QuoteUnavailable(Conflict):
    code, message = "quote_unavailable", "No current quote for this asset; try again later or use another method."


class AssetUnavailable(ValidationFailed):
    code, message = "asset_unavailable", "This asset is not accepted here."


def address_for(settings: Settings, asset: str) -> str | None:
    """The operator's address for `asset`, or None when that asset is not configured."""
    return {
        "ETH": settings.crypto_eth_address,
        "USDC": settings.crypto_usdc_address,
        "BTC": settings.crypto_btc_address,
    }[asset] or None


@dataclass(frozen=True)
class Quote:
    asset: str
    available: bool
    address: str | None
    amount: str | None
    rate: str | None
    expires_at: datetime | None
    reason: str | None = None


def _quantize(value: Decimal, decimals: int, rounding: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=rounding)


def quote(settings: Settings, invoice: Invoice, asset: str, rates: dict[str, CryptoRate], now: datetime) -> Quote:
    """What to send, and where, to pay `invoice` in `asset` (rounded up: never short by rounding)."""
    spec = ASSETS[asset]
    address = address_for(settings, asset)
    if address is None:
        return Quote(asset, False, None, None, None, None, "not_configured")
    if invoice.currency != RATE_CURRENCY:
        return Quote(asset, False, address, None, None, None, "currency_not_supported")
    if spec.fixed_usd_rate is not None:
        rate, expires = spec.fixed_usd_rate, None
    else:
        row = rates.get(asset)
        if row is None or row.expires_at <= now:
            return Quote(asset, False, address, None, None, None, "no_current_rate")
        rate, expires = Decimal(row.rate), row.expires_at
    amount = _quantize(Decimal(invoice.amount_cents) / 100 / rate, spec.decimals, ROUND_CEILING)
    return Quote(asset, True, address, str(amount), str(rate), expires)


async def current_rates(session: AsyncSession) -> Page[CryptoRate]:
    """Admin: every rate set, expired or not."""
    return Page(await repo.rates(session))


async def current_rate(session: AsyncSession, asset: str) -> CryptoRate | None:
    """The asset's rate while it is valid; an expired rate is no rate (as for quotes)."""
    rate = {r.asset: r for r in await repo.rates(session)}.get(asset)
    return rate if rate is not None and rate.expires_at > utcnow() else None


async def invoice_detail(session: AsyncSession, settings: Settings, user_id: str, invoice_id: str) -> InvoiceDetail:
    """One of the user's invoices and, while it is open, what to send to pay it in each asset."""
    invoice = await invoices.own(session, user_id, invoice_id)
    detail = InvoiceDetail.model_validate(invoice)
    if invoice.status in invoices.OPEN:
        rates = {r.asset: r for r in await repo.rates(session)}
        now = utcnow()
        detail.crypto = [QuoteOut.model_validate(quote(settings, invoice, asset, rates, now)) for asset in ASSETS]
    return detail


def normalise_tx_hash(asset: str, tx_hash: str) -> str:
    """A transaction hash in its one stored form (lower case; 0x-prefixed for EVM assets), or 400."""
    value = tx_hash.strip().lower()
    if asset != "BTC" and not value.startswith("0x"):
        value = "0x" + value
    if not ASSETS[asset].tx.match(value):
        raise ValidationFailed(
            "The transaction hash is not valid for this asset.",
            code="invalid_tx_hash",
            details={"asset": asset},
        )
    return value


async def submit(
    session: AsyncSession,
    settings: Settings,
    user_id: str,
    invoice_id: str,
    asset: str,
    tx_hash: str,
    from_address: str | None,
    actor: Actor,
) -> Payment:
    """Record a crypto transaction a user says pays their invoice; it waits for an admin to confirm it."""
    if asset not in ASSETS:
        raise AssetUnavailable(details={"asset": asset, "accepted": list(ASSETS)})
    tx = normalise_tx_hash(asset, tx_hash)
    if from_address is not None and not ASSETS[asset].address.match(from_address.strip()):
        raise ValidationFailed("The sending address is not valid for this asset.", code="invalid_address")
    invoice = await invoices.open_own(session, user_id, invoice_id)
    q = quote(settings, invoice, asset, {r.asset: r for r in await repo.rates(session)}, utcnow())
    if q.address is None:
        raise service.ProviderNotConfigured(f"{asset} payments are not configured on this server.")
    if not q.available:
        raise QuoteUnavailable(details={"asset": asset, "reason": q.reason})
    if await repo.tx_hash_exists(session, tx):
        raise TxHashUsed(details={"txHash": tx})
    payment = service.payment_for(
        invoice,
        "crypto",
        asset=asset,
        asset_amount=q.amount,
        rate=q.rate,
        tx_hash=tx,
        from_address=from_address.strip() if from_address else None,
    )
    try:
        async with session.begin_nested():
            repo.add(session, payment)
    except IntegrityError:  # the same hash submitted at the same moment
        raise TxHashUsed(details={"txHash": tx}) from None
    record(
        session,
        actor,
        "payment.crypto_submitted",
        target_type="payment",
        target_id=payment.id,
        details={"invoiceId": invoice.id, "asset": asset, "txHash": tx, "amount": q.amount},
    )
    return payment


def to_cents(payment: Payment, amount_received: str | None) -> int:
    """The asset amount an admin saw arrive, in the invoice's cents at the rate quoted on submission."""
    if amount_received is None:
        return payment.amount_cents
    try:
        amount = Decimal(amount_received)
    except InvalidOperation:
        raise ValidationFailed("amountReceived must be a decimal number.", code="invalid_amount") from None
    if not amount.is_finite() or amount < 0:
        raise ValidationFailed("amountReceived must be a non-negative number.", code="invalid_amount")
    if payment.asset_amount is not None and amount == Decimal(payment.asset_amount):
        return payment.amount_cents  # exactly what was quoted pays exactly the invoice
    rate = Decimal(payment.rate or "1")
    return int(_quantize(amount * rate * 100, 0, ROUND_FLOOR))


async def resolve(
    session: AsyncSession,
    payment_id: str,
    action: str,
    amount_received: str | None,
    note: str | None,
    actor: Actor,
) -> Payment:
    """Admin: confirm a submitted transaction with what arrived (pays the invoice; the rest is credit), or reject."""
    payment = await repo.get_payment(session, payment_id, lock=True)
    if payment is None:
        raise service.PaymentNotFound()
    if payment.status != PaymentStatus.PENDING.value:
        raise service.PaymentNotPending(details={"status": payment.status})
    if action == "reject":
        if not await repo.transition_payment(
            session,
            payment.id,
            [PaymentStatus.PENDING.value],
            status=PaymentStatus.REJECTED.value,
            note=note,
            resolved_by=actor.id,
            resolved_at=utcnow(),
        ):
            raise service.PaymentNotPending()
        record(session, actor, "payment.rejected", target_type="payment", target_id=payment.id, details={"note": note})
    else:
        cents = to_cents(payment, amount_received)
        if cents == 0:
            raise ValidationFailed("A confirmed payment must have received something.", code="invalid_amount")
        if not await service.apply_received(session, payment, cents, actor, note=note):
            raise service.PaymentNotPending()
    refreshed = await repo.get_payment(session, payment.id)
    assert refreshed is not None
    return refreshed


async def set_rates(
    session: AsyncSession, rates: Iterable[tuple[str, Decimal]], valid_for_minutes: int, actor: Actor
) -> Page[CryptoRate]:
    """Admin: set asset prices in USD, valid for a while; quotes for those assets stop when they expire."""
    values, valid_for, now = dict(rates), timedelta(minutes=valid_for_minutes), utcnow()
    for asset, rate in values.items():
        if asset not in ASSETS or ASSETS[asset].fixed_usd_rate is not None:
            raise ValidationFailed(
                f"No rate can be set for {asset}.", code="invalid_asset", details={"settable": ["ETH", "BTC"]}
            )
        if not rate.is_finite() or rate <= 0:
            raise ValidationFailed("A rate must be a positive number.", code="invalid_rate", details={"asset": asset})
        await repo.upsert_rate(session, asset, RATE_CURRENCY, str(rate), actor.id, now, now + valid_for)
    record(
        session,
        actor,
        "crypto.rates_set",
        target_type="crypto_rates",
        target_id=None,
        details={"rates": {k: str(v) for k, v in values.items()}, "validForSeconds": int(valid_for.total_seconds())},
    )
    return await current_rates(session)
