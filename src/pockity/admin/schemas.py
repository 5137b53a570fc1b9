from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from pockity.apikeys.schemas import ApiKeyOut
from pockity.billing.schemas import InvoiceOut, SubscriptionOut
from pockity.kit.schemas import InputModel, OutputModel
from pockity.tiers.schemas import TierOut
from pockity.users.schemas import AdminUserOut


class AuditEventOut(OutputModel):
    id: str
    actor_type: str
    actor_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    created_at: datetime


class AuditPage(OutputModel):
    items: list[AuditEventOut]
    next_cursor: str | None


class AssignTierIn(InputModel):
    tier_id: str = Field(min_length=1, max_length=26)


class InvoiceActionIn(InputModel):
    status: Literal["PAID", "VOID"]
    note: str | None = Field(None, max_length=2000)


class UsageSummaryOut(OutputModel):
    bytes_used: int
    object_count: int
    bytes_reserved: int
    storage_limit_bytes: int
    max_objects: int


class UserDetailOut(OutputModel):
    user: AdminUserOut
    tier: TierOut | None
    subscription: SubscriptionOut | None
    pending_subscription: SubscriptionOut | None
    usage: UsageSummaryOut
    api_keys: list[ApiKeyOut]
    invoices: list[InvoiceOut]
    credits: dict[str, int]  # balance in cents per currency (the ledger's sum)


class UserUsageOut(OutputModel):
    user_id: str
    email: str
    tier: str | None
    bytes_used: int
    object_count: int
    storage_limit_bytes: int
    max_objects: int
    percent_used: float | None
    over_quota: bool


class UsageOverviewOut(OutputModel):
    bytes_used: int
    object_count: int
    bytes_reserved: int
    users_with_usage: int
    top: list[UserUsageOut]
    near_quota: list[UserUsageOut]


class ReconcileIn(InputModel):
    user_id: str | None = Field(None, max_length=26)
    dry_run: bool = False


class ReconciliationOut(OutputModel):
    id: str
    scope_user_id: str | None
    dry_run: bool
    status: str
    trigger: str
    objects_seen: int
    adopted: int
    removed: int
    corrected: int
    drift: dict[str, Any]
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class ReconciliationPage(OutputModel):
    items: list[ReconciliationOut]
    next_cursor: str | None
