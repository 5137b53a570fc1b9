from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from pockity.kit.schemas import InputModel, OutputModel
from pockity.models.user import Role
from pockity.users.schemas import PASSWORD_MAX, EmailInput, UserOut

SCOPES = ("delete", "list", "read", "write")


@dataclass(frozen=True)
class TierRate:
    """A tier's own request-rate limits, as stored (None: the server's default applies)."""

    per_second: int | None = None
    burst: int | None = None


@dataclass(frozen=True)
class KeyGrant:
    """What an API key allows, when a request authenticated with one."""

    id: str
    access_key_id: str
    name: str
    scopes: frozenset[str]
    prefix: str | None
    tier_id: str | None
    rate: TierRate | None = None  # the key's tier's, when the key is linked to one


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, and the API key used if any (None for a JWT)."""

    user_id: str
    email: str
    name: str
    role: str
    is_active: bool
    created_at: datetime
    key: KeyGrant | None = None
    rate: TierRate = TierRate()  # the user's tier's

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value and self.key is None


class LoginIn(EmailInput):
    # Not EmailStr: a malformed email must get the same 401 as a wrong password, not a 422 that
    # tells the caller something about the account space.
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class PasswordChangeIn(InputModel):
    current_password: str = Field(min_length=1, max_length=PASSWORD_MAX)
    new_password: str = Field(max_length=PASSWORD_MAX)  # the length rule is the service's (one sentence)


class LoginOut(OutputModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_at: datetime
    user: UserOut


class MeKeyOut(OutputModel):
    id: str
    access_key_id: str
    name: str
    scopes: list[str]
    prefix: str | None
    tier_id: str | None


class MeOut(UserOut):
    auth_method: Literal["jwt", "api_key"]
    api_key: MeKeyOut | None = None
