"""Every notification is also an email to its user, written in the same unit of work."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.db import unit_of_work
from pockity.mail.delivery import send_due
from pockity.models import OutboxMessage
from pockity.notifications import service as notifications
from tests.fixtures.users import TestUser
from tests.mail.conftest import SmtpServer, drop_signup_mail
from tests.mail.test_delivery import IDENTITY, _config


async def test_a_notification_is_emailed_to_its_user(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    await drop_signup_mail(app, user.id)
    async with unit_of_work(app.state.db) as session:
        notifications.notify(
            session, user.id, "billing.past_due", "Your plan is past due", "Pay by 2030-01-08.", {"invoiceId": "i1"}
        )
    r = await client.get("/api/notifications", headers=user.headers)
    assert [n["title"] for n in r.json()["items"]] == ["Your plan is past due"]
    result = await send_due(app.state.db, _config(smtp_server), IDENTITY)
    assert len(result.sent) == 1
    [arrived] = smtp_server.recorder.to(user.email)
    assert arrived.message["Subject"] == "Pockity: Your plan is past due"
    text = arrived.message.get_body(("plain",))
    assert text is not None and "Pay by 2030-01-08." in text.get_content()
    async with app.state.db.sessions() as session:
        row = (await session.scalars(select(OutboxMessage).where(OutboxMessage.id == result.sent[0]))).one()
    assert (row.user_id, row.kind, row.context["data"]) == (user.id, "billing.past_due", {"invoiceId": "i1"})


async def test_a_notification_rolled_back_sends_no_email(app: FastAPI, user: TestUser, smtp_server: SmtpServer) -> None:
    await drop_signup_mail(app, user.id)
    with pytest.raises(RuntimeError):
        async with unit_of_work(app.state.db) as session:
            notifications.notify(session, user.id, "usage.alert", "Full", "Full.", {})
            await session.flush()
            assert await session.scalar(select(OutboxMessage.id).where(OutboxMessage.user_id == user.id))
            raise RuntimeError("the job failed after notifying")
    assert (await send_due(app.state.db, _config(smtp_server), IDENTITY)).claimed == 0
    assert smtp_server.recorder.arrived == []
