"""A real SMTP server for the mail tests: aiosmtpd on 127.0.0.1 (a free port), recording what arrives and
answering as a test scripts it (a 451 or a 550 for a recipient, a given number of times)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI
from sqlalchemy import delete

from pockity.db import unit_of_work
from pockity.migrate import upgrade
from pockity.models import OutboxMessage
from tests.fixtures.app import make_settings, running_app


@dataclass
class Arrived:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class Recorder:
    """The handler: every accepted message, and scripted answers per recipient (answer, times left)."""

    arrived: list[Arrived] = field(default_factory=list)
    answers: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, recipient: str, reply: str, times: int = 1_000_000) -> None:
        with self.lock:
            self.answers[recipient] = [reply, times]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            scripted = self.answers.get(address)
            if scripted and scripted[1] > 0:
                scripted[1] -= 1
                return str(scripted[0])
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.arrived.append(Arrived(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"

    def to(self, recipient: str) -> list[Arrived]:
        with self.lock:
            return [a for a in self.arrived if recipient in a.recipients]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpServer:
    host: str
    port: int
    recorder: Recorder
    ca_file: Path | None = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", controller.port, recorder)
    finally:
        controller.stop()


@pytest.fixture
def starttls_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """The same server requiring STARTTLS, with a throwaway CA's certificate for 127.0.0.1."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    recorder = Recorder()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=_free_port(), tls_context=context, require_starttls=True
    )
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", controller.port, recorder, ca_file)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
async def sqlite_mail_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    directory = tmp_path_factory.mktemp("mail-sqlite")
    url = f"sqlite+aiosqlite:///{directory}/p.db"
    upgrade(url)
    async for application in running_app(make_settings(url, directory)):
        yield application


@pytest.fixture(params=["postgresql", "sqlite"])
async def mail_app(request: pytest.FixtureRequest, app: FastAPI, sqlite_mail_app: FastAPI) -> AsyncIterator[FastAPI]:
    """The same outbox tests on both databases (SQLite: no FOR UPDATE, BEGIN IMMEDIATE instead)."""
    if request.param == "postgresql":
        yield app
        return
    yield sqlite_mail_app
    async with unit_of_work(sqlite_mail_app.state.db) as session:  # PostgreSQL's tables are truncated
        await session.execute(delete(OutboxMessage))


async def drop_signup_mail(app: FastAPI, user_id: str) -> None:
    """Setup: the new account's verification email is not what these tests count."""
    async with unit_of_work(app.state.db) as session:
        dropped = await session.execute(
            delete(OutboxMessage).where(OutboxMessage.user_id == user_id, OutboxMessage.kind == "auth.verify_email")
        )
    assert dropped.rowcount == 1  # type: ignore[attr-defined]
