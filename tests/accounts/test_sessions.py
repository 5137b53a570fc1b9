"""Sign-in sessions: every login token names a session; a person lists theirs and signs out one or all, and
disabling an account or changing its password ends them all, at once, in every process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.auth.tasks import forget_ended_sessions
from pockity.kit import jwt
from pockity.kit.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.models import AuditEvent, AuthSession
from tests.accounts.conftest import deliver, texts_to
from tests.fixtures.app import TEST_JWT_SECRET, client_for, make_settings, running_app
from tests.fixtures.users import PASSWORD, TestUser, make_admin
from tests.mail.conftest import SmtpServer

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Safari/604.1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(client: httpx.AsyncClient, user: TestUser, agent: str) -> str:
    r = await client.post(
        "/api/auth/login", json={"email": user.email, "password": PASSWORD}, headers={"User-Agent": agent}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


async def me_status(client: httpx.AsyncClient, token: str) -> tuple[int, str | None]:
    r = await client.get("/api/auth/me", headers=bearer(token))
    return r.status_code, (r.json().get("error") or {}).get("code")


async def sessions_of(client: httpx.AsyncClient, token: str) -> list[dict[str, object]]:
    r = await client.get("/api/auth/sessions", headers=bearer(token))
    assert r.status_code == 200, r.text
    return list(r.json())


def session_id(token: str) -> str:
    return jwt.decode_token(token, TEST_JWT_SECRET).session_id


async def test_each_login_is_a_session_listed_with_its_device(client: httpx.AsyncClient, user: TestUser) -> None:
    laptop = await sign_in(client, user, FIREFOX)
    phone = await sign_in(client, user, IPHONE)
    listed = await sessions_of(client, laptop)
    by_id = {s["id"]: s for s in listed}
    assert set(by_id) == {session_id(user.token), session_id(laptop), session_id(phone)}
    assert by_id[session_id(laptop)]["device"] == "Firefox on Linux"
    assert by_id[session_id(phone)]["device"] == "Safari on iOS"
    assert by_id[session_id(laptop)]["current"] is True
    assert [s["current"] for s in listed].count(True) == 1
    assert by_id[session_id(phone)]["ip"] == "127.0.0.1"


async def test_signing_out_one_session_ends_only_its_token(client: httpx.AsyncClient, user: TestUser) -> None:
    phone = await sign_in(client, user, IPHONE)
    r = await client.delete(f"/api/auth/sessions/{session_id(phone)}", headers=user.headers)
    assert r.status_code == 200 and r.json() == {"sessions": 1}
    assert await me_status(client, phone) == (401, "session_ended")
    assert await me_status(client, user.token) == (200, None)
    assert session_id(phone) not in {s["id"] for s in await sessions_of(client, user.token)}
    again = await client.delete(f"/api/auth/sessions/{session_id(phone)}", headers=user.headers)
    assert again.status_code == 404 and again.json()["error"]["code"] == "session_not_found"


async def test_another_users_session_cannot_be_signed_out_or_listed(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser
) -> None:
    theirs = session_id(other_user.token)
    r = await client.delete(f"/api/auth/sessions/{theirs}", headers=user.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    assert await me_status(client, other_user.token) == (200, None)
    assert theirs not in {s["id"] for s in await sessions_of(client, user.token)}


async def test_a_token_naming_another_users_session_is_refused(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser
) -> None:
    claims = jwt.decode_token(user.token, TEST_JWT_SECRET)
    forged, _ = jwt.issue_token(
        user.id,
        "USER",
        TEST_JWT_SECRET,
        5,
        password_stamp=claims.password_stamp,
        session_id=session_id(other_user.token),
    )
    assert await me_status(client, forged) == (401, "invalid_token")
    without, _ = jwt.issue_token(user.id, "USER", TEST_JWT_SECRET, 5, password_stamp=claims.password_stamp)
    assert await me_status(client, without) == (401, "invalid_token")


async def test_sign_out_everywhere_keeps_this_session_unless_asked(client: httpx.AsyncClient, user: TestUser) -> None:
    laptop = await sign_in(client, user, FIREFOX)
    phone = await sign_in(client, user, IPHONE)
    r = await client.delete("/api/auth/sessions", headers=bearer(laptop))
    assert r.status_code == 200 and r.json() == {"sessions": 2}
    assert await me_status(client, phone) == (401, "session_ended")
    assert await me_status(client, user.token) == (401, "session_ended")
    assert await me_status(client, laptop) == (200, None)
    r = await client.delete("/api/auth/sessions?include_current=true", headers=bearer(laptop))
    assert r.status_code == 200 and r.json() == {"sessions": 1}
    assert await me_status(client, laptop) == (401, "session_ended")


async def test_logout_ends_the_session_and_is_audited(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    r = await client.post("/api/auth/logout", headers=user.headers)
    assert r.status_code == 200, r.text
    assert await me_status(client, user.token) == (401, "session_ended")
    async with app.state.db.sessions() as s:
        actions = list(await s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == session_id(user.token))))
    assert sorted(actions) == ["auth.signed_in", "auth.signed_out"]


async def test_an_api_key_has_no_sessions(client: httpx.AsyncClient, user: TestUser) -> None:
    r = await client.post("/api/apikeys", json={"name": "k"}, headers=user.headers)
    assert r.status_code == 201
    key = {"X-Access-Key-Id": r.json()["accessKeyId"], "X-Secret-Key": r.json()["secretKey"]}
    listed = await client.get("/api/auth/sessions", headers=key)
    assert listed.status_code == 403 and listed.json()["error"]["code"] == "jwt_required"


async def test_disabling_a_user_ends_their_sessions_for_good(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    admin = await make_admin(app, client)
    r = await client.patch(f"/api/admin/users/{user.id}", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert await me_status(client, user.token) == (401, "account_disabled")
    r = await client.patch(f"/api/admin/users/{user.id}", json={"disabled": False}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert await me_status(client, user.token) == (401, "session_ended")  # enabling does not revive it
    assert await me_status(client, await sign_in(client, user, FIREFOX)) == (200, None)


async def test_a_password_change_leaves_only_the_new_session(client: httpx.AsyncClient, user: TestUser) -> None:
    phone = await sign_in(client, user, IPHONE)
    r = await client.post(
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "another long passphrase"},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    fresh = r.json()["token"]
    assert [s["id"] for s in await sessions_of(client, fresh)] == [session_id(fresh)]
    assert await me_status(client, phone) == (401, "invalid_token")


async def test_last_seen_moves_at_most_every_few_minutes(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    sid = session_id(user.token)
    long_ago = utcnow() - timedelta(minutes=30)
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(AuthSession).where(AuthSession.id == sid).values(last_seen_at=long_ago))
    assert await me_status(client, user.token) == (200, None)
    async with app.state.db.sessions() as s:
        seen = (await s.scalars(select(AuthSession.last_seen_at).where(AuthSession.id == sid))).one()
    assert seen > utcnow() - timedelta(minutes=1)
    assert await me_status(client, user.token) == (200, None)
    async with app.state.db.sessions() as s:
        assert (await s.scalars(select(AuthSession.last_seen_at).where(AuthSession.id == sid))).one() == seen


@pytest.fixture
async def second_process(pg_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Another server on the same database, with its own pools and state (as another process has)."""
    async for other in running_app(make_settings(pg_url, tmp_path)):
        async with client_for(other) as c:
            yield c


