from __future__ import annotations

from datetime import datetime

from pydantic import Field

from pockity.kit.schemas import InputModel, OutputModel


class CreditEntryOut(OutputModel):
    id: str
    amount_cents: int
    currency: str
    reason: str
    reference: str | None
    note: str | None
    created_at: datetime


class CreditsOut(OutputModel):
    balance_cents: int
    currency: str
    balances: dict[str, int]
    entries: list[CreditEntryOut]
    next_cursor: str | None = None


class CreditGrantIn(InputModel):
    amount_cents: int = Field(gt=0, le=100_000_000)
    reason: str = Field(min_length=1, max_length=500)
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    idempotency_key: str | None = Field(None, min_length=1, max_length=100)
