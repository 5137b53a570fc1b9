from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from pockity.billing.schemas import InvoiceOut
from pockity.kit.schemas import InputModel, OutputModel

Asset = Literal["ETH", "USDC", "BTC"]


class MethodOut(OutputModel):
    id: str
    available: bool
    kind: Literal["checkout", "manual", "webhook", "balance"]
    key_id: str | None = None  # Razorpay's public key id, for its checkout widget
    address: str | None = None  # crypto: where to send


class MethodsOut(OutputModel):
    methods: list[MethodOut]


class CheckoutIn(InputModel):
    provider: Literal["stripe", "razorpay"]


class CheckoutOut(OutputModel):
    provider: str
    payment_id: str
    invoice_id: str
    amount_cents: int
    currency: str
    url: str | None = None  # Stripe: where to send the user
    session_id: str | None = None
    order_id: str | None = None  # Razorpay: for its checkout widget
    key_id: str | None = None


class RazorpayVerifyIn(InputModel):
    razorpay_order_id: str = Field(min_length=1, max_length=100)
    razorpay_payment_id: str = Field(min_length=1, max_length=100)
    razorpay_signature: str = Field(min_length=1, max_length=256)


class CryptoSubmitIn(InputModel):
    asset: Asset
    tx_hash: str = Field(min_length=1, max_length=130)
    from_address: str | None = Field(None, max_length=128)


class QuoteOut(OutputModel):
    asset: str
    available: bool
    address: str | None
    amount: str | None
    rate: str | None
    expires_at: datetime | None
    reason: str | None


class InvoiceDetail(InvoiceOut):
    crypto: list[QuoteOut] = []  # what to send to pay it in each asset (open invoices only)


class PaymentOut(OutputModel):
    id: str
    user_id: str
    invoice_id: str | None
    provider: str
    status: str
    amount_cents: int
    currency: str
    received_cents: int | None
    credited_cents: int
    refunded_cents: int
    checkout_ref: str | None
    provider_payment_id: str | None
    asset: str | None
    asset_amount: str | None
    rate: str | None
    tx_hash: str | None
    from_address: str | None
    note: str | None
    resolved_at: datetime | None
    created_at: datetime


class PaymentList(OutputModel):
    items: list[PaymentOut]
    next_cursor: str | None = None


class PaymentActionIn(InputModel):
    action: Literal["confirm", "reject"]
    amount_received: str | None = Field(None, max_length=40, pattern=r"^\d{1,20}(\.\d{1,18})?$")
    note: str = Field("", max_length=2000)


class TopUpIn(InputModel):
    amount_cents: int = Field(ge=100, le=10_000_000)
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")


class AutoRenewIn(InputModel):
    auto_renew_from_credits: bool


class RatesIn(InputModel):
    rates: dict[Literal["ETH", "BTC"], Annotated[Decimal, Field(gt=0, max_digits=30, decimal_places=10)]] = Field(
        min_length=1
    )
    valid_for_minutes: int = Field(60, ge=1, le=7 * 24 * 60)


class RateOut(OutputModel):
    asset: str
    currency: str
    rate: str
    set_at: datetime
    expires_at: datetime


class RatesOut(OutputModel):
    items: list[RateOut]


class PaymentEventOut(OutputModel):
    id: str
    provider: str
    event_id: str
    event_type: str
    received_at: datetime
    processed_at: datetime | None
    outcome: str | None
    error: str | None
    attempts: int


class PaymentEventList(OutputModel):
    items: list[PaymentEventOut]
    next_cursor: str | None = None


class WebhookAck(OutputModel):
    received: bool
    duplicate: bool
    outcome: str | None
