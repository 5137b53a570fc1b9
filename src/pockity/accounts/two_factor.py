"""Two-factor sign-in with TOTP (RFC 6238) and one-time recovery codes.

Set up in two steps (a secret is created, then enabled by a first code from the app, so a mistyped scan never
locks anyone out); the secret is sealed with the keyring like API secrets; recovery codes are stored as
SHA-256 and work once. A code is accepted once: the last accepted time step is recorded by a conditional
UPDATE. Login with two-factor sign-in is two steps (auth.service.login gives a challenge; `second_step` here
checks the code and opens the session), and the login throttle covers the second step."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.accounts import repository
from pockity.audit.service import Actor, record
from pockity.auth import service as auth
from pockity.db import Database
from pockity.errors import Conflict, Unauthorized
from pockity.kit import totp
from pockity.kit.crypto import Keyring
from pockity.kit.passwords import verify_password
from pockity.kit.time import utcnow
from pockity.models import RecoveryCode, Role, User
from pockity.users import service as users

RECOVERY_CODES = 10
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper


class InvalidCode(Unauthorized):
    code, message = "invalid_code", "That code is not right (or was already used). Try the next one."


class TwoFactorAlreadyOn(Conflict):
    code, message = "two_factor_enabled", "Two-factor sign-in is already on."


class TwoFactorOff(Conflict):
    code, message = "two_factor_disabled", "Two-factor sign-in is not on."


@dataclass(frozen=True)
class Setup:
    secret: str
    uri: str


def _associated(user_id: str) -> bytes:
    return b"totp:" + user_id.encode()  # the sealed secret opens only for its own row


def _secret(user: User, keyring: Keyring) -> str:
    assert user.totp_secret_sealed is not None and user.totp_kek_id is not None
    return keyring.open(user.totp_secret_sealed, user.totp_kek_id, _associated(user.id)).decode()


def hash_code(code: str) -> str:
    normal = "".join(code.lower().split()).replace("-", "")
    return hashlib.sha256(b"pockity-recovery:" + normal.encode()).hexdigest()


def _new_codes() -> list[str]:
    """Ten codes of 12 characters from a 31-letter alphabet (59 random bits each), shown as xxxx-xxxx-xxxx."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


async def _replace_codes(session: AsyncSession, user_id: str) -> list[str]:
    codes = _new_codes()
    await repository.delete_codes(session, user_id)
    repository.add_codes(session, [RecoveryCode(user_id=user_id, code_hash=hash_code(c)) for c in codes])
    return codes


async def _check_code(session: AsyncSession, user: User, code: str, keyring: Keyring) -> bool:
    step = totp.matching_step(_secret(user, keyring), code, utcnow().timestamp())
    return step is not None and await repository.accept_step(session, user.id, step)


def pending_secret(user: User, keyring: Keyring) -> str:
    """The secret of a set-up not yet enabled (to show it again after a mistyped first code)."""
    return _secret(user, keyring)


def provisioning_uri(user: User, secret: str, issuer: str) -> str:
    return totp.provisioning_uri(secret, user.email, issuer)


async def begin_setup(session: AsyncSession, user_id: str, keyring: Keyring, issuer: str) -> Setup:
    """A new secret for the user's authenticator app (not in use until `enable` sees a code from it)."""
    user = await users.get_user(session, user_id)
    if user.totp_enabled_at is not None:
        raise TwoFactorAlreadyOn()
    secret = totp.new_secret()
    user.totp_secret_sealed, user.totp_kek_id = keyring.seal(secret.encode(), _associated(user.id))
    user.totp_last_step = None
    return Setup(secret=secret, uri=provisioning_uri(user, secret, issuer))


