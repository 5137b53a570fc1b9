from __future__ import annotations

import unicodedata
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from pydantic import EmailStr, Field, field_validator

from pockity.kit.schemas import InputModel, OutputModel
from pockity.models.user import Role

PASSWORD_MIN = 8
PASSWORD_MAX = 1024
NAME_MAX = 200


def normalise_email(value: str) -> str:
    """The one canonical spelling of an address: what register, login, create-admin and admin search use.

    NFKC first, so compatibility look-alikes (full-width letters, ligatures, roman numerals) are the
    address they look like; then email-validator's normalisation of valid addresses (IDNA domains as Unicode);
    then lower case, the local part included (Pockity's documented rule: addresses differing only by case are
    one account). Anything invalid is only normalised and lower-cased, so a malformed login meets the same 401.
    The result is a fixed point: normalising it again changes nothing (the migration relies on that).
    """
    value = unicodedata.normalize("NFKC", value).strip()
    try:
        value = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        pass
    return unicodedata.normalize("NFKC", value.lower())


def normalise_search(value: str) -> str:
    """A search term compared with stored (normalised) addresses."""
    return unicodedata.normalize("NFKC", value).lower()


class EmailInput(InputModel):
    @field_validator("email", mode="before", check_fields=False)
    @classmethod
    def _normalise(cls, v: object) -> object:
        return normalise_email(v) if isinstance(v, str) else v


class RegisterIn(EmailInput):
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    name: str = Field(min_length=1, max_length=200)

    @field_validator("email", mode="after")
    @classmethod
    def _lower(cls, v: str) -> str:
        # email-validator may re-normalise the domain (IDNA); keep one canonical spelling.
        return normalise_email(v)


class UserOut(OutputModel):
    id: str
    email: str
    name: str
    role: Role
    is_active: bool
    created_at: datetime
    email_verified: bool = True
    two_factor_enabled: bool = False


class AdminUserOut(UserOut):
    tier_id: str | None


class UserUpdateIn(InputModel):
    """Admin changes to an account."""

    disabled: bool | None = None  # disabled users' tokens and keys stop working at once; data is kept
    is_active: bool | None = None
    role: Role | None = None
    name: str | None = Field(None, min_length=1, max_length=200)


class UserPage(OutputModel):
    items: list[AdminUserOut]
    next_cursor: str | None
