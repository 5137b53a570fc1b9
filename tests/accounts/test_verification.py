"""Email verification and email change: signed, single-use, expiring links sent by the mail job and followed
from the email; with REQUIRE_EMAIL_VERIFICATION, keys and storage wait for the proof."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.kit.time import utcnow
from pockity.models import AccountToken, OutboxMessage
from tests.accounts.conftest import deliver, emailed_token, link_token, texts_to
from tests.fixtures.users import PASSWORD, TestUser, login, make_user, unique_email
from tests.mail.conftest import SmtpServer

VERIFY = "Verify your email address"


async def verify(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/auth/verify-email", json={"token": token})


async def test_the_emailed_link_verifies_the_address_once(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    me = await client.get("/api/auth/me", headers=user.headers)
    assert me.json()["emailVerified"] is False
    token = await emailed_token(app, smtp_server, user.email, VERIFY, "/verify-email")
    r = await verify(client, token)
    assert r.status_code == 200 and r.json()["emailVerified"] is True and r.json()["id"] == user.id
    me = await client.get("/api/auth/me", headers=user.headers)
    assert me.json()["emailVerified"] is True
    again = await verify(client, token)
    assert again.status_code == 403 and again.json()["error"]["code"] == "invalid_link"


async def test_no_usable_link_is_stored_anywhere(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    token = await emailed_token(app, smtp_server, user.email, VERIFY, "/verify-email")
    async with app.state.db.sessions() as s:
        outbox = (await s.scalars(select(OutboxMessage).where(OutboxMessage.recipient == user.email))).all()
        tokens = (await s.scalars(select(AccountToken).where(AccountToken.user_id == user.id))).all()
    stored = " ".join(f"{m.context} {m.subject} {m.text_body} {m.html_body}" for m in outbox)
    secret_part = token.split(".", 1)[1]
    assert outbox and tokens and secret_part not in stored
    assert all(secret_part not in t.token_hash and t.token_hash != token for t in tokens)
    assert "{{pockity-action-link}}" in stored  # the body is kept with a placeholder, filled in when sent


async def test_tampered_expired_and_foreign_links_are_refused(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, other_user: TestUser, smtp_server: SmtpServer
) -> None:
    await deliver(app, smtp_server)
    [mine_text] = texts_to(smtp_server, user.email, VERIFY)
    [theirs_text] = texts_to(smtp_server, other_user.email, VERIFY)

    mine, theirs = link_token(mine_text, "/verify-email"), link_token(theirs_text, "/verify-email")
    forged = mine.split(".")[0] + "." + theirs.split(".")[1]  # my id, their signature
    for bad in (forged, mine[:-2] + ("AA" if not mine.endswith("AA") else "BB"), "nonsense", "x" * 199):
        r = await verify(client, bad)
        assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_link", bad
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(
            update(AccountToken)
            .where(AccountToken.user_id == user.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await verify(client, mine)
    assert expired.status_code == 403 and expired.json()["error"]["code"] == "invalid_link"
    assert (await verify(client, theirs)).json()["id"] == other_user.id  # their own link still works
    too_long = await verify(client, "y" * 201)
    assert too_long.status_code == 422


async def test_resending_retires_the_old_link_and_is_throttled(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    first = await emailed_token(app, smtp_server, user.email, VERIFY, "/verify-email")
    for _ in range(3):
        r = await client.post("/api/auth/verify-email/resend", headers=user.headers)
        assert r.status_code == 202, r.text
    throttled = await client.post("/api/auth/verify-email/resend", headers=user.headers)
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "verification_throttled"
    assert int(throttled.headers["retry-after"]) > 0
    await deliver(app, smtp_server)
    texts = texts_to(smtp_server, user.email, VERIFY)
    assert len(texts) == 4

    assert (await verify(client, first)).status_code == 403
    assert (await verify(client, link_token(texts[1], "/verify-email"))).status_code == 403
    assert (await verify(client, link_token(texts[-1], "/verify-email"))).status_code == 200
    done = await client.post("/api/auth/verify-email/resend", headers=user.headers)
    assert done.status_code == 409 and done.json()["error"]["code"] == "email_already_verified"


async def test_keys_and_storage_wait_for_verification_when_required(
    strict_app: FastAPI, strict: httpx.AsyncClient, smtp_server: SmtpServer
) -> None:
    user = await make_user(strict, "unverified")
    r = await strict.post("/api/apikeys", json={"name": "k"}, headers=user.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "email_not_verified"
    listing = await strict.get("/api/storage/files", headers=user.headers)
    assert listing.status_code == 403 and listing.json()["error"]["code"] == "email_not_verified"
    me = await strict.get("/api/auth/me", headers=user.headers)  # signing in and reading the account work
    assert me.status_code == 200 and me.json()["emailVerified"] is False
    token = await emailed_token(strict_app, smtp_server, user.email, VERIFY, "/verify-email")
    assert (await verify(strict, token)).status_code == 200
    r = await strict.post("/api/apikeys", json={"name": "k"}, headers=user.headers)
    assert r.status_code == 201, r.text
    listing = await strict.get("/api/storage/files", headers=user.headers)
    assert listing.status_code == 200, listing.text


async def test_keys_work_unverified_when_not_required(client: httpx.AsyncClient, user: TestUser) -> None:
    r = await client.post("/api/apikeys", json={"name": "k"}, headers=user.headers)
    assert r.status_code == 201, r.text


async def test_changing_the_email_takes_effect_when_the_new_address_confirms(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    new = unique_email("moved")
    r = await client.post("/api/auth/email", json={"newEmail": new.upper(), "password": PASSWORD}, headers=user.headers)
    assert r.status_code == 202, r.text
    me = await client.get("/api/auth/me", headers=user.headers)
    assert me.json()["email"] == user.email  # not yet
    token = await emailed_token(app, smtp_server, new, "Confirm your new email address", "/confirm-email")
    [notice] = texts_to(smtp_server, user.email, "Your email address is being changed")
    assert new in notice and "?token=" not in notice
    r = await verify(client, token)
    assert r.status_code == 200 and r.json()["email"] == new and r.json()["emailVerified"] is True
    assert (await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})).status_code == 401
    assert await login(client, new)
    assert (await verify(client, token)).status_code == 403


async def test_an_email_change_needs_the_password_and_a_free_address(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, other_user: TestUser
) -> None:
    wrong = await client.post(
        "/api/auth/email", json={"newEmail": unique_email(), "password": "not it at all"}, headers=user.headers
    )
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password"
    taken = await client.post(
        "/api/auth/email", json={"newEmail": other_user.email, "password": PASSWORD}, headers=user.headers
    )
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "email_taken"
    same = await client.post(
        "/api/auth/email", json={"newEmail": user.email, "password": PASSWORD}, headers=user.headers
    )
    assert same.status_code == 409 and same.json()["error"]["code"] == "email_unchanged"
    bad = await client.post(
        "/api/auth/email", json={"newEmail": "not an address", "password": PASSWORD}, headers=user.headers
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_email"
    async with app.state.db.sessions() as s:
        pending = (await s.scalars(select(AccountToken).where(AccountToken.purpose == "change_email"))).all()
    assert pending == []


async def test_an_address_taken_meanwhile_fails_the_confirmation_cleanly(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, smtp_server: SmtpServer
) -> None:
    new = unique_email("race")
    r = await client.post("/api/auth/email", json={"newEmail": new, "password": PASSWORD}, headers=user.headers)
    assert r.status_code == 202
    token = await emailed_token(app, smtp_server, new, "Confirm your new email address", "/confirm-email")
    taker = await client.post("/api/auth/register", json={"email": new, "password": PASSWORD, "name": "t"})
    assert taker.status_code == 201
    r = await verify(client, token)
    assert r.status_code == 409 and r.json()["error"]["code"] == "email_taken"
    me = await client.get("/api/auth/me", headers=user.headers)
    assert me.json()["email"] == user.email
