from __future__ import annotations

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, update

from pockity.models import AuditEvent, User
from tests.fixtures.app import TEST_JWT_SECRET
from tests.fixtures.users import PASSWORD, TestUser, unique_email


async def test_register_normalises_email_and_hides_hash(client: httpx.AsyncClient, app: FastAPI) -> None:
    email = unique_email("Mixed")
    r = await client.post(
        "/api/auth/register", json={"email": f"  {email.upper()} ", "password": PASSWORD, "name": " Ann "}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["email"] == email.lower()
    assert body["name"] == "Ann"
    assert body["role"] == "USER" and body["isActive"] is True
    assert "password" not in r.text.lower() and "hash" not in r.text.lower()
    async with app.state.db.sessions() as s:
        stored = (await s.scalars(select(User).where(User.id == body["id"]))).one()
    assert stored.password_hash.startswith("$2") and PASSWORD not in stored.password_hash


async def test_register_duplicate_email_any_case_is_409(client: httpx.AsyncClient, user: TestUser) -> None:
    r = await client.post(
        "/api/auth/register", json={"email": user.email.upper(), "password": PASSWORD, "name": "again"}
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "email_taken"


async def test_register_weak_password_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/auth/register", json={"email": unique_email(), "password": "short", "name": "x"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert [d["field"] for d in err["details"]] == ["password"]


async def test_register_is_audited(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    async with app.state.db.sessions() as s:
        events = (await s.scalars(select(AuditEvent).where(AuditEvent.target_id == user.id))).all()
    assert [e.action for e in events] == ["user.registered"]
    assert events[0].actor_id == user.id


async def test_login_returns_token_for_me(client: httpx.AsyncClient, user: TestUser) -> None:
    r = await client.post("/api/auth/login", json={"email": f" {user.email.upper()}", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["tokenType"] == "Bearer" and body["user"]["id"] == user.id and body["expiresAt"]
    claims = pyjwt.decode(body["token"], TEST_JWT_SECRET, algorithms=["HS256"], issuer="pockity")
    assert claims["sub"] == user.id and claims["role"] == "USER" and claims["exp"] > claims["iat"]
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json()["email"] == user.email and me.json()["authMethod"] == "jwt"


async def test_wrong_password_and_unknown_email_look_the_same(client: httpx.AsyncClient, user: TestUser) -> None:
    wrong = await client.post("/api/auth/login", json={"email": user.email, "password": "not the password"})
    unknown = await client.post("/api/auth/login", json={"email": unique_email(), "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"


async def test_repeated_failures_are_throttled_with_retry_after(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    limit = app.state.settings.login_max_failures_per_email
    for _ in range(limit):
        r = await client.post("/api/auth/login", json={"email": user.email, "password": "wrong-password"})
        assert r.status_code == 401
    # Even the right password is refused while the lockout lasts.
    r = await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "login_throttled"
    assert int(r.headers["Retry-After"]) >= 1
    async with app.state.db.sessions() as s:
        actions = (await s.scalars(select(AuditEvent.action))).all()
    assert actions.count("auth.login_throttled") == 1


async def test_throttle_counts_failures_per_client_across_emails(client: httpx.AsyncClient, app: FastAPI) -> None:
    limit = app.state.settings.login_max_failures_per_client
    for _ in range(limit):
        r = await client.post("/api/auth/login", json={"email": unique_email(), "password": "whatever-pass"})
        assert r.status_code == 401
    r = await client.post("/api/auth/login", json={"email": unique_email(), "password": "whatever-pass"})
    assert r.status_code == 429


@pytest.mark.parametrize("change", ["disable", "delete"])
async def test_token_stops_working_for_disabled_or_deleted_user(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, change: str
) -> None:
    assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
    async with app.state.db.sessions() as s, s.begin():
        if change == "disable":
            await s.execute(update(User).where(User.id == user.id).values(is_active=False))
        else:
            await s.execute(delete(User).where(User.id == user.id))
    r = await client.get("/api/auth/me", headers=user.headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == ("account_disabled" if change == "disable" else "invalid_token")
    # A disabled account cannot log in either.
    r = await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401
