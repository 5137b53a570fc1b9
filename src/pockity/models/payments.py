"""Money coming in: provider events (the inbox), payments, the credit ledger and crypto rates."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base, UTCDateTime, created_at_column, id_column, updated_at_column


class PaymentStatus(enum.StrEnum):
    PENDING = "PENDING"  # checkout started or a crypto transaction submitted, nothing received yet
    CONFIRMED = "CONFIRMED"  # money received and applied (to an invoice and/or the credit balance)
    REJECTED = "REJECTED"  # an admin found no such transaction
    FAILED = "FAILED"  # the provider reported a failed attempt
    REFUNDED = "REFUNDED"  # returned to the payer in full


class PaymentEvent(Base):
    """One verified provider webhook, stored once by (provider, event id) and processed exactly once."""

    __tablename__ = "payment_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_payment_events_provider_event_id"),
        Index("ix_payment_events_received_at", "received_at"),
    )

    id: Mapped[str] = id_column()
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    event_id: Mapped[str] = mapped_column(String(255), nullable=False)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[datetime] = created_at_column()
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Payment(Base):
    """An attempt to pay an invoice, or money received for one. `provider_payment_id` names the money itself
    (a Stripe PaymentIntent, a Razorpay payment, a Coinbase charge, a BTCPay invoice) and is unique per
    provider, so two events about the same money apply it once; a crypto `tx_hash` is unique everywhere."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id", name="uq_payments_provider_payment_id"),
        UniqueConstraint("tx_hash", name="uq_payments_tx_hash"),
        Index("ix_payments_user_id_id", "user_id", "id"),
        Index("ix_payments_status_id", "status", "id"),
        Index("ix_payments_invoice_id", "invoice_id"),
        Index("ix_payments_checkout_ref", "provider", "checkout_ref"),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    invoice_id: Mapped[str | None] = mapped_column(ForeignKey("invoices.id", ondelete="SET NULL"))
    provider: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=PaymentStatus.PENDING.value)
    amount_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)  # expected, in `currency`
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    received_cents: Mapped[int | None] = mapped_column(BigInteger)
    credited_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    refunded_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    checkout_ref: Mapped[str | None] = mapped_column(String(255))
    provider_payment_id: Mapped[str | None] = mapped_column(String(255))
    asset: Mapped[str | None] = mapped_column(String(8))
    asset_amount: Mapped[str | None] = mapped_column(String(40))
    rate: Mapped[str | None] = mapped_column(String(40))
    tx_hash: Mapped[str | None] = mapped_column(String(128))
    from_address: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(26))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class CreditEntry(Base):
    """One line of a user's credit ledger (append-only). The balance is the sum of the lines; the
    idempotency key (e.g. `overpayment:{paymentId}`) makes every grant and debit happen at most once."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_credit_entries_idempotency_key"),
        Index("ix_credit_entries_user_id_id", "user_id", "id"),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    amount_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)  # + credit, - debit
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255), nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(26))
    created_at: Mapped[datetime] = created_at_column()


class CreditAccount(Base):
    """The running total of a user's ledger in one currency, changed in the same transaction as each entry.
    It exists so a debit is one conditional UPDATE (`balance >= amount`); the ledger stays the record."""

    __tablename__ = "credit_accounts"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    balance_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class CryptoRate(Base):
    """The price of one unit of a crypto asset in a fiat currency, set by an admin, valid until `expires_at`."""

    __tablename__ = "crypto_rates"

    asset: Mapped[str] = mapped_column(String(8), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    rate: Mapped[str] = mapped_column(String(40), nullable=False)  # a decimal string, e.g. "3120.55"
    set_by: Mapped[str | None] = mapped_column(String(26))
    set_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
