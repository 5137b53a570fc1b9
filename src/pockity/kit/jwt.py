"""HS256 access tokens: `sub`, `role`, `iat`, `exp`, `iss`, `sid` (the sign-in session) and `pwd` (a stamp of
the password it was issued under). A second-step token (`iss` = pockity-2fa, a login that still needs its
one-time code) is signed the same way and refused wherever an access token is expected, and the reverse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from pockity.kit.time import utcnow

ISSUER = "pockity"
CHALLENGE_ISSUER = "pockity-2fa"
ALGORITHM = "HS256"


class TokenError(Exception):
    """The token cannot be used."""


class TokenExpired(TokenError):
    pass


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    role: str
    expires_at: datetime
    password_stamp: str  # "" for a token without one (never issued by Pockity since the stamp exists)
    session_id: str = ""  # "" for a token without one: no session row matches it


def issue_token(
    sub: str,
    role: str,
    secret: str,
    expires_minutes: int,
    *,
    password_stamp: str,
    session_id: str = "",
    issuer: str = ISSUER,
) -> tuple[str, datetime]:
    now = utcnow()
    exp = now + timedelta(minutes=expires_minutes)
    payload = {"sub": sub, "role": role, "iat": now, "exp": exp, "iss": issuer, "pwd": password_stamp}
    if session_id:
        payload["sid"] = session_id
    return jwt.encode(payload, secret, algorithm=ALGORITHM), exp.replace(microsecond=0)


# NumericDate bounds: what datetime (and every platform's time_t) can hold, years 1970 to 9999.
MAX_TIMESTAMP = 253402300799


def _timestamp(claims: dict[str, object], name: str) -> int | None:
    """A time claim as an integer in [0, MAX_TIMESTAMP], or None when absent; anything else is an invalid token.

    Pockity issues whole seconds; floats, strings, booleans, NaN and values past year 9999 are refused here,
    before any arithmetic or datetime conversion could overflow.
    """
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP:
        raise TokenError(f"invalid {name}")
    return value


def decode_token(token: str, secret: str, *, issuer: str = ISSUER) -> TokenClaims:
    """Verify signature, algorithm (HS256 only, so `alg=none` is refused), issuer and expiry."""
    try:
        # The time claims are checked below, by one strict rule: PyJWT's own checks call int() on them,
        # which raises OverflowError for infinity and accepts strings and booleans.
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            options={
                "require": ["sub", "exp", "iat", "iss"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise TokenError("invalid token") from exc
    exp, iat, nbf = (_timestamp(claims, name) for name in ("exp", "iat", "nbf"))
    now = int(utcnow().timestamp())
    if exp is None or iat is None:
        raise TokenError("invalid token")
    if iat > now or (nbf is not None and nbf > now):
        raise TokenError("token not valid yet")
    if exp <= now:
        raise TokenExpired("token expired")
    sub, role, stamp, sid = claims.get("sub"), claims.get("role"), claims.get("pwd", ""), claims.get("sid", "")
    if not isinstance(sub, str) or not sub or not isinstance(role, str) or not isinstance(stamp, str):
        raise TokenError("invalid token")
    if not isinstance(sid, str):
        raise TokenError("invalid token")
    return TokenClaims(
        sub=sub, role=role, expires_at=datetime.fromtimestamp(exp, UTC), password_stamp=stamp, session_id=sid
    )
