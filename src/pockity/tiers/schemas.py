from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field, computed_field

from pockity.kit.schemas import InputModel, OutputModel

GIB = 1024**3
MIB = 1024**2
Period = Literal["monthly", "yearly"]


class TierOut(OutputModel):
    id: str
    name: str
    description: str
    storage_bytes: int
    max_objects: int
    max_object_size_bytes: int | None
    price_cents: int
    currency: str
    billing_period: str
    trial_days: int
    # Fair sharing; null: the server's defaults (RATE_LIMIT_*).
    requests_per_second: int | None
    request_burst: int | None
    max_concurrent_uploads: int | None
    is_public: bool
    is_default: bool
    is_archived: bool
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def storage_gb(self) -> float:
        return round(self.storage_bytes / GIB, 3)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_object_size_mb(self) -> float | None:
        return round(self.max_object_size_bytes / MIB, 3) if self.max_object_size_bytes else None


class TierAdminOut(TierOut):
    user_count: int


class TierList(OutputModel):
    items: list[TierOut]


class TierAdminList(OutputModel):
    items: list[TierAdminOut]


class TierCreateIn(InputModel):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)
    # GB here means GiB (1024³ bytes); up to three decimals, so 0.5 is 512 MiB.
    storage_gb: Decimal = Field(gt=0, le=1_000_000, decimal_places=3)
    max_objects: int = Field(gt=0, le=10**12)
    max_object_size_mb: Decimal | None = Field(None, gt=0, le=5 * 1024 * 1024, decimal_places=3)
    price_cents: int = Field(0, ge=0, le=10**10)
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    billing_period: Period = "monthly"
    trial_days: int = Field(0, ge=0, le=365)
    requests_per_second: int | None = Field(None, ge=1, le=100_000)
    request_burst: int | None = Field(None, ge=1, le=10_000_000)
    max_concurrent_uploads: int | None = Field(None, ge=1, le=100_000)
    is_public: bool = True
    is_default: bool = False


class TierUpdateIn(InputModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=2000)
    storage_gb: Decimal | None = Field(None, gt=0, le=1_000_000, decimal_places=3)
    max_objects: int | None = Field(None, gt=0, le=10**12)
    max_object_size_mb: Decimal | None = Field(None, gt=0, le=5 * 1024 * 1024, decimal_places=3)
    price_cents: int | None = Field(None, ge=0, le=10**10)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    billing_period: Period | None = None
    trial_days: int | None = Field(None, ge=0, le=365)
    # null sets a limit back to the server's default
    requests_per_second: int | None = Field(None, ge=1, le=100_000)
    request_burst: int | None = Field(None, ge=1, le=10_000_000)
    max_concurrent_uploads: int | None = Field(None, ge=1, le=100_000)
    is_public: bool | None = None
    is_default: bool | None = None
    is_archived: bool | None = None


def gb_to_bytes(value: Decimal) -> int:
    return int(value * GIB)


def mb_to_bytes(value: Decimal) -> int:
    return int(value * MIB)
