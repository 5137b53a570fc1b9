"""Changing the password: every sign-in token issued before stops working at once; API keys keep working."""

from __future__ import annotations

import httpx
import jwt as pyjwt
from fastapi import FastAPI
from sqlalchemy import select

from pockity.models import AuditEvent
from tests.fixtures.app import TEST_JWT_SECRET
from tests.fixtures.users import PASSWORD, TestUser, make_key

NEW = "a brand new passphrase 42"


async def _login(client: httpx.AsyncClient, email: str, password: str) -> str:
    r = await client.post("/api/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/auth/me", headers=_bearer(token))


async def test_a_new_password_ends_every_earlier_token_and_answers_with_a_new_one(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    key_headers = (await make_key(client, user))["headers"]
    other_device = await _login(client, user.email, PASSWORD)
    assert (await _me(client, other_device)).status_code == 200
    assert (await _me(client, user.token)).status_code == 200
    r = await client.post(
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": NEW},
        headers=_bearer(user.token),
    )
    assert r.status_code == 200, r.text
    fresh = r.json()["token"]
    assert r.json()["user"]["id"] == user.id
    for old in (user.token, other_device):
        gone = await _me(client, old)
        assert gone.status_code == 401 and gone.json()["error"]["code"] == "invalid_token"
    assert (await _me(client, fresh)).status_code == 200
    me_key = await client.get("/api/auth/me", headers=key_headers)
    assert me_key.status_code == 200 and me_key.json()["authMethod"] == "api_key"  # keys are not sign-ins
    old_login = await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert old_login.status_code == 401
    assert (await _me(client, await _login(client, user.email, NEW))).status_code == 200
    # The stamp is an HMAC of the hash, nothing of the hash itself.
    stamp = pyjwt.decode(fresh, TEST_JWT_SECRET, algorithms=["HS256"], issuer="pockity")["pwd"]
    assert len(stamp) == 22 and "$2" not in stamp
    async with app.state.db.sessions() as s:
        actions = list(
            await s.scalars(
                select(AuditEvent.action).where(
                    AuditEvent.target_id == user.id, AuditEvent.action == "user.password_changed"
                )
            )
        )
    assert actions == ["user.password_changed"]


async def test_a_wrong_current_password_changes_nothing(client: httpx.AsyncClient, user: TestUser) -> None:
    r = await client.post(
        "/api/auth/password",
        json={"currentPassword": "not the password", "newPassword": NEW},
        headers=_bearer(user.token),
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_password"
    assert (await _me(client, user.token)).status_code == 200
    short = await client.post(
        "/api/auth/password", json={"currentPassword": PASSWORD, "newPassword": "short"}, headers=_bearer(user.token)
    )
    assert short.status_code == 422 and short.json()["error"]["code"] == "validation_error"
    assert (await _me(client, user.token)).status_code == 200


async def test_an_api_key_cannot_change_the_password(client: httpx.AsyncClient, user: TestUser) -> None:
    key_headers = (await make_key(client, user))["headers"]
    r = await client.post(
        "/api/auth/password", json={"currentPassword": PASSWORD, "newPassword": NEW}, headers=key_headers
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "jwt_required"
    assert (await _me(client, user.token)).status_code == 200
