"""Login with throttling, and turning a bearer token into a principal."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.auth import repository
from pockity.auth.schemas import Principal, TierRate
from pockity.db import Database
from pockity.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from pockity.kit import jwt
from pockity.kit.ids import new_id
from pockity.kit.passwords import hash_password, verify_password
from pockity.kit.time import utcnow
from pockity.mail import service as mail
from pockity.models import AuthSession, User
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


class SessionEnded(Unauthorized):
    code, message = "session_ended", "This session was signed out; sign in again."


class EmailNotVerified(Forbidden):
    code, message = "email_not_verified", "Verify your email address first: follow the link we sent you."


class TwoFactorRequiredForAdmins(Forbidden):
    code, message = (
        "two_factor_required",
        "Administrators must use two-factor sign-in on this server: turn it on in your account first.",
    )


# How long a login may wait for its one-time code, and how often a session's last sighting is written.
CHALLENGE_MINUTES = 5
SEEN_INTERVAL = timedelta(minutes=5)


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
class Device:
    """Where a sign-in comes from, as the session list shows it."""

    ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, ip: str | None, user_agent: str | None) -> Device:
        return cls(ip=ip[:64] if ip else None, user_agent=user_agent[:300] if user_agent else None)


@dataclass(frozen=True)
class LoginResult:
    """A signed-in user (`token` set), or a password that was right for an account that also needs its
    one-time code (`challenge` set: the second step's token, `token` empty)."""

    user: User
    token: str
    expires_at: datetime
    challenge: str | None = None


def _check_password(password: str, password_hash: str | None, rounds: int) -> bool:
    if password_hash is None:
        verify_password(password, _dummy_hash(rounds))
        return False
    return verify_password(password, password_hash)


def _throttle_key(kind: str, value: str) -> str:
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:40]}"


def _throttle_keys(policy: LoginPolicy, kind: str, value: str, actor: Actor) -> dict[str, tuple[str, int]]:
    return {
        kind: (_throttle_key(kind, value), policy.max_failures_per_email),
        "client": (_throttle_key("client", actor.ip or "unknown"), policy.max_failures_per_client),
    }


async def _refuse_if_throttled(db: Database, keys: dict[str, tuple[str, int]], now: datetime) -> None:
    until = await repository.blocked_until(db.reader, [k for k, _ in keys.values()])
    if until is not None and until > now:
        raise TooManyRequests(
            "Too many failed logins; try again later.",
            retry_after=int((until - now).total_seconds()) + 1,
            code="login_throttled",
        )


async def login(
    db: Database, policy: LoginPolicy, *, email: str, password: str, actor: Actor, device: Device | None = None
) -> LoginResult:
    """Check the password (bcrypt, in a thread) unless this email or client is being throttled. An account
    with two-factor sign-in gets a second-step challenge instead of a session."""
    email = normalise_email(email)
    keys = _throttle_keys(policy, "email", email, actor)
    now = utcnow()
    await _refuse_if_throttled(db, keys, now)
    async with db.sessions() as session:
        user = await users_repository.get_by_email(session, email)
    ok = await anyio.to_thread.run_sync(
        _check_password, password, user.password_hash if user else None, policy.bcrypt_rounds
    )
    if user is None or not ok or not user.is_active:
        await _count_failure(db, policy, keys, now, actor)
        raise InvalidCredentials()
    if user.totp_enabled_at is not None:
        challenge, expires_at = issue_challenge(user, policy)
        return LoginResult(user=user, token="", expires_at=expires_at, challenge=challenge)
    async with db.sessions() as session, session.begin():
        await repository.clear(session, keys["email"][0])
        token, expires_at = await start_session(
            session, user, policy, device or Device(actor.ip, None), actor.as_user(user.id)
        )
    return LoginResult(user=user, token=token, expires_at=expires_at)


def issue_challenge(user: User, policy: LoginPolicy) -> tuple[str, datetime]:
    """The second step's token of a user whose password was just proven (five minutes, this password only)."""
    return jwt.issue_token(
        user.id,
        user.role,
        _challenge_secret(policy.jwt_secret),
        CHALLENGE_MINUTES,
        password_stamp=password_stamp(user.password_hash, policy.jwt_secret),
        issuer=jwt.CHALLENGE_ISSUER,
    )


