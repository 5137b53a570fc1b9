from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base, UTCDateTime, created_at_column, id_column, updated_at_column


class RequestStatus(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class SubscriptionStatus(enum.StrEnum):
    TRIALING = "TRIALING"
    ACTIVE = "ACTIVE"
    PENDING_PAYMENT = "PENDING_PAYMENT"
    PAST_DUE = "PAST_DUE"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class InvoiceStatus(enum.StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    VOID = "VOID"


LIVE_INVOICE = "period_start IS NOT NULL AND status IN ('PENDING', 'FAILED', 'PAID')"


class TierRequest(Base):
    """A user's request for a tier; at most one PENDING per user (a partial unique index)."""

    __tablename__ = "tier_requests"
    __table_args__ = (
        Index("ix_tier_requests_user_id_created_at", "user_id", "created_at"),
        Index(
            "uq_tier_requests_one_pending",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'PENDING'"),
            sqlite_where=text("status = 'PENDING'"),
        ),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    tier_id: Mapped[str] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=RequestStatus.PENDING.value)
    note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(26))
    subscription_id: Mapped[str | None] = mapped_column(String(26))
    created_at: Mapped[datetime] = created_at_column()


class Subscription(Base):
    """A user on a tier for a period. The current one (at most one per user) sets the quota when it is
    ACTIVE or TRIALING; a PENDING_PAYMENT one waits beside it for its invoice to be paid."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_user_id", "user_id"),
        Index(
            "uq_subscriptions_one_current",
            "user_id",
            unique=True,
            postgresql_where=text("is_current"),
            sqlite_where=text("is_current = 1"),
        ),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    tier_id: Mapped[str] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    is_current: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    provider: Mapped[str | None] = mapped_column(String(20))
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    scheduled_tier_id: Mapped[str | None] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    auto_renew_from_credits: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # PAST_DUE (or a trial ended unpaid): uploads are refused until paid; at this time it expires.
    grace_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Invoice(Base):
    """Money owed; integer cents, never floats."""

    __tablename__ = "invoices"
    __table_args__ = (
        Index("ix_invoices_user_id_created_at", "user_id", "created_at"),
        Index("ix_invoices_status", "status"),
        # One live invoice per subscription period: two renewal runs cannot bill the same period twice
        # (a voided or refunded one does not count, so a refunded period can be invoiced again).
        Index(
            "uq_invoices_subscription_period",
            "subscription_id",
            "period_start",
            unique=True,
            postgresql_where=text(LIVE_INVOICE),
            sqlite_where=text(LIVE_INVOICE),
        ),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id", ondelete="SET NULL"))
    tier_id: Mapped[str | None] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    amount_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=InvoiceStatus.PENDING.value)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="subscription")  # | renewal | topup
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the period it pays, when known
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refunded_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
