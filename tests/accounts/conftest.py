"""Account life-cycle tests: a real SMTP server (aiosmtpd, tests/mail/conftest.py) receives what the mail job
sends, and the links in those emails are followed as a person would."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from pockity.mail.delivery import send_due
from pockity.mail.smtp import SmtpConfig
from pockity.mail.tasks import identity
from tests.fixtures.app import client_for, make_settings, running_app
from tests.mail.conftest import SmtpServer, smtp_server

__all__ = ["smtp_server"]


@pytest.fixture(scope="session")
async def strict_app(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    """The same database, served with REQUIRE_EMAIL_VERIFICATION and REQUIRE_ADMIN_2FA on."""
    settings = make_settings(
        pg_url, tmp_path_factory.mktemp("strict"), require_email_verification=True, require_admin_2fa=True
    )
    async for application in running_app(settings):
        yield application


@pytest.fixture
async def strict(strict_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(strict_app) as c:
        yield c


async def deliver(app: FastAPI, server: SmtpServer) -> list[str]:
    """Run the mail job once against the test SMTP server; the ids it sent."""
    config = SmtpConfig(host=server.host, port=server.port, security="none", timeout=10)
    result = await send_due(app.state.db, config, identity(app.state.settings))
    assert result.failed == [] and result.retried == []
    return result.sent


def texts_to(server: SmtpServer, recipient: str, subject_contains: str) -> list[str]:
    """The plain-text bodies of the messages to `recipient` whose subject contains the words."""
    found = []
    for arrived in server.recorder.to(recipient):
        if subject_contains in str(arrived.message["Subject"]):
            body = arrived.message.get_body(("plain",))
            assert body is not None
            found.append(str(body.get_content()))
    return found


def link_token(text: str, path: str) -> str:
    """The token of the console link to `path` in an email's text."""
    [url] = re.findall(r"https?://\S+" + re.escape(path) + r"\?token=\S+", text)
    parts = urlsplit(url)
    assert parts.path == path
    [token] = parse_qs(parts.query)["token"]
    return token


async def emailed_token(app: FastAPI, server: SmtpServer, recipient: str, subject: str, path: str) -> str:
    await deliver(app, server)
    [text] = texts_to(server, recipient, subject)
    return link_token(text, path)


def data_dir_of(app: FastAPI) -> Path:
    return Path(app.state.settings.data_dir)
