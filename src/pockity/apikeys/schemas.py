from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from pockity.auth.schemas import SCOPES
from pockity.kit.object_names import InvalidName, normalise_folder
from pockity.kit.schemas import InputModel, OutputModel
from pockity.kit.time import as_utc, utcnow

Scope = Literal["read", "list", "write", "delete"]


class ApiKeyCreateIn(InputModel):
    name: str = Field(min_length=1, max_length=100)
    tier_id: str | None = Field(None, min_length=1, max_length=26)
    scopes: list[Scope] = Field(default_factory=lambda: list(SCOPES), min_length=1, max_length=4)  # type: ignore[arg-type]
    prefix: str | None = Field(None, max_length=900)
    expires_at: datetime | None = None

    @field_validator("prefix")
    @classmethod
    def _folder(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        try:
            return normalise_folder(v)
        except InvalidName as exc:
            raise ValueError(f"prefix {exc}") from None

    @field_validator("expires_at")
    @classmethod
    def _future(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        if v.tzinfo is None:
            raise ValueError("expiresAt needs a timezone (e.g. 2027-01-01T00:00:00Z)")
        if as_utc(v) <= utcnow():
            raise ValueError("expiresAt must be in the future")
        return as_utc(v)


class ApiKeyOut(OutputModel):
    id: str
    name: str
    access_key_id: str
    scopes: list[str]
    prefix: str | None
    tier_id: str | None
    is_active: bool
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    last_used_ip: str | None
    request_count: int

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return [s for s in v.split(",") if s] if isinstance(v, str) else v


class ApiKeyCreatedOut(ApiKeyOut):
    secret_key: str = Field(description="Shown only in this response; store it now.")


class ApiKeyList(OutputModel):
    items: list[ApiKeyOut]
