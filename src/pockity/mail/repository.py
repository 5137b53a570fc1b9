"""SQL for the mail outbox. Claims and outcomes are single conditional statements: a runner records the result
of an attempt only while its claim (status `sending` and the attempt number it took) still holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.db import dialect_insert
from pockity.models import MailPreference, OutboxMessage, OutboxStatus, User
from pockity.models.base import UTCDateTime

_RESENDABLE = (OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.LOGGED)


def add(session: AsyncSession, message: OutboxMessage) -> None:
    session.add(message)


async def claim_due(session: AsyncSession, now: datetime, claimed_until: datetime, limit: int) -> list[OutboxMessage]:
    """Take up to `limit` due messages (pending and due, or a lapsed claim) with one UPDATE ... RETURNING.

    PostgreSQL: the inner SELECT locks the rows it picks and skips those another runner holds, so two runners
    never take the same message. SQLite renders no FOR UPDATE; its transactions are BEGIN IMMEDIATE, so two
    claims never overlap at all."""
    due = or_(
        and_(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.claimed_until < now),
    )
    picked = (
        select(OutboxMessage.id)
        .where(due)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(picked.scalar_subquery()), due)
        .values(status=OutboxStatus.SENDING, claimed_until=claimed_until, attempts=OutboxMessage.attempts + 1)
        .returning(OutboxMessage)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return list((await session.scalars(stmt)).all())


async def store_rendering(
    session: AsyncSession, message_id: str, *, subject: str, text_body: str, html_body: str, header_id: str
) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.subject.is_(None))
        .values(subject=subject, text_body=text_body, html_body=html_body, message_id=header_id)
        .execution_options(synchronize_session=False)
    )


async def finish_attempt(session: AsyncSession, message_id: str, attempt: int, **values: Any) -> bool:
    """Record an attempt's outcome if this runner's claim still holds; False if it lapsed and was retaken."""
    result = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.status == OutboxStatus.SENDING,
            OutboxMessage.attempts == attempt,
        )
        .values(claimed_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def requeue(session: AsyncSession, message_id: str, now: datetime) -> OutboxMessage | None:
    """Put a finished message back in the queue (attempts from zero); None if it is not finished."""
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.status.in_(_RESENDABLE))
        .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now, last_error=None, sent_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return await get(session, message_id)


async def get(session: AsyncSession, message_id: str) -> OutboxMessage | None:
    stmt = select(OutboxMessage).where(OutboxMessage.id == message_id).execution_options(populate_existing=True)
    return (await session.scalars(stmt)).first()


async def list_messages(
    session: AsyncSession, *, status: str | None, before_id: str | None, limit: int
) -> Sequence[OutboxMessage]:
    stmt = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(OutboxMessage.status == status)
    if before_id:
        stmt = stmt.where(OutboxMessage.id < before_id)
    return (await session.scalars(stmt)).all()


async def unsubscribe(session: AsyncSession, user_id: str, kind: str, now: datetime) -> None:
    """Record the preference once (a second click changes nothing); a deleted user's link does nothing."""
    exists = select(User.id).where(User.id == user_id)
    await session.execute(
        dialect_insert(session)(MailPreference)
        .from_select(
            ["user_id", "kind", "unsubscribed_at"], exists.add_columns(literal(kind), literal(now, UTCDateTime()))
        )
        .on_conflict_do_nothing(index_elements=["user_id", "kind"])
    )


async def suppress_unsubscribed(session: AsyncSession, message_ids: Sequence[str]) -> list[str]:
    """Mark the claimed messages whose user unsubscribed from their kind as not to be sent; their ids."""
    if not message_ids:
        return []
    preference = select(MailPreference.user_id).where(
        MailPreference.user_id == OutboxMessage.user_id, MailPreference.kind == OutboxMessage.kind
    )
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(message_ids), preference.exists())
        .values(status=OutboxStatus.UNSUBSCRIBED, claimed_until=None)
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars().all())


async def add_for_active_account(
    session: AsyncSession, message_id: str, email: str, kind: str, context: dict[str, Any], now: datetime
) -> None:
    """One INSERT ... SELECT: the message, if an active account has this address (no row written otherwise;
    the statement is the same either way)."""
    source = select(
        literal(message_id),
        User.id,
        User.email,
        literal(kind),
        literal(context, OutboxMessage.context.type),
        literal(OutboxStatus.PENDING),
        literal(0),
        literal(now, UTCDateTime()),
        literal(now, UTCDateTime()),
    ).where(User.email == email, User.is_active.is_(True))
    columns = ["id", "user_id", "recipient", "kind", "context", "status", "attempts", "next_attempt_at", "created_at"]
    await session.execute(insert(OutboxMessage).from_select(columns, source))
