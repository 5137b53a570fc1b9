"""SQL for account tokens and recovery codes. Using a token or a code is one conditional UPDATE ... RETURNING,
so two requests with the same one cannot both succeed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.models import AccountToken, RecoveryCode, User
from pockity.models.base import UTCDateTime


def add_token(session: AsyncSession, token: AccountToken) -> None:
    session.add(token)


async def add_token_for_active_account(
    session: AsyncSession, token_id: str, email: str, purpose: str, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    """One INSERT ... SELECT: the token, if an active account has this address (the same statement either way)."""
    source = select(
        literal(token_id),
        User.id,
        literal(purpose),
        User.email,
        literal(token_hash),
        literal(now, UTCDateTime()),
        literal(expires_at, UTCDateTime()),
    ).where(User.email == email, User.is_active.is_(True))
    columns = ["id", "user_id", "purpose", "email", "token_hash", "created_at", "expires_at"]
    await session.execute(insert(AccountToken).from_select(columns, source))


async def use_token(
    session: AsyncSession, token_id: str, token_hash: str, purposes: tuple[str, ...], now: datetime
) -> Any | None:
    """Mark an unused, unexpired token of one of `purposes` used; its (user_id, purpose, email), else None."""
    stmt = (
        update(AccountToken)
        .where(
            AccountToken.id == token_id,
            AccountToken.token_hash == token_hash,
            AccountToken.purpose.in_(purposes),
            AccountToken.used_at.is_(None),
            AccountToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(AccountToken.user_id, AccountToken.purpose, AccountToken.email)
    )
    return (await session.execute(stmt)).first()


async def retire_tokens(session: AsyncSession, user_id: str, purpose: str, now: datetime) -> None:
    """Every other unused token of this purpose stops working (a reset used, a newer link sent)."""
    await session.execute(
        update(AccountToken)
        .where(AccountToken.user_id == user_id, AccountToken.purpose == purpose, AccountToken.used_at.is_(None))
        .values(used_at=now)
    )


def add_codes(session: AsyncSession, codes: list[RecoveryCode]) -> None:
    session.add_all(codes)


async def delete_codes(session: AsyncSession, user_id: str) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


async def use_code(session: AsyncSession, user_id: str, code_hash: str, now: datetime) -> bool:
    stmt = (
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.code_hash == code_hash, RecoveryCode.used_at.is_(None))
        .values(used_at=now)
        .returning(RecoveryCode.id)
    )
    return (await session.execute(stmt)).first() is not None


async def codes_left(session: AsyncSession, user_id: str) -> int:
    stmt = select(RecoveryCode.id).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    return len((await session.execute(stmt)).all())


async def accept_step(session: AsyncSession, user_id: str, step: int) -> bool:
    """Record `step` as the last accepted TOTP step unless it (or a later one) was already used."""
    stmt = (
        update(User)
        .where(User.id == user_id, (User.totp_last_step.is_(None)) | (User.totp_last_step < step))
        .values(totp_last_step=step)
        .returning(User.id)
    )
    return (await session.execute(stmt)).first() is not None


async def users_with_secret_not_under(session: AsyncSession, kek_id: str) -> list[User]:
    stmt = select(User).where(User.totp_secret_sealed.is_not(None), User.totp_kek_id != kek_id).order_by(User.id)
    return list((await session.execute(stmt)).scalars())
