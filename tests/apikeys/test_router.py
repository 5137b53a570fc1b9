from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select, text, update

from pockity.kit.time import utcnow
from pockity.models import ApiKey, AuditEvent
from tests.fixtures.users import TestUser, make_key

KEY_FIELDS = {"id", "name", "accessKeyId", "scopes", "prefix", "tierId", "expiresAt", "createdAt", "isActive"}


async def test_create_returns_secret_once_in_aws_format(client: httpx.AsyncClient, user: TestUser) -> None:
    r = await client.post("/api/apikeys", json={"name": "ci"}, headers=user.headers)
    assert r.status_code == 201
    created = r.json()
    assert KEY_FIELDS <= created.keys()
    assert re.fullmatch(r"PK[A-Z2-7]{18}", created["accessKeyId"])
    assert re.fullmatch(r"[A-Za-z0-9]{40}", created["secretKey"])
    assert created["scopes"] == ["delete", "list", "read", "write"]
    listed = await client.get("/api/apikeys", headers=user.headers)
    one = await client.get(f"/api/apikeys/{created['id']}", headers=user.headers)
    revoked = await client.delete(f"/api/apikeys/{created['id']}", headers=user.headers)
    for later in (listed, one, revoked):
        assert later.status_code == 200
        assert created["secretKey"] not in later.text and "secretKey" not in later.text
    assert [k["id"] for k in listed.json()["items"]] == [created["id"]]
    assert {"lastUsedAt", "lastUsedIp", "requestCount"} <= one.json().keys()


async def test_secret_is_sealed_in_the_database_and_absent_from_audit(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    key = await make_key(client, user)
    secret = key["secretKey"].encode()
    async with app.state.db.engine.connect() as conn:
        dump = [tuple(row) for row in (await conn.execute(text("SELECT * FROM api_keys"))).all()]
        audit = [tuple(row) for row in (await conn.execute(text("SELECT * FROM audit_events"))).all()]
    assert dump, "the key row exists"
    for value in (v for row in dump + audit for v in row):
        raw = value if isinstance(value, bytes) else str(value).encode()
        assert secret not in raw
    async with app.state.db.sessions() as s:
        actions = (await s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == key["id"]))).all()
    assert actions == ["apikey.created"]


async def test_key_authenticates_me_and_says_which_key(client: httpx.AsyncClient, user: TestUser) -> None:
    key = await make_key(client, user, name="deploy", scopes=["read", "list"], prefix="reports")
    r = await client.get("/api/auth/me", headers=key["headers"])
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == user.id and body["authMethod"] == "api_key"
    assert body["apiKey"] == {
        "id": key["id"],
        "accessKeyId": key["accessKeyId"],
        "name": "deploy",
        "scopes": ["list", "read"],
        "prefix": "reports/",
        "tierId": None,
    }


async def test_wrong_secret_and_unknown_id_get_the_same_answer(client: httpx.AsyncClient, user: TestUser) -> None:
    key = await make_key(client, user)
    wrong = await client.get("/api/auth/me", headers={"X-Access-Key-Id": key["accessKeyId"], "X-Secret-Key": "A" * 40})
    unknown = await client.get(
        "/api/auth/me", headers={"X-Access-Key-Id": "PK" + "A" * 18, "X-Secret-Key": key["secretKey"]}
    )
    malformed = await client.get("/api/auth/me", headers={"X-Access-Key-Id": "x", "X-Secret-Key": "y"})
    assert wrong.status_code == unknown.status_code == malformed.status_code == 401
    assert wrong.json() == unknown.json() == malformed.json()
    assert wrong.json()["error"]["code"] == "invalid_api_key"


async def test_revoked_key_fails_on_the_next_request(client: httpx.AsyncClient, user: TestUser) -> None:
    key = await make_key(client, user)
    assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200
    r = await client.delete(f"/api/apikeys/{key['id']}", headers=user.headers)
    assert r.status_code == 200 and r.json()["isActive"] is False and r.json()["revokedAt"]
    again = await client.delete(f"/api/apikeys/{key['id']}", headers=user.headers)
    assert again.status_code == 200 and again.json()["revokedAt"] == r.json()["revokedAt"]
    denied = await client.get("/api/auth/me", headers=key["headers"])
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "api_key_revoked"
    # A wrong secret for a revoked key still says only "invalid".
    guess = await client.get("/api/auth/me", headers={**key["headers"], "X-Secret-Key": "B" * 40})
    assert guess.json()["error"]["code"] == "invalid_api_key"


