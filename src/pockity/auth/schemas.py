from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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
    email_verified: bool = True
    two_factor: bool = False  # the user signs in with a one-time code as well
    session_id: str | None = None  # the sign-in session of a login token (None for an API key)

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


class TwoFactorChallengeOut(OutputModel):
    """The password was right; the account also needs its one-time code (POST /api/auth/login/2fa)."""

    two_factor_required: Literal[True] = True
    challenge: str
    expires_at: datetime


class SessionOut(OutputModel):
    id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    device: str  # a short description of the user agent ("Firefox on Linux", "curl")
    current: bool

    @classmethod
    def of(cls, row: Any, *, current: bool) -> SessionOut:
        return cls(
            id=row.id,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            expires_at=row.expires_at,
            ip=row.ip,
            user_agent=row.user_agent,
            device=describe_device(row.user_agent),
            current=current,
        )


class SignedOutOut(OutputModel):
    sessions: int  # how many sessions ended


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_device(user_agent: str | None) -> str:
    """'Firefox on Linux', 'curl', 'python-httpx' ... or 'Unknown device': a hint for a person, never a check."""
    if not user_agent:
        return "Unknown device"
    browser = next((name for token, name in _BROWSERS if token in user_agent), None)
    system = next((name for token, name in _SYSTEMS if token in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or system or ""
    return user_agent.split("/", 1)[0].strip()[:40] or "Unknown device"
