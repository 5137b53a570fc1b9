"""SQL for notifications. Every query starts from the owner's notifications."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.models import Notification


def _owned(user_id: str) -> Select[Notification]:
    return select(Notification).where(Notification.user_id == user_id)


def add(session: AsyncSession, notification: Notification) -> None:
    session.add(notification)


async def list_own(
    session: AsyncSession, user_id: str, *, before_id: str | None, unread_only: bool, limit: int
) -> Sequence[Notification]:
    stmt = _owned(user_id).order_by(Notification.id.desc()).limit(limit)
    if before_id:
        stmt = stmt.where(Notification.id < before_id)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    return (await session.scalars(stmt)).all()


async def mark_read(session: AsyncSession, user_id: str, notification_id: str, now: datetime) -> Notification | None:
    """Set read_at once (a second call keeps the first time); None if the user has no such notification."""
    await session.execute(
        update(Notification)
        .where(
            Notification.id == notification_id,
            Notification.user_id == user_id,
            Notification.read_at.is_(None),
        )
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )
    stmt = _owned(user_id).where(Notification.id == notification_id).execution_options(populate_existing=True)
    return (await session.scalars(stmt)).first()
