"""Login with throttling, and turning a bearer token into a principal."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio

from pockity.audit.service import Actor, record
from pockity.auth import repository
from pockity.auth.schemas import Principal, TierRate
from pockity.db import Database
from pockity.errors import Forbidden, TooManyRequests, Unauthorized
from pockity.kit import jwt
from pockity.kit.passwords import hash_password, verify_password
from pockity.kit.time import utcnow
from pockity.models import User
from pockity.users import repository as users_repository
from pockity.users.schemas import normalise_email


@functools.lru_cache(maxsize=4)
def _dummy_hash(rounds: int) -> str:
    """Checked when the email is unknown, at the real cost, so both answers take the same time."""
    return hash_password("pockity-timing-equaliser", rounds=rounds)


class InvalidCredentials(Unauthorized):
    code, message = "invalid_credentials", "Invalid email or password."


class InvalidToken(Unauthorized):
    code, message = "invalid_token", "The access token is invalid."


class TokenExpired(Unauthorized):
    code, message = "token_expired", "The access token has expired."


class AccountDisabled(Unauthorized):
    code, message = "account_disabled", "This account is disabled."


@dataclass(frozen=True)
class LoginPolicy:
    max_failures_per_email: int
    max_failures_per_client: int
    window_seconds: int
    lockout_seconds: int
    jwt_secret: str
    jwt_expires_minutes: int
    bcrypt_rounds: int


@dataclass(frozen=True)
class LoginResult:
    user: User
    token: str
    expires_at: datetime


def _check_password(password: str, password_hash: str | None, rounds: int) -> bool:
    if password_hash is None:
        verify_password(password, _dummy_hash(rounds))
        return False
    return verify_password(password, password_hash)


def _throttle_key(kind: str, value: str) -> str:
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:40]}"


async def login(db: Database, policy: LoginPolicy, *, email: str, password: str, actor: Actor) -> LoginResult:
    """Check the password (bcrypt, in a thread) unless this email or client is being throttled."""
    email = normalise_email(email)
    keys = {
        "email": (_throttle_key("email", email), policy.max_failures_per_email),
        "client": (_throttle_key("client", actor.ip or "unknown"), policy.max_failures_per_client),
    }
    now = utcnow()
    until = await repository.blocked_until(db.reader, [k for k, _ in keys.values()])
    if until is not None and until > now:
        raise TooManyRequests(
            "Too many failed logins; try again later.",
            retry_after=int((until - now).total_seconds()) + 1,
            code="login_throttled",
        )
    async with db.sessions() as session:
        user = await users_repository.get_by_email(session, email)
    ok = await anyio.to_thread.run_sync(
        _check_password, password, user.password_hash if user else None, policy.bcrypt_rounds
    )
    if user is None or not ok or not user.is_active:
        await _count_failure(db, policy, keys, now, actor)
        raise InvalidCredentials()
    async with db.sessions() as session, session.begin():
        await repository.clear(session, keys["email"][0])
    token, expires_at = issue_session_token(user, policy)
    return LoginResult(user=user, token=token, expires_at=expires_at)


def password_stamp(password_hash: str, secret: str) -> str:
    """What a token carries of the password it was issued under: an HMAC of the hash (nothing of the hash
    itself). A new password changes it, so every token issued before stops working at once, in every process
    (the principal's lookup reads the hash in the same row, so this costs no round trip)."""
    mac = hmac.new(secret.encode(), b"pockity-password-stamp:" + password_hash.encode(), hashlib.sha256)
    return mac.hexdigest()[:22]


def issue_session_token(user: User, policy: LoginPolicy) -> tuple[str, datetime]:
    """A login token for `user` as it is now (role, password)."""
    stamp = password_stamp(user.password_hash, policy.jwt_secret)
    return jwt.issue_token(user.id, user.role, policy.jwt_secret, policy.jwt_expires_minutes, password_stamp=stamp)


async def _count_failure(
    db: Database, policy: LoginPolicy, keys: dict[str, tuple[str, int]], now: datetime, actor: Actor
) -> None:
    # Its own transaction: the request fails with 401, yet the failure must stay counted.
    window_start = now - timedelta(seconds=policy.window_seconds)
    async with db.sessions() as session, session.begin():
        for kind, (key, limit) in keys.items():
            failures = await repository.count_failure(session, key, now, window_start)
            if failures < limit:
                continue
            # Each failure past the limit doubles the lockout, capped at the window.
            seconds = min(policy.lockout_seconds * 2 ** (failures - limit), policy.window_seconds)
            await repository.block(session, key, now + timedelta(seconds=seconds))
            if failures == limit:
                record(
                    session,
                    actor,
                    "auth.login_throttled",
                    target_type=kind,
                    target_id=key,
                    details={"failures": failures, "lockoutSeconds": seconds},
                )


async def principal_from_token(db: Database, token: str, secret: str) -> Principal:
    """Verify a JWT and load its user; deleted or disabled users' tokens stop working at once."""
    try:
        claims = jwt.decode_token(token, secret)
    except jwt.TokenExpired:
        raise TokenExpired() from None
    except jwt.TokenError:
        raise InvalidToken() from None
    row = await repository.user_row(db.hot, claims.sub)
    if row is None or not hmac.compare_digest(claims.password_stamp, password_stamp(row.password_hash, secret)):
        raise InvalidToken()  # no such user, or the password changed since the token was issued
    if not row.is_active:
        raise AccountDisabled()
    return Principal(
        user_id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        is_active=row.is_active,
        created_at=row.created_at,
        rate=TierRate(row.tier_rps, row.tier_burst),
    )


class ScopeDenied(Forbidden):
    code, message = "scope_denied", "This API key does not allow this request."


def authorize(principal: Principal, scope: str, name: str | None = None) -> None:
    """Check an API key's scopes and folder prefix (a JWT may do anything within its own space).

    `name` is the object name (or listing prefix) relative to the user's space.
    """
    key = principal.key
    if key is None:
        return
    if scope not in key.scopes:
        raise ScopeDenied(
            f"This API key lacks the '{scope}' scope.", details={"scope": scope, "keyScopes": sorted(key.scopes)}
        )
    if key.prefix is not None and (name is None or not name.startswith(key.prefix)):
        raise ScopeDenied(f"This API key is limited to names under '{key.prefix}'.", details={"prefix": key.prefix})