async def test_expired_key_is_refused(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    key = await make_key(client, user, expiresAt=soon)
    assert key["expiresAt"] is not None
    assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(ApiKey).where(ApiKey.id == key["id"]).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = await client.get("/api/auth/me", headers=key["headers"])
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_expired"


async def test_create_validates_input(client: httpx.AsyncClient, user: TestUser) -> None:
    cases = [
        {"name": ""},
        {"name": "x", "scopes": ["read", "admin"]},
        {"name": "x", "scopes": []},
        {"name": "x", "prefix": "../other"},
        {"name": "x", "prefix": "/abs"},
        {"name": "x", "expiresAt": (utcnow() - timedelta(minutes=1)).isoformat()},
        {"name": "x", "expiresAt": "2030-01-01T00:00:00"},
        {"name": "x", "owner": "someone"},
    ]
    for body in cases:
        r = await client.post("/api/apikeys", json=body, headers=user.headers)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "validation_error"
    r = await client.post("/api/apikeys", json={"name": "x", "tierId": "no-such-tier"}, headers=user.headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_tier"
    r = await client.post("/api/apikeys", json={"name": "x", "tier_id": "tier_free"}, headers=user.headers)
    assert r.status_code == 201 and r.json()["tierId"] == "tier_free"


async def test_another_users_key_is_404_never_403(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser
) -> None:
    theirs = await make_key(client, other_user)
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"/api/apikeys/{theirs['id']}", headers=user.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "api_key_not_found"
    assert (await client.get("/api/apikeys", headers=user.headers)).json()["items"] == []
    assert (await client.get("/api/auth/me", headers=theirs["headers"])).status_code == 200


async def test_key_management_needs_a_jwt(client: httpx.AsyncClient, user: TestUser) -> None:
    key = await make_key(client, user)
    for method, path in (
        ("POST", "/api/apikeys"),
        ("GET", "/api/apikeys"),
        ("GET", f"/api/apikeys/{key['id']}"),
        ("DELETE", f"/api/apikeys/{key['id']}"),
    ):
        r = await client.request(method, path, json={"name": "x"} if method == "POST" else None, headers=key["headers"])
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["code"] == "jwt_required"
    assert (await client.get(f"/api/apikeys/{key['id']}", headers=user.headers)).json()["isActive"] is True


async def test_active_key_limit(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    limit = app.state.settings.max_api_keys_per_user
    results = await asyncio.gather(
        *(client.post("/api/apikeys", json={"name": f"k{i}"}, headers=user.headers) for i in range(limit + 5))
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == limit and codes.count(409) == 5
    refused = next(r for r in results if r.status_code == 409)
    assert refused.json()["error"]["code"] == "api_key_limit"
    victim = next(r for r in results if r.status_code == 201).json()
    await client.delete(f"/api/apikeys/{victim['id']}", headers=user.headers)
    assert (await client.post("/api/apikeys", json={"name": "again"}, headers=user.headers)).status_code == 201


async def test_admin_lists_and_revokes_any_users_keys_audited(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    key = await make_key(client, user)
    r = await client.get(f"/api/admin/users/{user.id}/apikeys", headers=admin.headers)
    assert r.status_code == 200 and [k["id"] for k in r.json()["items"]] == [key["id"]]
    assert "secretKey" not in r.text
    r = await client.delete(f"/api/admin/apikeys/{key['id']}", headers=admin.headers)
    assert r.status_code == 200 and r.json()["isActive"] is False
    assert (await client.get("/api/auth/me", headers=key["headers"])).json()["error"]["code"] == "api_key_revoked"
    assert (await client.get(f"/api/admin/users/{user.id}/apikeys", headers=user.headers)).status_code == 403
    async with app.state.db.sessions() as s:
        rows = (await s.execute(select(AuditEvent.action, AuditEvent.actor_id))).all()
    assert ("admin.apikeys_listed", admin.id) in rows
    assert ("apikey.revoked", admin.id) in rows


async def test_activity_is_batched_then_flushed(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    key = await make_key(client, user)
    for _ in range(3):
        assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200
    before = (await client.get(f"/api/apikeys/{key['id']}", headers=user.headers)).json()
    assert before["requestCount"] == 0 and before["lastUsedAt"] is None  # no write per request
    await app.state.key_activity.flush(app.state.db)
    after = (await client.get(f"/api/apikeys/{key['id']}", headers=user.headers)).json()
    assert after["requestCount"] == 3
    assert after["lastUsedAt"] is not None and after["lastUsedIp"] == "127.0.0.1"