def _challenge_secret(secret: str) -> str:
    # A key of its own: a second-step token never verifies as an access token, nor the reverse.
    return hmac.new(secret.encode(), b"pockity two-factor challenge v1", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Challenge:
    """A login waiting for its one-time code: whose, and the throttle keys its code attempts count against."""

    user_id: str
    keys: dict[str, tuple[str, int]]
    password_stamp: str

    def still_valid_for(self, user: User, secret: str) -> bool:
        """The same account, still active, under the password the first step checked."""
        return (
            user.id == self.user_id
            and user.is_active
            and hmac.compare_digest(self.password_stamp, password_stamp(user.password_hash, secret))
        )


async def open_challenge(db: Database, policy: LoginPolicy, challenge: str, actor: Actor) -> Challenge:
    """Check a second-step token (signature, expiry, the password still the same) and that its user and this
    client may try a code now; the throttle of the first step covers the second."""
    try:
        claims = jwt.decode_token(challenge, _challenge_secret(policy.jwt_secret), issuer=jwt.CHALLENGE_ISSUER)
    except jwt.TokenExpired:
        raise Unauthorized("The sign-in took too long; enter your password again.", code="challenge_expired") from None
    except jwt.TokenError:
        raise Unauthorized(
            "This sign-in step is not valid; enter your password again.", code="invalid_challenge"
        ) from None
    keys = _throttle_keys(policy, "second_step", claims.sub, actor)
    await _refuse_if_throttled(db, keys, utcnow())
    return Challenge(user_id=claims.sub, keys=keys, password_stamp=claims.password_stamp)


async def second_step_failed(db: Database, policy: LoginPolicy, challenge: Challenge, actor: Actor) -> None:
    await _count_failure(db, policy, challenge.keys, utcnow(), actor)


async def start_session(
    session: AsyncSession, user: User, policy: LoginPolicy, device: Device, actor: Actor
) -> tuple[str, datetime]:
    """Open a sign-in session for `user` in the caller's unit of work and issue its token. A sign-in from a
    device (User-Agent) the account has not used before is emailed to users who asked for it."""
    session_id = new_id()
    token, expires_at = issue_session_token(user, policy, session_id)
    now = utcnow()
    repository.add_session(
        session,
        AuthSession(
            id=session_id,
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            ip=device.ip,
            user_agent=device.user_agent,
        ),
    )
    await session.flush()
    if user.notify_new_sign_in and not await repository.known_device(session, user.id, device.user_agent, session_id):
        mail.enqueue(
            session,
            kind="auth.new_sign_in",
            user_id=user.id,
            context={
                "title": "New sign-in to your account",
                "body": f"Your account was signed in at {now:%Y-%m-%d %H:%M} UTC from "
                f"{device.user_agent or 'an unknown device'} (IP address {device.ip or 'unknown'}). If this was "
                "not you, change your password and sign out every session from your account page.",
                "ip": device.ip or "unknown",
                "at": now.isoformat(),
            },
        )
    record(session, actor, "auth.signed_in", target_type="session", target_id=session_id, details={"ip": device.ip})
    return token, expires_at


def password_stamp(password_hash: str, secret: str) -> str:
    """What a token carries of the password it was issued under: an HMAC of the hash (nothing of the hash
    itself). A new password changes it, so every token issued before stops working at once, in every process
    (the principal's lookup reads the hash in the same row, so this costs no round trip)."""
    mac = hmac.new(secret.encode(), b"pockity-password-stamp:" + password_hash.encode(), hashlib.sha256)
    return mac.hexdigest()[:22]


def issue_session_token(user: User, policy: LoginPolicy, session_id: str) -> tuple[str, datetime]:
    """A login token of session `session_id` for `user` as it is now (role, password)."""
    stamp = password_stamp(user.password_hash, policy.jwt_secret)
    return jwt.issue_token(
        user.id, user.role, policy.jwt_secret, policy.jwt_expires_minutes, password_stamp=stamp, session_id=session_id
    )


async def list_sessions(session: AsyncSession, user_id: str) -> list[AuthSession]:
    return await repository.list_sessions(session, user_id, utcnow())


class SessionNotFound(NotFound):
    code, message = "session_not_found", "No such session is open."


async def sign_out(session: AsyncSession, user_id: str, session_id: str, actor: Actor) -> None:
    """End one of the user's own sessions (another user's id is not found); its token stops at once."""
    if not await repository.revoke_sessions(session, user_id, utcnow(), only=session_id):
        raise SessionNotFound(details={"id": session_id})
    record(session, actor, "auth.signed_out", target_type="session", target_id=session_id)


async def sign_out_all(session: AsyncSession, user_id: str, actor: Actor, *, keep: str | None = None) -> int:
    """End every open session of the user (but `keep`, the caller's own, when given); how many ended."""
    count = await repository.revoke_sessions(session, user_id, utcnow(), keep=keep)
    record(
        session,
        actor,
        "auth.signed_out_everywhere",
        target_type="user",
        target_id=user_id,
        details={"sessions": count, "keptCurrent": keep is not None},
    )
    return count


async def end_all_sessions(session: AsyncSession, user_id: str) -> int:
    """Every session of the user ends (a disabled account, a new password): no audit of its own, the
    caller's event says why."""
    return await repository.revoke_sessions(session, user_id, utcnow())


async def forget_ended_sessions(session: AsyncSession, before: datetime) -> int:
    return await repository.delete_sessions_ended_before(session, before)


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


async def principal_from_token(db: Database, token: str, secret: str, ip: str | None = None) -> Principal:
    """Verify a JWT and load its user and session in one query: deleted or disabled users' tokens, tokens of a
    signed-out session and tokens issued before a password change stop working at once, in every process."""
    try:
        claims = jwt.decode_token(token, secret)
    except jwt.TokenExpired:
        raise TokenExpired() from None
    except jwt.TokenError:
        raise InvalidToken() from None
    row = await repository.user_row(db.hot, claims.sub, claims.session_id) if claims.session_id else None
    if row is None or not hmac.compare_digest(claims.password_stamp, password_stamp(row.password_hash, secret)):
        raise InvalidToken()  # no such user or session, or the password changed since the token was issued
    if not row.is_active:
        raise AccountDisabled()
    if row.session_revoked_at is not None:
        raise SessionEnded()
    now = utcnow()
    if row.session_last_seen_at < now - SEEN_INTERVAL:  # at most one write per session per interval
        async with db.sessions() as session, session.begin():
            await repository.touch_session(session, claims.session_id, now, ip, now - SEEN_INTERVAL)
    return Principal(
        user_id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        is_active=row.is_active,
        created_at=row.created_at,
        rate=TierRate(row.tier_rps, row.tier_burst),
        email_verified=row.email_verified,
        two_factor=row.two_factor,
        session_id=claims.session_id,
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


async def count_attempt(session: AsyncSession, kind: str, value: str, window: timedelta) -> int:
    """Add one to the shared counter of `kind` for `value` (a fresh window once `window` has passed) and
    return the count so far: a throttle for requests that are not logins (resets, resends), exact across
    processes (one upsert)."""
    now = utcnow()
    return await repository.count_failure(session, _throttle_key(kind, value), now, now - window)
