"""The mail outbox: `enqueue` writes a message in the caller's unit of work (it is sent only if that commits,
by the mail job, never from inside a request's transaction); admins list the outbox and resend."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.errors import Conflict, Forbidden, NotFound
from pockity.kit.ids import new_id
from pockity.kit.pagination import Page, page_of
from pockity.kit.time import utcnow
from pockity.mail import repository as repo
from pockity.mail.links import verify_unsubscribe_token
from pockity.models import OutboxMessage, User


class OutboxMessageNotFound(NotFound):
    code, message = "outbox_message_not_found", "The outbox message does not exist."


class OutboxMessageBusy(Conflict):
    code, message = "outbox_message_busy", "The message is still waiting to be sent; it cannot be resent yet."


class InvalidUnsubscribeLink(Forbidden):
    code, message = "invalid_signature", "The unsubscribe link is not valid."


def check_unsubscribe(key: bytes, token: str | None) -> tuple[str, str]:
    """(user id, kind) of a valid unsubscribe link; refuses any other."""
    found = verify_unsubscribe_token(key, token) if token else None
    if found is None:
        raise InvalidUnsubscribeLink()
    return found


async def unsubscribe(session: AsyncSession, key: bytes, token: str | None) -> str:
    """Stop emails of the link's kind to the link's user (their notifications still appear); the kind."""
    user_id, kind = check_unsubscribe(key, token)
    await repo.unsubscribe(session, user_id, kind, utcnow())
    return kind


def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    context: dict[str, Any],
    recipient: str | None = None,
    user_id: str | None = None,
    now: datetime | None = None,
) -> OutboxMessage:
    """Add an email to the outbox in the caller's unit of work: to `recipient`, or to the user's address as it
    is when the unit of work commits (read by the INSERT itself, so no query is needed here)."""
    if recipient is None and user_id is None:
        raise ValueError("a recipient or a user is needed")
    to: Any = recipient
    if to is None:
        to = select(User.email).where(User.id == user_id).scalar_subquery()
    message = OutboxMessage(user_id=user_id, recipient=to, kind=kind, context=context, next_attempt_at=now or utcnow())
    repo.add(session, message)
    return message


async def enqueue_if_account(
    session: AsyncSession, *, kind: str, email: str, context: dict[str, Any], now: datetime | None = None
) -> None:
    """Add an email to the active account with this (normalised) address, if there is one, with the same
    statement either way: a caller that must not reveal whether an account exists does the same work."""
    await repo.add_for_active_account(session, new_id(), email, kind, context, now or utcnow())


async def list_outbox(
    session: AsyncSession, *, status: str | None, cursor: str | None, limit: int
) -> Page[OutboxMessage]:
    """The outbox, newest first, optionally of one status; the cursor is the last id of the previous page."""
    rows = await repo.list_messages(session, status=status, before_id=cursor, limit=limit + 1)
    return page_of(rows, limit)


async def resend(session: AsyncSession, message_id: str, actor: Actor) -> OutboxMessage:
    """Queue a sent, failed or logged message again (the same Message-ID and content); audited."""
    message = await repo.requeue(session, message_id, utcnow())
    if message is None:
        if await repo.get(session, message_id) is None:
            raise OutboxMessageNotFound(details={"id": message_id})
        raise OutboxMessageBusy(details={"id": message_id})
    record(
        session,
        actor,
        "mail.resend",
        target_type="outbox_message",
        target_id=message_id,
        details={"kind": message.kind},
    )
    return message
