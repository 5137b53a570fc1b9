"""The admin API: tiers, users, direct tier assignment, usage overview, invoices, subscriptions, audit."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from pockity.kit.time import utcnow
from pockity.models import AuditEvent
from tests.fixtures.storage import usage
from tests.fixtures.users import TestUser, make_key

GIB = 1024**3


async def _audit(app: FastAPI, actor_id: str) -> list[tuple[str, str | None, dict[str, object]]]:
    async with app.state.db.sessions() as s:
        rows = (
            await s.execute(
                select(AuditEvent.action, AuditEvent.target_id, AuditEvent.details).where(
                    AuditEvent.actor_id == actor_id
                )
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_tier_catalogue_management(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser
) -> None:
    body = {
        "name": "Team",
        "storageGb": 2.5,
        "maxObjects": 10,
        "maxObjectSizeMb": 10,
        "priceCents": 1200,
        "billingPeriod": "monthly",
        "isDefault": True,
    }
    r = await client.post("/api/tiers/admin", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    team = r.json()
    assert team["storageBytes"] == int(2.5 * GIB) and team["maxObjectSizeBytes"] == 10 * 1024**2
    assert team["storageGb"] == 2.5 and team["isDefault"] is True
    dup = await client.post("/api/tiers/admin", json={**body, "isDefault": False}, headers=admin.headers)
    assert (dup.status_code, dup.json()["error"]["code"]) == (409, "tier_name_taken")
    listing = {t["id"]: t for t in (await client.get("/api/tiers/admin/all", headers=admin.headers)).json()["items"]}
    assert listing["tier_free"]["isDefault"] is False  # one default at most
    assert listing["tier_free"]["userCount"] >= 2 and listing[team["id"]]["userCount"] == 0
    patched = await client.patch(f"/api/tiers/admin/{team['id']}", json={"priceCents": 900}, headers=admin.headers)
    assert patched.json()["priceCents"] == 900
    archived = await client.delete(f"/api/tiers/admin/{team['id']}", headers=admin.headers)
    assert (
        archived.status_code == 200 and archived.json()["isArchived"] is True and archived.json()["isDefault"] is False
    )
    assert team["id"] not in [t["id"] for t in (await client.get("/api/tiers")).json()["items"]]
    events = [(a, t) for a, t, _ in await _audit(app, admin.id)]
    assert [a for a, t in events if t == team["id"]] == ["tier.created", "tier.updated", "tier.archived"]
    update = next(d for a, t, d in await _audit(app, admin.id) if a == "tier.updated")
    assert update["before"]["price_cents"] == 1200 and update["after"]["price_cents"] == 900  # type: ignore[index]
    for bad in (
        {"name": "x", "storageGb": -1, "maxObjects": 1},
        {"name": "x", "storageGb": 1, "maxObjects": 1, "currency": "usd"},
    ):
        assert (await client.post("/api/tiers/admin", json=bad, headers=admin.headers)).status_code == 422


async def test_user_search_detail_and_disable(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser
) -> None:
    key = await make_key(client, user)
    await client.put("/api/storage/files/keep.txt", content=b"k" * 7, headers=user.headers)
    found = (await client.get(f"/api/admin/users?q={user.email[:12].upper()}", headers=admin.headers)).json()["items"]
    assert [u["id"] for u in found] == [user.id]
    detail = (await client.get(f"/api/admin/users/{user.id}", headers=admin.headers)).json()
    assert detail["user"]["email"] == user.email and detail["tier"]["id"] == "tier_free"
    assert detail["subscription"]["status"] == "ACTIVE" and detail["usage"]["bytesUsed"] == 7
    assert [k["id"] for k in detail["apiKeys"]] == [key["id"]] and detail["invoices"] == []
    r = await client.patch(f"/api/admin/users/{user.id}", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["isActive"] is False
    assert (await client.get("/api/auth/me", headers=user.headers)).json()["error"]["code"] == "account_disabled"
    assert (await client.get("/api/auth/me", headers=key["headers"])).json()["error"]["code"] == "account_disabled"
    r = await client.patch(f"/api/admin/users/{user.id}", json={"disabled": False}, headers=admin.headers)
    # Disabling ended the user's sessions for good; their API keys work again, and the data was kept.
    assert (await client.get("/api/auth/me", headers=user.headers)).json()["error"]["code"] == "session_ended"
    files = await client.get("/api/storage/files", headers=key["headers"])
    assert [i["key"] for i in files.json()["items"]] == ["keep.txt"]  # data kept throughout
    self_lock = await client.patch(f"/api/admin/users/{admin.id}", json={"disabled": True}, headers=admin.headers)
    assert (self_lock.status_code, self_lock.json()["error"]["code"]) == (409, "cannot_modify_self")
    updates = [d for a, t, d in await _audit(app, admin.id) if a == "user.updated"]
    assert updates[0] == {"before": {"is_active": True}, "after": {"is_active": False}}


async def test_downgrade_below_usage_keeps_data_and_blocks_uploads(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser, user: TestUser
) -> None:
    for name in ("a.bin", "b.bin"):
        assert (
            await client.put(f"/api/storage/files/{name}", content=b"z" * 600, headers=user.headers)
        ).status_code == 201
    tiny = (
        await client.post(
            "/api/tiers/admin", json={"name": "Tiny", "storageGb": 0.001, "maxObjects": 5}, headers=admin.headers
        )
    ).json()
    assert tiny["storageBytes"] == int(0.001 * GIB)
    small = (
        await client.post(
            "/api/tiers/admin", json={"name": "Small", "storageGb": 1, "maxObjects": 1}, headers=admin.headers
        )
    ).json()
    r = await client.put(f"/api/admin/users/{user.id}/tier", json={"tierId": small["id"]}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["status"] == "ACTIVE" and r.json()["provider"] == "admin"
    u = await usage(client, user)
    assert u["overQuota"] is True and u["objectCount"] == 2 and u["maxObjects"] == 1
    up = await client.put("/api/storage/files/c.bin", content=b"c", headers=user.headers)
    assert (up.status_code, up.json()["error"]["code"]) == (403, "object_quota_exceeded")
    # Reads, listing and deletes keep working; nothing was deleted.
    assert (await client.get("/api/storage/files/a.bin/content", headers=user.headers)).content == b"z" * 600
    assert len((await client.get("/api/storage/files", headers=user.headers)).json()["items"]) == 2
    overview = (await client.get("/api/admin/usage", headers=admin.headers)).json()
    near = {n["userId"]: n for n in overview["nearQuota"]}
    assert near[user.id]["overQuota"] is True and overview["bytesUsed"] >= 1200
    assert overview["top"][0]["userId"] == user.id
    assert (await client.delete("/api/storage/files/b.bin", headers=user.headers)).status_code == 200
    assert (await usage(client, user))["overQuota"] is False
    assert (await client.put("/api/storage/files/a.bin", content=b"y", headers=user.headers)).status_code == 201
    assigned = [d for a, t, d in await _audit(app, admin.id) if a == "subscription.assigned"]
    assert assigned[0]["before"]["tierId"] == "tier_free" and assigned[0]["after"]["tierId"] == small["id"]  # type: ignore[index]


async def test_private_tier_can_be_assigned_and_invoices_listed(
    client: httpx.AsyncClient, admin: TestUser, user: TestUser
) -> None:
    r = await client.put(f"/api/admin/users/{user.id}/tier", json={"tierId": "tier_business"}, headers=admin.headers)
    assert r.status_code == 200 and (await usage(client, user))["tier"]["id"] == "tier_business"
    missing = await client.put(f"/api/admin/users/{user.id}/tier", json={"tierId": "nope"}, headers=admin.headers)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "tier_not_found")
    req = (await client.post("/api/tier-requests", json={"tierId": "tier_starter"}, headers=user.headers)).json()
    invoice_id = (
        await client.patch(
            f"/api/tier-requests/admin/{req['id']}/approve", json={"approved": True}, headers=admin.headers
        )
    ).json()["invoiceId"]
    pending = (await client.get("/api/admin/invoices?status=PENDING", headers=admin.headers)).json()["items"]
    assert [i["id"] for i in pending] == [invoice_id]
    voided = await client.patch(
        f"/api/admin/invoices/{invoice_id}", json={"status": "VOID", "note": "x"}, headers=admin.headers
    )
    assert voided.json()["status"] == "VOID"
    assert (await client.get("/api/admin/invoices?status=PENDING", headers=admin.headers)).json()["items"] == []
    subs = (await client.get(f"/api/admin/subscriptions?userId={user.id}", headers=admin.headers)).json()["items"]
    assert [s["status"] for s in subs] == ["CANCELLED", "ACTIVE", "CANCELLED"]
    bad = await client.patch(f"/api/admin/invoices/{invoice_id}", json={"status": "REFUNDED"}, headers=admin.headers)
    assert bad.status_code == 422


async def test_audit_filters(client: httpx.AsyncClient, admin: TestUser, user: TestUser) -> None:
    await client.patch(f"/api/admin/users/{user.id}", json={"name": "Renamed"}, headers=admin.headers)
    by_actor = (await client.get(f"/api/admin/audit?actor={admin.id}", headers=admin.headers)).json()["items"]
    assert [e["action"] for e in by_actor] == ["user.updated", "auth.signed_in"]  # newest first: the login
    by_target = (
        await client.get(f"/api/admin/audit?target={user.id}&action=user.registered", headers=admin.headers)
    ).json()["items"]
    assert len(by_target) == 1 and by_target[0]["actorId"] == user.id
    future = (utcnow() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert (await client.get("/api/admin/audit", params={"from": future}, headers=admin.headers)).json()["items"] == []
    past = (utcnow() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert (
        len(
            (await client.get("/api/admin/audit", params={"from": past, "to": future}, headers=admin.headers)).json()[
                "items"
            ]
        )
        >= 2
    )
