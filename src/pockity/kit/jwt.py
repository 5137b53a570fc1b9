"""HS256 access tokens: `sub`, `role`, `iat`, `exp`, `iss`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from pockity.kit.time import utcnow

ISSUER = "pockity"
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


def issue_token(sub: str, role: str, secret: str, expires_minutes: int) -> tuple[str, datetime]:
    now = utcnow()
    exp = now + timedelta(minutes=expires_minutes)
    payload = {"sub": sub, "role": role, "iat": now, "exp": exp, "iss": ISSUER}
    return jwt.encode(payload, secret, algorithm=ALGORITHM), exp.replace(microsecond=0)


def decode_token(token: str, secret: str) -> TokenClaims:
    """Verify signature, algorithm (HS256 only, so `alg=none` is refused), issuer and expiry."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired("token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("invalid token") from exc
    sub, role = claims.get("sub"), claims.get("role")
    if not isinstance(sub, str) or not sub or not isinstance(role, str):
        raise TokenError("invalid token")
    return TokenClaims(sub=sub, role=role, expires_at=datetime.fromtimestamp(claims["exp"], UTC))
