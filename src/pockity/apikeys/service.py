"""API key pairs: issue, list, revoke, authenticate, re-seal under a new KEK."""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.apikeys import repository
from pockity.apikeys.schemas import ApiKeyCreateIn
from pockity.audit.service import Actor, record
from pockity.auth.schemas import KeyGrant, Principal, TierRate
from pockity.auth.service import AccountDisabled
from pockity.db import Database
from pockity.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from pockity.kit.crypto import Keyring, SealError, UnknownKeyError, constant_time_equals
from pockity.kit.time import utcnow
from pockity.models import ApiKey
from pockity.notifications import service as notifications

_ID_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits
# Compared against when the access key id is unknown, so that answer takes as long as a wrong secret.
_UNKNOWN_SECRET = "x" * 40


class InvalidApiKey(Unauthorized):
    code, message = "invalid_api_key", "The API key id or secret is invalid."


class ApiKeyRevoked(Unauthorized):
    code, message = "api_key_revoked", "This API key has been revoked."


class ApiKeyExpired(Unauthorized):
    code, message = "api_key_expired", "This API key has expired."


class ApiKeyNotFound(NotFound):
    code, message = "api_key_not_found", "API key not found."


def new_access_key_id() -> str:
    return "PK" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(18))


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


async def create_key(
    session: AsyncSession,
    keyring: Keyring,
    owner: Principal,
    data: ApiKeyCreateIn,
    *,
    max_keys: int,
    actor: Actor,
) -> tuple[ApiKey, str]:
    """Issue a key pair; the secret is returned once and stored only sealed."""
    await repository.lock_owner(session, owner.user_id)
    if await repository.count_active(session, owner.user_id, utcnow()) >= max_keys:
        raise Conflict(
            f"You already have {max_keys} active API keys; revoke one first.",
            code="api_key_limit",
            details={"limit": max_keys},
        )
    if data.tier_id is not None and not await repository.tier_exists(session, data.tier_id):
        raise ValidationFailed("Unknown tier.", code="invalid_tier", details={"tierId": data.tier_id})
    access_key_id, secret = new_access_key_id(), new_secret()
    sealed, kek_id = keyring.seal(secret.encode(), access_key_id.encode())
    key = ApiKey(
        user_id=owner.user_id,
        name=data.name,
        access_key_id=access_key_id,
        secret_sealed=sealed,
        kek_id=kek_id,
        scopes=",".join(sorted(set(data.scopes))),
        prefix=data.prefix,
        tier_id=data.tier_id,
        expires_at=data.expires_at,
        is_active=True,
        request_count=0,
    )
    repository.add(session, key)
    await session.flush()
    record(
        session,
        actor,
        "apikey.created",
        target_type="api_key",
        target_id=key.id,
        details={"accessKeyId": access_key_id, "scopes": key.scopes, "prefix": key.prefix},
    )
    # Essential: a key someone else created with a stolen session is how a takeover would persist.
    body = (
        f'A new API key "{key.name}" ({access_key_id}, scopes: {key.scopes or "none"}) was created for your '
        "account. If this was not you, revoke it on the API keys page and change your password."
    )
    notifications.notify(session, owner.user_id, "apikey.created", "A new API key was created", body, {"keyId": key.id})
    return key, secret


async def list_keys(session: AsyncSession, owner_id: str) -> Sequence[ApiKey]:
    """The owner's keys, newest first."""
    return await repository.list_owned(session, owner_id)


async def list_key_rows(db: Database, owner_id: str) -> Sequence[Any]:
    """The owner's keys, newest first, as rows with ApiKeyOut's fields (one AUTOCOMMIT read, for the list route)."""
    return await repository.list_owned_rows(db.hot, owner_id)


async def get_key(session: AsyncSession, owner_id: str, key_id: str) -> ApiKey:
    """One of the owner's keys; another user's key id is indistinguishable from a missing one."""
    key = await repository.get_owned(session, owner_id, key_id)
    if key is None:
        raise ApiKeyNotFound()
    return key


def _revoke(session: AsyncSession, key: ApiKey, actor: Actor) -> ApiKey:
    if key.is_active:
        key.is_active, key.revoked_at = False, utcnow()
        record(
            session,
            actor,
            "apikey.revoked",
            target_type="api_key",
            target_id=key.id,
            details={"accessKeyId": key.access_key_id, "ownerId": key.user_id},
        )
    return key


async def revoke_key(session: AsyncSession, owner_id: str, key_id: str, actor: Actor) -> ApiKey:
    """Revoke one of the owner's keys; revoking twice is not an error."""
    return _revoke(session, await get_key(session, owner_id, key_id), actor)


async def admin_revoke_key(session: AsyncSession, key_id: str, actor: Actor) -> ApiKey:
    """Revoke any user's key (admin)."""
    key = await repository.get_any(session, key_id)
    if key is None:
        raise ApiKeyNotFound()
    return _revoke(session, key, actor)


@dataclass(frozen=True)
class SigningKey:
    """A key pair looked up by its access key id, for a caller that proves the secret itself (an S3 signature
    is an HMAC keyed with it). `principal()` then says who it is — or that the key is revoked or expired, or
    the account disabled, which only a caller holding the secret may learn."""

    secret: str
    row: Any

    def principal(self) -> Principal:
        return _principal(self.row)


async def signing_key(db: Database, keyring: Keyring, access_key_id: str) -> SigningKey | None:
    """One read and one AES-GCM open; None for an unknown access key id."""
    row = await repository.auth_row(db.hot, access_key_id) if len(access_key_id) == 20 else None
    if row is None:
        return None
    try:
        secret = keyring.open(row.secret_sealed, row.kek_id, row.access_key_id.encode()).decode()
    except (SealError, UnknownKeyError):
        return None
    return SigningKey(secret, row)


async def authenticate(db: Database, keyring: Keyring, access_key_id: str, secret: str) -> Principal:
    """One read, one AES-GCM open, one constant-time compare; no hashing on the request path."""
    found = await signing_key(db, keyring, access_key_id)
    expected = found.secret if found is not None else _UNKNOWN_SECRET
    if not constant_time_equals(secret, expected) or found is None:
        raise InvalidApiKey()
    return found.principal()


def _principal(row: Any) -> Principal:
    # Only a caller holding the secret learns that the key is revoked or expired.
    if not row.key_active:
        raise ApiKeyRevoked()
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise ApiKeyExpired()
    if not row.is_active:
        raise AccountDisabled()
    grant = KeyGrant(
        id=row.key_id,
        access_key_id=row.access_key_id,
        name=row.key_name,
        scopes=frozenset(s for s in row.scopes.split(",") if s),
        prefix=row.prefix,
        tier_id=row.tier_id,
        rate=TierRate(row.key_rps, row.key_burst) if row.tier_id else None,
    )
    return Principal(
        user_id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        is_active=row.is_active,
        created_at=row.created_at,
        key=grant,
        rate=TierRate(row.tier_rps, row.tier_burst),
        email_verified=row.email_verified,
        two_factor=row.two_factor,
    )


async def reseal_all(session: AsyncSession, keyring: Keyring) -> int:
    """Re-seal every secret not under the current KEK (after `KEY_ENCRYPTION_KEY` changed)."""
    count = 0
    async for batch in repository.iter_sealed_not_under(session, keyring.current_id):
        for key in batch:
            aad = key.access_key_id.encode()
            secret = keyring.open(key.secret_sealed, key.kek_id, aad)
            key.secret_sealed, key.kek_id = keyring.seal(secret, aad)
            count += 1
        await session.flush()
    return count