async def test_signing_out_in_one_process_ends_the_token_in_another(
    client: httpx.AsyncClient, second_process: httpx.AsyncClient, user: TestUser
) -> None:
    phone = await sign_in(client, user, IPHONE)
    assert await me_status(second_process, phone) == (200, None)
    r = await client.delete("/api/auth/sessions", headers=user.headers)
    assert r.status_code == 200
    assert await me_status(second_process, phone) == (401, "session_ended")
    assert await me_status(second_process, user.token) == (200, None)


async def test_the_job_forgets_sessions_that_ended_a_day_ago(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    old = await sign_in(client, user, FIREFOX)
    recent = await sign_in(client, user, IPHONE)
    for token in (old, recent):
        assert (await client.delete(f"/api/auth/sessions/{session_id(token)}", headers=user.headers)).status_code == 200
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(
            update(AuthSession).where(AuthSession.id == session_id(old)).values(revoked_at=utcnow() - timedelta(days=2))
        )
    forgotten = await forget_ended_sessions(
        JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)
    )
    assert forgotten == 1
    async with app.state.db.sessions() as s:
        left = set((await s.scalars(select(AuthSession.id).where(AuthSession.user_id == user.id))).all())
    assert left == {session_id(user.token), session_id(recent)}


async def test_a_sign_in_from_a_new_device_is_emailed_to_those_who_ask(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, smtp_server: SmtpServer
) -> None:
    off = await client.patch("/api/auth/me", json={"notifyNewSignIn": True, "name": "  Alice  "}, headers=user.headers)
    assert off.status_code == 200 and off.json()["notifyNewSignIn"] is True and off.json()["name"] == "Alice"
    await sign_in(client, user, FIREFOX)
    await sign_in(client, user, FIREFOX)  # the same device again: no second email
    await sign_in(client, user, IPHONE)
    await deliver(app, smtp_server)
    texts = texts_to(smtp_server, user.email, "New sign-in")
    assert len(texts) == 2 and "Firefox" in texts[0] and "iPhone" in texts[1]
    r = await client.patch("/api/auth/me", json={"notifyNewSignIn": False}, headers=user.headers)
    assert r.json()["notifyNewSignIn"] is False
    await sign_in(client, user, "Opera/9.80 (Windows NT 6.1)")
    await deliver(app, smtp_server)
    assert len(texts_to(smtp_server, user.email, "New sign-in")) == 2
    bad = await client.patch("/api/auth/me", json={"name": "   "}, headers=user.headers)
    assert bad.status_code == 422
