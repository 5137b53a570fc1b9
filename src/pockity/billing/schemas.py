from __future__ import annotations

from datetime import datetime

from pockity.kit.schemas import OutputModel
from pockity.tiers.schemas import TierOut


class SubscriptionOut(OutputModel):
    id: str
    user_id: str
    tier_id: str
    status: str
    is_current: bool
    provider: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    scheduled_tier_id: str | None
    auto_renew_from_credits: bool
    grace_ends_at: datetime | None
    ended_at: datetime | None
    created_at: datetime


class SubscriptionView(OutputModel):
    current: SubscriptionOut | None
    tier: TierOut | None
    pending: SubscriptionOut | None


class InvoiceOut(OutputModel):
    id: str
    user_id: str
    subscription_id: str | None
    tier_id: str | None
    amount_cents: int
    currency: str
    status: str
    kind: str
    period_start: datetime | None
    period_end: datetime | None
    refunded_cents: int
    description: str
    due_at: datetime
    paid_at: datetime | None
    provider: str | None
    provider_ref: str | None
    created_at: datetime


class InvoiceList(OutputModel):
    items: list[InvoiceOut]
    next_cursor: str | None = None


class SubscriptionList(OutputModel):
    items: list[SubscriptionOut]
    next_cursor: str | None = None
