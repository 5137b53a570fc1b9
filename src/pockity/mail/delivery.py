"""Sending the outbox. A flow module: it takes the Database and commits between its steps, because the SMTP
conversation must happen outside any transaction (a slow relay would hold locks and connections, and a
message must never be sent by a transaction that could still roll back).

1. Claim: one UPDATE ... RETURNING moves due messages to `sending` with a claim deadline and counts the
   attempt (committed, so another runner skips them); messages claimed for the first time are rendered and
   their content stored with them, so retries and resends send the same message with the same Message-ID.
2. Send each one over one SMTP connection (no transaction open).
3. Record the outcome with a conditional UPDATE that holds only while this runner's claim does: sent;
   a temporary failure back to `pending` with exponential backoff; a permanent one (or the last attempt)
   `failed` with the relay's answer for an admin.

A runner that dies between 2 and 3 leaves its claim to lapse (`claimed_until`); the message is then sent again
(at-least-once: the receiver sees the same Message-ID twice at worst). A live runner never lets that happen: a
message whose claim would not outlast one more SMTP conversation (a slow relay late in a batch) is given back
unsent instead."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.db import Database, unit_of_work
from pockity.kit.time import utcnow
from pockity.mail import repository as repo
from pockity.mail.links import OPTIONAL_KINDS
from pockity.mail.rendering import Identity, build, header_id, render, unsubscribe_url, with_action_link
from pockity.mail.smtp import PermanentFailure, SmtpConfig, SmtpConnection, TemporaryFailure
from pockity.models import OutboxMessage, OutboxStatus

log = logging.getLogger("pockity.mail")

MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=6)
CLAIM_LEASE = timedelta(minutes=5)
# One message's SMTP conversation is at most this many operations, each bounded by the timeout.
_OPERATIONS_PER_MESSAGE = 8


def backoff(attempt: int) -> timedelta:
    """The wait after failed attempt `attempt` (1-based): 30 s, 1 min, 2 min ... at most 6 h."""
    wait: timedelta = BACKOFF_BASE * 2 ** min(attempt - 1, 20)
    return min(wait, BACKOFF_MAX)


@dataclass
class DeliveryResult:
    sent: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)
    given_back: list[str] = field(default_factory=list)

    @property
    def claimed(self) -> int:
        return len(self.sent) + len(self.retried) + len(self.failed) + len(self.logged) + len(self.given_back)


async def _claim(
    db: Database, identity: Identity, now: datetime, claimed_until: datetime, limit: int
) -> list[OutboxMessage]:
    async with unit_of_work(db) as session:
        messages = await repo.claim_due(session, now, claimed_until, limit)
        session.expunge_all()  # plain values from here on: the session ends before anything is sent
        optional = [m.id for m in messages if m.kind in OPTIONAL_KINDS and m.user_id is not None]
        suppressed = set(await repo.suppress_unsubscribed(session, optional))
        messages = [m for m in messages if m.id not in suppressed]
        ready = []
        for message in messages:
            if message.subject is None and not await _render(session, message, identity):
                continue
            ready.append(message)
    return ready


async def _render(session: AsyncSession, message: OutboxMessage, identity: Identity) -> bool:
    """Render a message claimed for the first time and store what it will send; a message that cannot be
    rendered is failed at once (left pending it would fail every run and hold up the batch)."""
    link = unsubscribe_url(identity, message.user_id, message.kind)
    try:
        rendered = render(message.kind, message.context, identity, link)
    except Exception as exc:  # a template's error is this message's, never the job's
        log.exception("mail %s (%s) cannot be rendered", message.id, message.kind)
        await repo.finish_attempt(
            session, message.id, message.attempts, status=OutboxStatus.FAILED, last_error=f"rendering: {exc}"[:2000]
        )
        return False
    message.subject, message.text_body = rendered.subject, rendered.text_body
    message.html_body, message.message_id = rendered.html_body, header_id(message.id, identity)
    await repo.store_rendering(
        session,
        message.id,
        subject=rendered.subject,
        text_body=rendered.text_body,
        html_body=rendered.html_body,
        header_id=message.message_id,
    )
    return True


async def _finish(db: Database, message: OutboxMessage, **values: object) -> bool:
    async with unit_of_work(db) as session:
        kept = await repo.finish_attempt(session, message.id, message.attempts, **values)
    if not kept:
        log.warning("mail %s: claim lapsed before its outcome was recorded", message.message_id)
    return kept


async def send_due(
    db: Database, smtp: SmtpConfig | None, identity: Identity, *, now: datetime | None = None, limit: int = 50
) -> DeliveryResult:
    """Claim the due messages and send them (or, with no SMTP server configured, log them and keep them)."""
    result = DeliveryResult()
    now = now or utcnow()
    lease = CLAIM_LEASE if smtp is None else max(CLAIM_LEASE, timedelta(seconds=smtp.timeout * 40))
    messages = await _claim(db, identity, now, now + lease, limit)
    if not messages:
        return result
    if smtp is None:
        for message in messages:
            # Never the body at info level: it may carry a sign-in or reset link.
            log.info(
                "mail not sent (no SMTP_HOST): to=%s kind=%s id=%s", message.recipient, message.kind, message.message_id
            )
            log.debug(
                "mail %s body:\n%s",
                message.message_id,
                with_action_link(message.text_body or "", message.context, identity),
            )
            if await _finish(db, message, status=OutboxStatus.LOGGED):
                result.logged.append(message.id)
        return result
    margin = timedelta(seconds=smtp.timeout * _OPERATIONS_PER_MESSAGE)
    async with SmtpConnection(smtp) as connection:
        for message in messages:
            assert message.claimed_until is not None
            if utcnow() + margin >= message.claimed_until:
                await _give_back(db, message, result)
            else:
                await _deliver(db, connection, identity, message, result)
    return result


async def _give_back(db: Database, message: OutboxMessage, result: DeliveryResult) -> None:
    """Return a claimed message unsent (this attempt not counted): its claim could lapse while it is sent."""
    if await _finish(db, message, status=OutboxStatus.PENDING, attempts=message.attempts - 1, next_attempt_at=utcnow()):
        result.given_back.append(message.id)


async def _deliver(
    db: Database, connection: SmtpConnection, identity: Identity, message: OutboxMessage, result: DeliveryResult
) -> None:
    assert message.subject is not None and message.message_id is not None
    mime = build(
        recipient=message.recipient,
        subject=message.subject,
        text_body=with_action_link(message.text_body or "", message.context, identity),
        html_body=with_action_link(message.html_body or "", message.context, identity),
        message_id=message.message_id,
        identity=identity,
        unsubscribe=unsubscribe_url(identity, message.user_id, message.kind),
    )
    try:
        await connection.send(mime)
    except PermanentFailure as exc:
        log.warning("mail %s to %s refused: %s", message.message_id, message.recipient, exc)
        if await _finish(db, message, status=OutboxStatus.FAILED, last_error=str(exc)[:2000]):
            result.failed.append(message.id)
        return
    except TemporaryFailure as exc:
        last = message.attempts >= MAX_ATTEMPTS
        log.warning("mail %s attempt %d failed: %s", message.message_id, message.attempts, exc)
        values: dict[str, object] = {"last_error": str(exc)[:2000]}
        if last:
            values["status"] = OutboxStatus.FAILED
        else:
            values.update(status=OutboxStatus.PENDING, next_attempt_at=utcnow() + backoff(message.attempts))
        if await _finish(db, message, **values):
            (result.failed if last else result.retried).append(message.id)
        return
    log.info("mail sent: to=%s kind=%s id=%s", message.recipient, message.kind, message.message_id)
    if await _finish(db, message, status=OutboxStatus.SENT, sent_at=utcnow(), last_error=None):
        result.sent.append(message.id)
