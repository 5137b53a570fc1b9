"""The admin's mail outbox page: messages with status and errors, filtered; resend through the mail service
(audited as the API's); users are refused."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.models import AuditEvent, OutboxMessage
from tests.console.helpers import console_login, post
from tests.fixtures.users import PASSWORD, TestUser


async def test_the_outbox_lists_messages_and_resends_a_failed_one(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    async with app.state.db.sessions() as s, s.begin():
        [message_id] = (await s.scalars(select(OutboxMessage.id).where(OutboxMessage.user_id == user.id))).all()
        await s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(status="failed", attempts=8, last_error="550 <mailbox unavailable>", subject="Pockity: Verify")
        )
    await console_login(client, admin.email, PASSWORD)
    page = await client.get("/admin/outbox?status=failed")
    assert page.status_code == 200 and f'id="message-{message_id}"' in page.text
    assert "550 &lt;mailbox unavailable&gt;" in page.text and user.email in page.text
    rows = re.findall(r'id="message-([0-9a-z]{26})"', page.text)
    assert rows == [message_id]  # only the failed one
    assert "?token=" not in page.text
    r = await post(client, f"/admin/outbox/{message_id}/resend", {}, "/admin/outbox")
    assert r.status_code == 303 and r.headers["location"] == "/admin/outbox?done=resent"
    async with app.state.db.sessions() as s:
        row = await s.get(OutboxMessage, message_id)
        assert row is not None and row.status == "pending"
        actions = (await s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == message_id))).all()
    assert list(actions) == ["mail.resend"]
    again = await post(client, f"/admin/outbox/{message_id}/resend", {}, "/admin/outbox")
    assert again.status_code == 409 and "still waiting to be sent" in again.text


async def test_users_cannot_see_the_outbox(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, PASSWORD)
    assert (await client.get("/admin/outbox")).status_code == 403
    assert (await post(client, "/admin/outbox/01aaaaaaaaaaaaaaaaaaaaaaaa/resend", {}, "/")).status_code == 403
