"""The outbox against a real SMTP server (aiosmtpd): what arrives, once, with retries and refusals recorded."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.db import Database, unit_of_work
from pockity.kit.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.mail import service
from pockity.mail.delivery import MAX_ATTEMPTS, backoff, send_due
from pockity.mail.rendering import Identity
from pockity.mail.smtp import SmtpConfig
from pockity.mail.tasks import send_mail
from pockity.models import OutboxMessage, OutboxStatus
from tests.fixtures.users import TestUser, unique_email
from tests.mail.conftest import SmtpServer, drop_signup_mail

IDENTITY = Identity(
    product_name="Pockity",
    console_url="https://console.example",
    email_from="Pockity <mail@pockity.test>",
    action_key=b"k" * 32,  # new accounts' verification emails carry an action link
)


def _config(server: SmtpServer, security: str = "none") -> SmtpConfig:
    return SmtpConfig(host=server.host, port=server.port, security=security, ca_file=server.ca_file, timeout=10)  # type: ignore[arg-type]


async def _enqueue(db: Database, recipient: str, title: str = "Hello") -> str:
    async with unit_of_work(db) as session:
        message = service.enqueue(
            session, kind="test.notice", context={"title": title, "body": "Some words."}, recipient=recipient
        )
        await session.flush()
        return message.id


async def _row(db: Database, message_id: str) -> OutboxMessage:
    async with db.sessions() as session:
        return (await session.scalars(select(OutboxMessage).where(OutboxMessage.id == message_id))).one()


async def _make_due(db: Database, message_id: str) -> None:
    async with unit_of_work(db) as session:
        row = (await session.scalars(select(OutboxMessage).where(OutboxMessage.id == message_id))).one()
        row.next_attempt_at = utcnow()


async def test_a_message_arrives_with_its_subject_bodies_and_a_stable_message_id(
    mail_app: FastAPI, smtp_server: SmtpServer
) -> None:
    db = mail_app.state.db
    to = unique_email("mail")
    message_id = await _enqueue(db, to, "Your storage is full")
    result = await send_due(db, _config(smtp_server), IDENTITY)
    assert result.sent == [message_id]
    arrived = smtp_server.recorder.to(to)
    assert len(arrived) == 1 and arrived[0].recipients == [to] and arrived[0].sender == "mail@pockity.test"
    mail = arrived[0].message
    assert mail["Subject"] == "Pockity: Your storage is full"
    assert mail["Message-ID"] == f"<{message_id}@pockity.test>"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert "Some words." in text.get_content() and "https://console.example/" in text.get_content()
    assert "<p>Some words.</p>" in html.get_content() and 'href="https://console.example/"' in html.get_content()
    row = await _row(db, message_id)
    assert row.status == OutboxStatus.SENT and row.attempts == 1 and row.sent_at is not None
    assert row.message_id == mail["Message-ID"] and row.subject == mail["Subject"]
    # Nothing is due any more: a second run sends nothing.
    assert (await send_due(db, _config(smtp_server), IDENTITY)).claimed == 0
    assert len(smtp_server.recorder.to(to)) == 1


async def test_the_users_address_is_read_when_the_message_is_written(
    app: FastAPI, user: TestUser, smtp_server: SmtpServer
) -> None:
    await drop_signup_mail(app, user.id)
    db = app.state.db
    async with unit_of_work(db) as session:
        message = service.enqueue(session, kind="test.notice", context={"title": "Hi", "body": "b"}, user_id=user.id)
        await session.flush()
        message_id = message.id
    assert (await _row(db, message_id)).recipient == user.email
    assert (await send_due(db, _config(smtp_server), IDENTITY)).sent == [message_id]
    assert [a.recipients for a in smtp_server.recorder.to(user.email)] == [[user.email]]


async def test_a_rolled_back_transaction_sends_nothing(mail_app: FastAPI, smtp_server: SmtpServer) -> None:
    db = mail_app.state.db
    to = unique_email("rollback")
    with pytest.raises(RuntimeError):
        async with unit_of_work(db) as session:
            service.enqueue(session, kind="test.notice", context={"title": "No", "body": "b"}, recipient=to)
            await session.flush()  # the row existed inside the transaction
            assert await session.scalar(select(OutboxMessage.id).where(OutboxMessage.recipient == to))
            raise RuntimeError("the event failed")
    assert (await send_due(db, _config(smtp_server), IDENTITY)).claimed == 0
    assert smtp_server.recorder.arrived == []


async def test_two_runners_at_once_send_each_message_once(mail_app: FastAPI, smtp_server: SmtpServer) -> None:
    db = mail_app.state.db
    recipients = [unique_email(f"once{i}") for i in range(30)]
    ids = [await _enqueue(db, to) for to in recipients]
    results = await asyncio.gather(
        *(send_due(db, _config(smtp_server), IDENTITY, limit=5) for _ in range(4)),
        *(send_due(db, _config(smtp_server), IDENTITY, limit=5) for _ in range(4)),
    )
    sent = [i for r in results for i in r.sent]
    assert len(sent) == len(set(sent))  # no runner sent what another had
    # Whatever the first round left is sent by the next runs; each message arrives exactly once.
    while len(sent) < len(ids):
        more = await asyncio.gather(*(send_due(db, _config(smtp_server), IDENTITY, limit=5) for _ in range(2)))
        assert sum(r.claimed for r in more) > 0
        sent += [i for r in more for i in r.sent]
    assert sorted(sent) == sorted(ids)
    for to in recipients:
        assert len(smtp_server.recorder.to(to)) == 1, to
    assert len(smtp_server.recorder.arrived) == len(recipients)


async def test_a_temporary_failure_is_retried_with_backoff_and_delivered_later(
    mail_app: FastAPI, smtp_server: SmtpServer
) -> None:
    db = mail_app.state.db
    to = unique_email("later")
    smtp_server.recorder.answer(to, "451 4.3.0 Try again later", times=2)
    message_id = await _enqueue(db, to)

    first = await send_due(db, _config(smtp_server), IDENTITY)
    assert first.retried == [message_id]
    row = await _row(db, message_id)
    assert row.status == OutboxStatus.PENDING and row.attempts == 1 and "451" in (row.last_error or "")
    assert timedelta(seconds=25) < row.next_attempt_at - utcnow() <= backoff(1)
    # Not due before its backoff has passed.
    assert (await send_due(db, _config(smtp_server), IDENTITY)).claimed == 0

    await _make_due(db, message_id)
    assert (await send_due(db, _config(smtp_server), IDENTITY)).retried == [message_id]
    row = await _row(db, message_id)
    assert row.attempts == 2 and backoff(1) < row.next_attempt_at - utcnow() <= backoff(2)

    await _make_due(db, message_id)
    assert (await send_due(db, _config(smtp_server), IDENTITY)).sent == [message_id]
    row = await _row(db, message_id)
    assert row.status == OutboxStatus.SENT and row.attempts == 3 and row.last_error is None
    arrived = smtp_server.recorder.to(to)
    assert len(arrived) == 1 and arrived[0].message["Message-ID"] == f"<{message_id}@pockity.test>"


async def test_a_permanent_refusal_is_recorded_as_failed(mail_app: FastAPI, smtp_server: SmtpServer) -> None:
    db = mail_app.state.db
    to = unique_email("nobody")
    smtp_server.recorder.answer(to, "550 5.1.1 No such user")
    message_id = await _enqueue(db, to)
    assert (await send_due(db, _config(smtp_server), IDENTITY)).failed == [message_id]
    row = await _row(db, message_id)
    assert row.status == OutboxStatus.FAILED and row.attempts == 1
    assert row.last_error is not None and "550" in row.last_error and "No such user" in row.last_error
    await _make_due(db, message_id)
    assert (await send_due(db, _config(smtp_server), IDENTITY)).claimed == 0
    assert smtp_server.recorder.arrived == []


async def test_an_unreachable_server_is_a_temporary_failure_until_the_last_attempt(
    mail_app: FastAPI, smtp_server: SmtpServer
) -> None:
    db = mail_app.state.db
    message_id = await _enqueue(db, unique_email("down"))
    closed = SmtpConfig(host="127.0.0.1", port=1, security="none", timeout=5)
    assert (await send_due(db, closed, IDENTITY)).retried == [message_id]
    row = await _row(db, message_id)
    assert row.status == OutboxStatus.PENDING and row.last_error
    async with unit_of_work(db) as session:
        stored = (await session.scalars(select(OutboxMessage).where(OutboxMessage.id == message_id))).one()
        stored.attempts, stored.next_attempt_at = MAX_ATTEMPTS - 1, utcnow()
    assert (await send_due(db, closed, IDENTITY)).failed == [message_id]
    assert (await _row(db, message_id)).status == OutboxStatus.FAILED


async def test_a_lapsed_claim_is_taken_again(mail_app: FastAPI, smtp_server: SmtpServer) -> None:
    """A runner that died after claiming: once its claim lapses the message is sent by another."""
    db = mail_app.state.db
    to = unique_email("lapsed")
    message_id = await _enqueue(db, to)
    async with unit_of_work(db) as session:
        stored = (await session.scalars(select(OutboxMessage).where(OutboxMessage.id == message_id))).one()
        stored.status, stored.claimed_until, stored.attempts = OutboxStatus.SENDING, utcnow() + timedelta(minutes=1), 1
    assert (await send_due(db, _config(smtp_server), IDENTITY)).claimed == 0
    async with unit_of_work(db) as session:
        stored = (await session.scalars(select(OutboxMessage).where(OutboxMessage.id == message_id))).one()
        stored.claimed_until = utcnow() - timedelta(seconds=1)
    assert (await send_due(db, _config(smtp_server), IDENTITY)).sent == [message_id]
    assert len(smtp_server.recorder.to(to)) == 1 and (await _row(db, message_id)).attempts == 2


async def test_starttls_with_a_private_ca(mail_app: FastAPI, starttls_server: SmtpServer) -> None:
    db = mail_app.state.db
    to = unique_email("tls")
    message_id = await _enqueue(db, to)
    assert (await send_due(db, _config(starttls_server, "starttls"), IDENTITY)).sent == [message_id]
    assert len(starttls_server.recorder.to(to)) == 1


async def test_without_starttls_the_server_refuses_and_it_is_retried(
    mail_app: FastAPI, starttls_server: SmtpServer
) -> None:
    db = mail_app.state.db
    message_id = await _enqueue(db, unique_email("plain"))
    assert (await send_due(db, _config(starttls_server, "none"), IDENTITY)).claimed == 1
    assert starttls_server.recorder.arrived == []
    row = await _row(db, message_id)
    assert row.status in (OutboxStatus.PENDING, OutboxStatus.FAILED) and row.last_error


async def test_the_job_with_no_smtp_host_logs_and_keeps_the_message(
    mail_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    db = mail_app.state.db
    to = unique_email("logged")
    async with unit_of_work(db) as session:
        message = service.enqueue(
            session, kind="test.notice", context={"title": "Reset", "body": "secret-token-123"}, recipient=to
        )
        await session.flush()
        message_id = message.id
    settings = mail_app.state.settings.model_copy(update={"smtp_host": None})
    ctx = JobContext(db=db, storage=mail_app.state.storage, settings=settings)
    with caplog.at_level(logging.INFO, logger="pockity.mail"):
        result = await send_mail(ctx)
    assert message_id in result.logged
    row = await _row(db, message_id)
    assert row.status == OutboxStatus.LOGGED and row.message_id is not None
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any(to in line and "test.notice" in line and row.message_id in line for line in info)
    assert not any("secret-token-123" in line for line in info)


async def test_the_job_sends_through_the_configured_server(mail_app: FastAPI, smtp_server: SmtpServer) -> None:
    db = mail_app.state.db
    to = unique_email("job")
    message_id = await _enqueue(db, to)
    settings = mail_app.state.settings.model_copy(
        update={
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_security": "none",
            "email_from": "Ops <ops@pockity.test>",
        }
    )
    result = await send_mail(JobContext(db=db, storage=mail_app.state.storage, settings=settings))
    assert message_id in result.sent
    arrived = smtp_server.recorder.to(to)
    assert len(arrived) == 1 and arrived[0].message["From"] == "Ops <ops@pockity.test>"


async def test_a_claim_too_short_for_another_conversation_is_given_back_unsent(
    mail_app: FastAPI, smtp_server: SmtpServer
) -> None:
    """Late in a slow batch: a message whose claim would lapse during its SMTP conversation is not sent
    (another runner could take it meanwhile) but returned, its attempt not counted."""
    db = mail_app.state.db
    to = unique_email("late")
    config = _config(smtp_server)  # timeout 10 s: a 400 s claim, 80 s needed per message
    claimed_at = utcnow() - timedelta(seconds=380)  # the claim taken by that run ends 20 s from now
    async with unit_of_work(db) as session:
        message = service.enqueue(
            session, kind="test.notice", context={"title": "T", "body": "B"}, recipient=to, now=claimed_at
        )
        await session.flush()
        message_id = message.id
    assert (await send_due(db, config, IDENTITY, now=claimed_at)).given_back == [message_id]
    assert smtp_server.recorder.arrived == []
    row = await _row(db, message_id)
    assert row.status == OutboxStatus.PENDING and row.attempts == 0 and row.claimed_until is None
    assert (await send_due(db, config, IDENTITY)).sent == [message_id]
    assert len(smtp_server.recorder.to(to)) == 1 and (await _row(db, message_id)).attempts == 1


async def test_a_message_that_cannot_be_rendered_fails_alone(mail_app: FastAPI, smtp_server: SmtpServer) -> None:
    db = mail_app.state.db
    broken_to, fine_to = unique_email("broken"), unique_email("fine")
    async with unit_of_work(db) as session:
        broken = service.enqueue(session, kind="test.notice", context={"body": "no title"}, recipient=broken_to)
        await session.flush()
        broken_id = broken.id
    fine_id = await _enqueue(db, fine_to)
    assert (await send_due(db, _config(smtp_server), IDENTITY)).sent == [fine_id]
    row = await _row(db, broken_id)
    assert row.status == OutboxStatus.FAILED and (row.last_error or "").startswith("rendering: ")
    assert "title" in (row.last_error or "") and row.subject is None
    assert smtp_server.recorder.to(broken_to) == [] and len(smtp_server.recorder.to(fine_to)) == 1
