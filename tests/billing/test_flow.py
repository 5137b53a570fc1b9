"""Tier requests → admin approval → subscriptions and invoices, through HTTP."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from pockity.billing.tasks import apply_period_ends
from pockity.kit.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.models import AuditEvent, Subscription
from tests.fixtures.storage import usage
from tests.fixtures.users import TestUser, make_user


async def _request(client: httpx.AsyncClient, user: TestUser, tier_id: str) -> dict[str, object]:
    r = await client.post("/api/tier-requests", json={"tierId": tier_id, "reason": "more room"}, headers=user.headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _resolve(
    client: httpx.AsyncClient, admin: TestUser, request_id: object, approved: bool = True
) -> httpx.Response:
    return await client.patch(
        f"/api/tier-requests/admin/{request_id}/approve",
        json={"approved": approved, "note": "ok"},
        headers=admin.headers,
    )


async def _subscription(client: httpx.AsyncClient, user: TestUser) -> dict[str, object]:
    r = await client.get("/api/billing/subscription", headers=user.headers)
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


async def _actions(app: FastAPI) -> list[str]:
    async with app.state.db.sessions() as s:
        return list((await s.scalars(select(AuditEvent.action))).all())


async def test_public_tiers_and_a_new_user_on_the_free_default(client: httpx.AsyncClient, user: TestUser) -> None:
    tiers = (await client.get("/api/tiers")).json()["items"]
    assert [t["id"] for t in tiers] == ["tier_free", "tier_starter", "tier_pro"]  # the private tier is not offered
    assert tiers[0]["storageGb"] == 1 and tiers[0]["isDefault"] is True
    sub = await _subscription(client, user)
    assert sub["current"]["tierId"] == "tier_free" and sub["current"]["status"] == "ACTIVE"
    assert sub["pending"] is None and sub["tier"]["name"] == "Free"


async def test_request_rules(client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser) -> None:
    for tier_id, status, code in (
        ("tier_business", 404, "tier_not_found"),  # private
        ("nope", 404, "tier_not_found"),
        ("tier_free", 409, "already_on_tier"),
    ):
        r = await client.post("/api/tier-requests", json={"tierId": tier_id}, headers=user.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    await client.patch("/api/tiers/admin/tier_pro", json={"isArchived": True}, headers=admin.headers)
    r = await client.post("/api/tier-requests", json={"tierId": "tier_pro"}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "tier_archived")
    first = await _request(client, user, "tier_starter")
    assert first["status"] == "PENDING"
    again = await client.post("/api/tier-requests", json={"tierId": "tier_starter"}, headers=user.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "request_pending")
    mine = (await client.get("/api/tier-requests", headers=user.headers)).json()["items"]
    assert [m["id"] for m in mine] == [first["id"]]
    cancelled = await client.delete(f"/api/tier-requests/{first['id']}", headers=user.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert (await _request(client, user, "tier_starter"))["status"] == "PENDING"


async def test_paid_upgrade_applies_only_when_the_invoice_is_paid(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    req = await _request(client, user, "tier_starter")
    queue = (await client.get("/api/tier-requests/admin/all?status=PENDING", headers=admin.headers)).json()["items"]
    assert [q["id"] for q in queue] == [req["id"]]
    r = await _resolve(client, admin, req["id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "APPROVED" and body["resolvedBy"] == admin.id and body["resolvedAt"]
    assert body["effective"] == "on_payment" and body["invoiceId"]
    # Until payment the user keeps the old limits.
    assert (await usage(client, user))["tier"]["id"] == "tier_free"
    sub = await _subscription(client, user)
    assert sub["current"]["tierId"] == "tier_free" and sub["pending"]["status"] == "PENDING_PAYMENT"
    invoices = (await client.get("/api/billing/invoices", headers=user.headers)).json()["items"]
    assert [(i["amountCents"], i["currency"], i["status"]) for i in invoices] == [(500, "USD", "PENDING")]
    twice = await _resolve(client, admin, req["id"], approved=False)
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "request_resolved")
    paid = await client.patch(
        f"/api/admin/invoices/{body['invoiceId']}", json={"status": "PAID", "note": "wire 42"}, headers=admin.headers
    )
    assert paid.status_code == 200 and paid.json()["status"] == "PAID" and paid.json()["paidAt"]
    sub = await _subscription(client, user)
    assert sub["current"]["tierId"] == "tier_starter" and sub["current"]["status"] == "ACTIVE"
    assert sub["current"]["currentPeriodEnd"] > sub["current"]["currentPeriodStart"] and sub["pending"] is None
    u = await usage(client, user)
    assert u["tier"]["id"] == "tier_starter" and u["storageLimitBytes"] == 50 * 1024**3
    again = await client.patch(
        f"/api/admin/invoices/{body['invoiceId']}", json={"status": "PAID"}, headers=admin.headers
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invoice_not_payable")
    actions = await _actions(app)
    assert {"tier_request.created", "tier_request.approved", "invoice.paid"} <= set(actions)


async def test_trial_tier_starts_at_once(client: httpx.AsyncClient, user: TestUser, admin: TestUser) -> None:
    req = await _request(client, user, "tier_pro")
    body = (await _resolve(client, admin, req["id"])).json()
    assert body["effective"] == "now"
    sub = await _subscription(client, user)
    assert sub["current"]["status"] == "TRIALING" and sub["current"]["tierId"] == "tier_pro"
    assert (await usage(client, user))["tier"]["id"] == "tier_pro"
    invoice = (await client.get("/api/billing/invoices", headers=user.headers)).json()["items"][0]
    assert invoice["amountCents"] == 2500 and invoice["dueAt"] >= sub["current"]["currentPeriodEnd"][:10]


async def test_rejection_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    req = await _request(client, user, "tier_starter")
    r = await _resolve(client, admin, req["id"], approved=False)
    assert r.status_code == 200 and r.json()["status"] == "REJECTED" and r.json()["invoiceId"] is None
    assert (await client.get("/api/billing/invoices", headers=user.headers)).json()["items"] == []
    assert (await _subscription(client, user))["current"]["tierId"] == "tier_free"
    assert "tier_request.rejected" in await _actions(app)


async def test_two_admins_approving_at_once_one_wins(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    from tests.fixtures.users import make_admin

    other_admin = await make_admin(app, client)
    req = await _request(client, user, "tier_starter")
    results = await asyncio.gather(_resolve(client, admin, req["id"]), _resolve(client, other_admin, req["id"]))
    assert sorted(r.status_code for r in results) == [200, 409]
    async with app.state.db.sessions() as s:
        subs = (
            await s.execute(select(func.count()).select_from(Subscription).where(Subscription.user_id == user.id))
        ).scalar_one()
    assert subs == 2  # the free one and exactly one new one
    assert len((await client.get("/api/billing/invoices", headers=user.headers)).json()["items"]) == 1


async def test_downgrade_waits_for_the_period_end_then_applies(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    req = await _request(client, user, "tier_starter")
    invoice_id = (await _resolve(client, admin, req["id"])).json()["invoiceId"]
    await client.patch(f"/api/admin/invoices/{invoice_id}", json={"status": "PAID"}, headers=admin.headers)
    down = await _request(client, user, "tier_free")
    assert (await _resolve(client, admin, down["id"])).json()["effective"] == "period_end"
    sub = await _subscription(client, user)
    assert sub["current"]["tierId"] == "tier_starter" and sub["current"]["scheduledTierId"] == "tier_free"
    ctx = JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)
    assert await apply_period_ends(ctx) == 0  # not yet
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(
            update(Subscription)
            .where(Subscription.id == sub["current"]["id"])
            .values(current_period_end=utcnow() - timedelta(seconds=1))
        )
    assert await apply_period_ends(ctx) == 1
    sub = await _subscription(client, user)
    assert sub["current"]["tierId"] == "tier_free" and (await usage(client, user))["tier"]["id"] == "tier_free"


async def test_cancel_pending_voids_the_invoice_and_cancel_paid_ends_at_period_end(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    assert (await client.post("/api/billing/subscription/cancel", headers=user.headers)).status_code == 409
    req = await _request(client, user, "tier_starter")
    invoice_id = (await _resolve(client, admin, req["id"])).json()["invoiceId"]
    r = await client.post("/api/billing/subscription/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    invoices = (await client.get("/api/billing/invoices", headers=user.headers)).json()["items"]
    assert [(i["id"], i["status"]) for i in invoices] == [(invoice_id, "VOID")]
    assert (
        await client.patch(f"/api/admin/invoices/{invoice_id}", json={"status": "PAID"}, headers=admin.headers)
    ).status_code == 409
    req = await _request(client, user, "tier_starter")
    invoice_id = (await _resolve(client, admin, req["id"])).json()["invoiceId"]
    await client.patch(f"/api/admin/invoices/{invoice_id}", json={"status": "PAID"}, headers=admin.headers)
    r = await client.post("/api/billing/subscription/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json()["cancelAtPeriodEnd"] is True and r.json()["status"] == "ACTIVE"
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(
            update(Subscription)
            .where(Subscription.id == r.json()["id"])
            .values(current_period_end=utcnow() - timedelta(seconds=1))
        )
    ctx = JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)
    assert await apply_period_ends(ctx) == 1
    assert (await _subscription(client, user))["current"]["tierId"] == "tier_free"


async def test_other_users_records_are_404(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    theirs = await _request(client, other_user, "tier_starter")
    r = await client.delete(f"/api/tier-requests/{theirs['id']}", headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "request_not_found")
    await _resolve(client, admin, theirs["id"])
    assert (await client.get("/api/billing/invoices", headers=user.headers)).json()["items"] == []
    assert (await client.get("/api/tier-requests", headers=user.headers)).json()["items"] == []
    assert (await _subscription(client, user))["pending"] is None


async def test_no_default_tier_means_no_storage_until_approved(client: httpx.AsyncClient, admin: TestUser) -> None:
    r = await client.patch("/api/tiers/admin/tier_free", json={"isDefault": False}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["isDefault"] is False
    newcomer = await make_user(client, "newcomer")
    assert (await _subscription(client, newcomer))["current"] is None
    u = await usage(client, newcomer)
    assert (u["storageLimitBytes"], u["tier"]) == (0, None)
    r = await client.put("/api/storage/files/a.txt", content=b"x", headers=newcomer.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "no_storage_tier")
    req = await _request(client, newcomer, "tier_free")
    assert (await _resolve(client, admin, req["id"])).json()["effective"] == "now"
    assert (await client.put("/api/storage/files/a.txt", content=b"x", headers=newcomer.headers)).status_code == 201
