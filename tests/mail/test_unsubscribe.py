"""Unsubscribe links on optional notices: a confirm page, a one-click POST, later notices of that kind unsent."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from pockity.db import unit_of_work
from pockity.mail.delivery import send_due
from pockity.mail.links import unsubscribe_key, unsubscribe_token
from pockity.mail.tasks import identity
from pockity.models import OutboxMessage, OutboxStatus
from pockity.notifications import service as notifications
from tests.fixtures.app import client_for
from tests.fixtures.users import TestUser, make_user
from tests.mail.conftest import SmtpServer, drop_signup_mail
from tests.mail.test_delivery import _config


async def _notify(app: FastAPI, user: TestUser, kind: str, title: str) -> None:
    async with unit_of_work(app.state.db) as session:
        notifications.notify(session, user.id, kind, title, "Body.", {})


async def test_an_optional_notice_can_be_unsubscribed_from_and_essential_ones_still_arrive(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    await drop_signup_mail(app, user.id)
    sender = identity(app.state.settings)
    await _notify(app, user, "usage.alert", "Your storage is full")
    assert len((await send_due(app.state.db, _config(smtp_server), sender)).sent) == 1
    [alert] = smtp_server.recorder.to(user.email)
    header = alert.message["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">")
    assert alert.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = header[1:-1]
    text = alert.message.get_body(("plain",))
    html = alert.message.get_body(("html",))
    assert text is not None and html is not None
    assert link in text.get_content() and link.replace("&", "&amp;") in html.get_content()
    parts = urlsplit(link)
    url = f"{parts.path}?{parts.query}"

    page = await client.get(url)  # following the link changes nothing yet
    assert page.status_code == 200 and '<form method="post">' in page.text and "storage usage alerts" in page.text
    await _notify(app, user, "usage.alert", "Still full")
    assert len((await send_due(app.state.db, _config(smtp_server), sender)).sent) == 1

    done = await client.post(url, data={"List-Unsubscribe": "One-Click"})  # what a mail client's button sends
    assert done.status_code == 200 and "no longer receive" in done.text
    assert (await client.post(url)).status_code == 200  # twice is fine

    await _notify(app, user, "usage.alert", "Full again")
    await _notify(app, user, "billing.past_due", "Past due")
    result = await send_due(app.state.db, _config(smtp_server), sender)
    assert len(result.sent) == 1
    subjects = [a.message["Subject"] for a in smtp_server.recorder.to(user.email)]
    assert subjects == ["Pockity: Your storage is full", "Pockity: Still full", "Pockity: Past due"]
    assert smtp_server.recorder.to(user.email)[-1].message["List-Unsubscribe"] is None
    async with app.state.db.sessions() as session:
        statuses = {
            m.subject or m.context["title"]: m.status
            for m in await session.scalars(select(OutboxMessage).where(OutboxMessage.user_id == user.id))
        }
    assert statuses["Full again"] == OutboxStatus.UNSUBSCRIBED
    assert statuses["Pockity: Past due"] == OutboxStatus.SENT
    # The notifications themselves are still there.
    r = await client.get("/api/notifications", headers=user.headers)
    assert [n["title"] for n in r.json()["items"]][:2] == ["Past due", "Full again"]


async def test_forged_and_essential_kind_tokens_are_refused(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser
) -> None:
    key = unsubscribe_key(app.state.settings.jwt_secret)
    good = unsubscribe_token(key, user.id, "usage.alert")
    for token in (
        unsubscribe_token(b"another key", user.id, "usage.alert"),
        unsubscribe_token(key, user.id, "billing.past_due"),  # billing notices cannot be turned off
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "nonsense",
    ):
        for method in ("GET", "POST"):
            r = await client.request(method, "/api/mail/unsubscribe", params={"token": token})
            assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_signature", (method, token)
    assert (await client.get("/api/mail/unsubscribe", params={"token": good})).status_code == 200


async def test_unsubscribing_holds_on_both_databases(mail_app: FastAPI, smtp_server: SmtpServer) -> None:
    """The preference upsert and the claim's suppression, on PostgreSQL and SQLite."""
    async with client_for(mail_app) as api:
        new = await make_user(api, "prefs")
        await drop_signup_mail(mail_app, new.id)
        token = unsubscribe_token(unsubscribe_key(mail_app.state.settings.jwt_secret), new.id, "usage.alert")
        r = await api.post("/api/mail/unsubscribe", params={"token": token})
        assert r.status_code == 200, r.text
        assert (await api.post("/api/mail/unsubscribe", params={"token": token})).status_code == 200
    await _notify(mail_app, new, "usage.alert", "Full")
    await _notify(mail_app, new, "billing.invoice", "Invoice")
    result = await send_due(mail_app.state.db, _config(smtp_server), identity(mail_app.state.settings))
    assert len(result.sent) == 1 and result.claimed == 1
    assert [a.message["Subject"] for a in smtp_server.recorder.to(new.email)] == ["Pockity: Invoice"]
    async with mail_app.state.db.sessions() as session:
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.user_id == new.id))).all()
    assert sorted(m.status for m in rows) == [OutboxStatus.SENT, OutboxStatus.UNSUBSCRIBED]
