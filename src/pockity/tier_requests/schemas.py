from __future__ import annotations

from datetime import datetime

from pydantic import Field

from pockity.kit.schemas import InputModel, OutputModel


class TierRequestIn(InputModel):
    tier_id: str = Field(min_length=1, max_length=26)
    reason: str = Field("", max_length=2000)


class ResolveIn(InputModel):
    approved: bool
    note: str | None = Field(None, max_length=2000)


class TierRequestOut(OutputModel):
    id: str
    user_id: str
    tier_id: str
    reason: str
    status: str
    note: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    subscription_id: str | None
    created_at: datetime


class TierRequestList(OutputModel):
    items: list[TierRequestOut]
    next_cursor: str | None = None


class ResolvedOut(TierRequestOut):
    effective: str | None = None
    invoice_id: str | None = None
