"""Messages to one user (usage alerts, billing notices): written by the domains that have something to say, in
their own unit of work; read and marked read by the user through the API."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.errors import NotFound
from pockity.kit.pagination import Page, page_of
from pockity.mail import service as mail
from pockity.models import Notification
from pockity.notifications import repository as repo


class NotificationNotFound(NotFound):
    code, message = "notification_not_found", "The notification does not exist."


def notify(session: AsyncSession, user_id: str, kind: str, title: str, body: str, data: dict[str, object]) -> None:
    """Add a message to the user's notifications and an email of it to the outbox, in the caller's unit of work
    (both exist, and the email is sent, only if it commits)."""
    repo.add(session, Notification(user_id=user_id, kind=kind, title=title, body=body, data=data))
    mail.enqueue(session, kind=kind, context={"title": title, "body": body, "data": data}, user_id=user_id)


async def list_own(
    session: AsyncSession, user_id: str, *, cursor: str | None, limit: int, unread_only: bool = False
) -> Page[Notification]:
    """The user's notifications, newest first; the cursor is the last id of the previous page."""
    rows = await repo.list_own(session, user_id, before_id=cursor, unread_only=unread_only, limit=limit + 1)
    return page_of(rows, limit)


async def mark_read(session: AsyncSession, user_id: str, notification_id: str, now: datetime) -> Notification:
    """Mark one of the user's notifications read (idempotent); another user's id is not found."""
    notification = await repo.mark_read(session, user_id, notification_id, now)
    if notification is None:
        raise NotificationNotFound(details={"id": notification_id})
    return notification
