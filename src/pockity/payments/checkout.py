"""Paying an invoice through a provider: which ways to pay this server offers, and starting a card (Stripe)
or Razorpay checkout.

Starting a checkout is three steps, like an upload: a PENDING payment is committed first (so the provider's
events can always be matched to it), the provider is called outside any transaction, then its session/order
id is recorded — or, if the provider refused, the attempt is closed as FAILED. So `start` takes the Database
and opens its own units of work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pockity.auth.schemas import Principal
from pockity.billing import invoices
from pockity.config import Settings
from pockity.db import Database, unit_of_work
from pockity.payments import crypto, service
from pockity.payments.providers import razorpay_provider, stripe_provider


@dataclass(frozen=True)
class Method:
    id: str
    kind: Literal["checkout", "manual", "webhook", "balance"]
    available: bool
    key_id: str | None = None  # Razorpay's public key id, for its checkout widget
    address: str | None = None  # crypto: where to send


@dataclass(frozen=True)
class Methods:
    methods: list[Method]


@dataclass(frozen=True)
class Started:
    """A checkout the user can now complete: Stripe's page (`url`) or Razorpay's widget (`order_id`, `key_id`)."""

    provider: str
    payment_id: str
    invoice_id: str
    amount_cents: int
    currency: str
    url: str | None = None
    session_id: str | None = None
    order_id: str | None = None
    key_id: str | None = None


def methods(settings: Settings) -> Methods:
    """Which ways to pay this server offers; a provider without its keys is listed as unavailable."""
    razorpay = razorpay_provider.configured(settings)
    offered = [
        Method("stripe", "checkout", stripe_provider.configured(settings)),
        Method("razorpay", "checkout", razorpay, key_id=settings.razorpay_key_id if razorpay else None),
    ]
    for asset in crypto.ASSETS:
        address = crypto.address_for(settings, asset)
        offered.append(Method(f"crypto:{asset}", "manual", address is not None, address=address))
    offered += [
        Method("coinbase", "webhook", bool(settings.coinbase_commerce_webhook_secret)),
        Method("btcpay", "webhook", bool(settings.btcpay_webhook_secret)),
        Method("credits", "balance", True),
    ]
    return Methods(offered)


async def start(db: Database, settings: Settings, principal: Principal, invoice_id: str, provider: str) -> Started:
    """Start paying one of the user's open invoices with `provider` ("stripe" or "razorpay")."""
    configured = stripe_provider.configured if provider == "stripe" else razorpay_provider.configured
    if not configured(settings):
        raise service.ProviderNotConfigured(f"{provider} is not configured on this server.")
    async with unit_of_work(db) as session:
        invoice = await invoices.open_own(session, principal.user_id, invoice_id)
        payment = await service.start_payment(session, invoice, provider)
        session.expunge(invoice)
    started = Started(provider, payment.id, invoice.id, invoice.amount_cents, invoice.currency)
    try:
        if provider == "stripe":
            made = await stripe_provider.create_checkout(settings, invoice, payment, principal.email)
            ref, started = made.id, replace(started, url=made.url, session_id=made.id)
        else:
            ref = await razorpay_provider.create_order(settings, invoice)
            started = replace(started, order_id=ref, key_id=settings.razorpay_key_id)
    except service.ProviderFailed:
        async with unit_of_work(db) as session:
            await service.checkout_refused(session, payment.id)
        raise
    async with unit_of_work(db) as session:
        await service.checkout_created(session, payment.id, ref)
    return started
