"""Password reset: the same answer and the same work whether or not the address has an account, throttled
per address and per client; the emailed link works once, within its hour, and ends every session."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, update

from pockity.kit.time import utcnow
from pockity.models import AccountToken, LoginThrottle, OutboxMessage
from tests.accounts.conftest import deliver, emailed_token, texts_to
from tests.fixtures.users import PASSWORD, TestUser, login, unique_email
from tests.mail.conftest import SmtpServer

NEW = "my new long passphrase"
SUBJECT = "Reset your password"


async def ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/api/auth/password-reset", json={"email": email})


async def confirm(client: httpx.AsyncClient, token: str, password: str = NEW) -> httpx.Response:
    return await client.post("/api/auth/password-reset/confirm", json={"token": token, "newPassword": password})


async def test_known_and_unknown_addresses_get_the_same_answer_and_only_the_known_one_mail(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    stranger = unique_email("nobody")
    known, unknown = await ask(client, user.email), await ask(client, stranger)
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    assert known.status_code == 202
    malformed = await ask(client, "not even an address")
    assert (malformed.status_code, malformed.json()) == (202, known.json())
    await deliver(app, smtp_server)
    assert len(texts_to(smtp_server, user.email, SUBJECT)) == 1
    assert smtp_server.recorder.to(stranger) == []


async def test_the_link_sets_a_new_password_once_and_signs_out_everywhere(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    assert (await ask(client, user.email.upper())).status_code == 202
    token = await emailed_token(app, smtp_server, user.email, SUBJECT, "/reset-password")
    r = await confirm(client, token)
    assert r.status_code == 200, r.text
    fresh = r.json()["token"]
    assert r.json()["user"]["id"] == user.id and r.json()["user"]["emailVerified"] is True
    old = await client.get("/api/auth/me", headers=user.headers)
    assert old.status_code == 401
    assert (await client.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    assert (await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})).status_code == 401
    assert await login(client, user.email, NEW)
    again = await confirm(client, token, "yet another passphrase")
    assert again.status_code == 403 and again.json()["error"]["code"] == "invalid_link"
    await deliver(app, smtp_server)
    assert len(texts_to(smtp_server, user.email, "password")) == 2  # the reset link, then "password changed"


async def test_a_refused_new_password_keeps_the_link_good(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    await ask(client, user.email)
    token = await emailed_token(app, smtp_server, user.email, SUBJECT, "/reset-password")
    short = await confirm(client, token, "short")
    assert short.status_code == 422 and "characters" in short.json()["error"]["message"]
    assert (await confirm(client, token)).status_code == 200


async def test_an_expired_or_other_purpose_token_is_refused(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    verify_token = await emailed_token(app, smtp_server, user.email, "Verify your email", "/verify-email")
    wrong_kind = await confirm(client, verify_token)
    assert wrong_kind.status_code == 403 and wrong_kind.json()["error"]["code"] == "invalid_link"
    await ask(client, user.email)
    token = await emailed_token(app, smtp_server, user.email, SUBJECT, "/reset-password")
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(
            update(AccountToken)
            .where(AccountToken.purpose == "reset_password")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await confirm(client, token)
    assert expired.status_code == 403 and expired.json()["error"]["code"] == "invalid_link"
    assert (await client.post("/api/auth/verify-email", json={"token": token})).status_code == 403


async def test_another_users_token_resets_only_that_user(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, other_user: TestUser, smtp_server: SmtpServer
) -> None:
    await ask(client, other_user.email)
    token = await emailed_token(app, smtp_server, other_user.email, SUBJECT, "/reset-password")
    r = await confirm(client, token)
    assert r.json()["user"]["id"] == other_user.id
    assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
    assert await login(client, user.email, PASSWORD)


async def test_requests_are_throttled_per_address_known_or_not(client: httpx.AsyncClient, user: TestUser) -> None:
    stranger = unique_email("nobody")
    for address in (user.email, stranger):
        answers = [(await ask(client, address)).status_code for _ in range(4)]
        assert answers == [202, 202, 202, 429], address


async def test_requests_are_throttled_per_client(app: FastAPI, client: httpx.AsyncClient) -> None:
    answers = [(await ask(client, unique_email("spray"))).status_code for _ in range(21)]
    assert answers == [202] * 20 + [429]
    async with app.state.db.sessions() as s:
        keys = (await s.scalars(select(LoginThrottle.key).where(LoginThrottle.key.like("reset_client:%")))).all()
    assert len(keys) == 1


@pytest.fixture
def statements(app: FastAPI) -> Iterator[list[str]]:
    """Every SQL statement the app's engines run while the test is in its block."""
    seen: list[str] = []
    engine = app.state.db.engine.sync_engine

    def note(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    yield seen
    event.remove(engine, "before_cursor_execute", note)


async def test_known_and_unknown_addresses_run_the_same_statements_in_the_same_time(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, statements: list[str]
) -> None:
    stranger = unique_email("nobody")
    runs: dict[str, list[list[str]]] = {"known": [], "unknown": []}
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for _ in range(3):  # within the per-address limit
        for label, address in (("known", user.email), ("unknown", stranger)):
            statements.clear()
            start = time.perf_counter()
            r = await ask(client, address)
            times[label].append(time.perf_counter() - start)
            assert r.status_code == 202
            runs[label].append(list(statements))
    assert runs["known"] == runs["unknown"]
    assert any("INSERT INTO account_tokens" in s for s in runs["known"][0])
    async with app.state.db.sessions() as s:
        written = (
            await s.scalars(select(OutboxMessage.recipient).where(OutboxMessage.kind == "auth.password_reset"))
        ).all()
    assert written == [user.email] * 3
    # No bcrypt, no extra round trip: the medians differ by far less than one password check would take.
    assert abs(statistics.median(times["known"]) - statistics.median(times["unknown"])) < 0.02