async def enable(session: AsyncSession, user_id: str, code: str, keyring: Keyring, actor: Actor) -> list[str]:
    """Turn two-factor sign-in on with a first code from the app; the recovery codes (shown once)."""
    user = await users.get_user(session, user_id)
    if user.totp_enabled_at is not None:
        raise TwoFactorAlreadyOn()
    if user.totp_secret_sealed is None:
        raise Conflict("Start the set-up first: it gives the secret for your app.", code="two_factor_not_set_up")
    if not await _check_code(session, user, code, keyring):
        raise InvalidCode()
    user.totp_enabled_at = utcnow()
    codes = await _replace_codes(session, user.id)
    record(session, actor, "user.two_factor_enabled", target_type="user", target_id=user.id)
    return codes


async def disable(
    session: AsyncSession,
    user_id: str,
    *,
    password: str,
    code: str,
    keyring: Keyring,
    admins_must_use_it: bool,
    actor: Actor,
) -> None:
    """Turn two-factor sign-in off (the password and a current code, or a recovery code, are needed)."""
    user = await users.get_user(session, user_id)
    if user.totp_enabled_at is None:
        raise TwoFactorOff()
    if admins_must_use_it and user.role == Role.ADMIN.value:
        raise auth.TwoFactorRequiredForAdmins()
    if not await anyio.to_thread.run_sync(verify_password, password, user.password_hash):
        raise users.WrongPassword()
    if not await _check_code(session, user, code, keyring) and not await repository.use_code(
        session, user.id, hash_code(code), utcnow()
    ):
        raise InvalidCode()
    user.totp_enabled_at = user.totp_secret_sealed = user.totp_kek_id = user.totp_last_step = None
    await repository.delete_codes(session, user.id)
    record(session, actor, "user.two_factor_disabled", target_type="user", target_id=user.id)


async def new_recovery_codes(
    session: AsyncSession, user_id: str, code: str, keyring: Keyring, actor: Actor
) -> list[str]:
    """Replace the recovery codes (a current code from the app is needed); the old ones stop working."""
    user = await users.get_user(session, user_id)
    if user.totp_enabled_at is None:
        raise TwoFactorOff()
    if not await _check_code(session, user, code, keyring):
        raise InvalidCode()
    codes = await _replace_codes(session, user.id)
    record(session, actor, "user.recovery_codes_replaced", target_type="user", target_id=user.id)
    return codes


async def reseal_all(session: AsyncSession, keyring: Keyring) -> int:
    """Re-seal every TOTP secret not under the current KEK (`pockity rotate-encryption-key`)."""
    count = 0
    for user in await repository.users_with_secret_not_under(session, keyring.current_id):
        aad = _associated(user.id)
        assert user.totp_secret_sealed is not None and user.totp_kek_id is not None
        secret = keyring.open(user.totp_secret_sealed, user.totp_kek_id, aad)
        user.totp_secret_sealed, user.totp_kek_id = keyring.seal(secret, aad)
        count += 1
    await session.flush()
    return count


async def codes_left(session: AsyncSession, user_id: str) -> int:
    return await repository.codes_left(session, user_id)


async def second_step(
    db: Database,
    policy: auth.LoginPolicy,
    keyring: Keyring,
    *,
    challenge: str,
    code: str,
    device: auth.Device,
    actor: Actor,
) -> tuple[User, str, datetime]:
    """Finish a two-step login: a current code from the app or an unused recovery code. A wrong code counts
    as a failed login (for the account and the client), so guessing is throttled like passwords."""
    pending = await auth.open_challenge(db, policy, challenge, actor)
    async with db.sessions() as session, session.begin():
        user = await users.get_user(session, pending.user_id)
        ok = pending.still_valid_for(user, policy.jwt_secret) and user.totp_enabled_at is not None
        used_recovery = False
        if ok and not await _check_code(session, user, code, keyring):
            used_recovery = await repository.use_code(session, user.id, hash_code(code), utcnow())
            ok = used_recovery
        if ok:
            user_actor = actor.as_user(user.id)
            token, expires_at = await auth.start_session(session, user, policy, device, user_actor)
            if used_recovery:
                record(session, user_actor, "user.recovery_code_used", target_type="user", target_id=user.id)
            return user, token, expires_at
    await auth.second_step_failed(db, policy, pending, actor)
    raise InvalidCode()
