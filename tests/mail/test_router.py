"""The admin outbox: list by status, resend (audited); admins only."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from pockity.db import unit_of_work
from pockity.mail import service
from pockity.mail.delivery import send_due
from pockity.models import AuditEvent, OutboxMessage, OutboxStatus
from tests.fixtures.users import TestUser, unique_email
from tests.mail.conftest import SmtpServer
from tests.mail.test_delivery import IDENTITY, _config


async def _failed_message(app: FastAPI, server: SmtpServer, to: str) -> str:
    server.recorder.answer(to, "550 5.1.1 No such user", times=1)
    async with unit_of_work(app.state.db) as session:
        message = service.enqueue(session, kind="test.notice", context={"title": "T", "body": "B"}, recipient=to)
        await session.flush()
        message_id = message.id
    assert (await send_due(app.state.db, _config(server), IDENTITY)).failed == [message_id]
    return message_id


async def test_admins_list_the_outbox_and_resend_a_failed_message(
    app: FastAPI, client: httpx.AsyncClient, admin: TestUser, smtp_server: SmtpServer
) -> None:
    to = unique_email("bounce")
    message_id = await _failed_message(app, smtp_server, to)

    r = await client.get("/api/admin/outbox", params={"status": "failed"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    [item] = [m for m in r.json()["items"] if m["id"] == message_id]
    assert item["recipient"] == to and item["status"] == "failed" and "550" in item["lastError"]
    assert item["messageId"] == f"<{message_id}@pockity.test>" and "textBody" not in item
    sent = await client.get("/api/admin/outbox", params={"status": "sent"}, headers=admin.headers)
    assert sent.status_code == 200 and message_id not in [m["id"] for m in sent.json()["items"]]

    r = await client.post(f"/api/admin/outbox/{message_id}/resend", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0 and r.json()["lastError"] is None
    again = await client.post(f"/api/admin/outbox/{message_id}/resend", headers=admin.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "outbox_message_busy"
    async with app.state.db.sessions() as session:
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.target_id == message_id))).all()
    assert [(e.action, e.actor_id) for e in events] == [("mail.resend", admin.id)]

    # The relay accepts it now: the same message, the same Message-ID.
    assert (await send_due(app.state.db, _config(smtp_server), IDENTITY)).sent == [message_id]
    [arrived] = smtp_server.recorder.to(to)
    assert arrived.message["Message-ID"] == f"<{message_id}@pockity.test>"
    async with app.state.db.sessions() as session:
        row = (await session.scalars(select(OutboxMessage).where(OutboxMessage.id == message_id))).one()
    assert row.status == OutboxStatus.SENT


async def test_unknown_message_is_404_and_users_are_refused(
    client: httpx.AsyncClient, admin: TestUser, user: TestUser
) -> None:
    r = await client.post("/api/admin/outbox/nope/resend", headers=admin.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "outbox_message_not_found"
    assert (await client.get("/api/admin/outbox", headers=user.headers)).status_code == 403
    assert (await client.post("/api/admin/outbox/nope/resend", headers=user.headers)).status_code == 403
    assert (await client.get("/api/admin/outbox")).status_code == 401
    bad = await client.get("/api/admin/outbox", params={"status": "lost"}, headers=admin.headers)
    assert bad.status_code == 422
