from __future__ import annotations

from datetime import date, datetime

from pydantic import Field

from pockity.kit.schemas import OutputModel


class UsageDayOut(OutputModel):
    day: date
    bytes_used: int = Field(description="Bytes stored at the day's last sample")
    object_count: int = Field(description="Objects stored at the day's last sample")
    byte_seconds: int = Field(description="Bytes stored x seconds, summed over the day")
    gb_hours: str = Field(description="byteSeconds / 1024³ / 3600, as a decimal string with six places")


class UsageHistoryOut(OutputModel):
    from_: date = Field(alias="from")
    to: date
    items: list[UsageDayOut]
    as_of: datetime | None = Field(description="The last sample these figures include (null: never sampled)")


class UsageTotalDayOut(UsageDayOut):
    users: int = Field(description="Users counted in this day's figures")


class AdminUsageHistoryOut(OutputModel):
    from_: date = Field(alias="from")
    to: date
    user_id: str | None = Field(description="The user; null for the totals over all users")
    items: list[UsageTotalDayOut]
    as_of: datetime | None
