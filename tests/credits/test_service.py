"""The credit ledger: admin grants, top-ups, paying invoices from the balance, and races for the last credits.

The ledger (credit_entries) is the record and credit_accounts its running total: after every step both are
read back and must agree."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from pockity.kit.time import utcnow
from pockity.models import CreditEntry, Invoice, Payment, Subscription, User
from tests.fixtures.payments import audits, balance, invoice_row, ledger_and_account, subscribe_invoice, topup_invoice
from tests.fixtures.users import TestUser


async def _grant(
    client: httpx.AsyncClient, admin: TestUser, user_id: str, cents: int, reason: str = "goodwill", **extra: Any
) -> httpx.Response:
    return await client.post(
        f"/api/admin/users/{user_id}/credits",
        json={"amountCents": cents, "reason": reason, **extra},
        headers=admin.headers,
    )


async def _credits(client: httpx.AsyncClient, user: TestUser) -> dict[str, Any]:
    r = await client.get("/api/billing/credits", headers=user.headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _entries(app: FastAPI, user_id: str) -> list[CreditEntry]:
    async with app.state.db.sessions() as s:
        stmt = select(CreditEntry).where(CreditEntry.user_id == user_id).order_by(CreditEntry.id)
        return list((await s.scalars(stmt)).all())


async def _consistent(app: FastAPI, user_id: str, expected: int) -> None:
    """The ledger's sum, the account row and the API all say `expected`."""
    assert await ledger_and_account(app, user_id) == (expected, expected)


async def _one_off_invoice(app: FastAPI, user_id: str, cents: int) -> str:
    """A second open invoice for the same user (the API keeps one pending tier change per user)."""
    async with app.state.db.sessions() as s, s.begin():
        row = Invoice(
            user_id=user_id,
            amount_cents=cents,
            currency="USD",
            status="PENDING",
            kind="subscription",
            description="one-off",
            due_at=utcnow() + timedelta(days=7),
            refunded_cents=0,
        )
        s.add(row)
        await s.flush()
        return row.id


async def test_a_new_account_has_no_credit(pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser) -> None:
    body = await _credits(pclient, payer)
    assert (body["balanceCents"], body["currency"], body["balances"], body["entries"]) == (0, "USD", {}, [])
    assert await ledger_and_account(papp, payer.id) == (0, 0)


async def test_admin_grant_adds_an_audited_entry(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    r = await _grant(pclient, padmin, payer.id, 1234, "sorry for the outage")
    assert r.status_code == 201, r.text
    assert r.json()["balanceCents"] == 1234
    body = await _credits(pclient, payer)
    assert body["balanceCents"] == 1234 and body["balances"] == {"USD": 1234}
    [entry] = body["entries"]
    assert (entry["amountCents"], entry["currency"], entry["reason"], entry["note"]) == (
        1234,
        "USD",
        "grant",
        "sorry for the outage",
    )
    [row] = await _entries(papp, payer.id)
    assert row.created_by == padmin.id and row.idempotency_key.startswith(f"grant:{payer.id}:")
    await _consistent(papp, payer.id, 1234)
    detail = await pclient.get(f"/api/admin/users/{payer.id}", headers=padmin.headers)
    assert detail.status_code == 200 and detail.json()["credits"] == {"USD": 1234}
    [event] = await audits(papp, "credits.granted")
    assert (event.actor_type, event.actor_id, event.target_type, event.target_id) == (
        "user",
        padmin.id,
        "user",
        payer.id,
    )
    assert event.details == {"amountCents": 1234, "currency": "USD", "reason": "sorry for the outage"}
    # The admin's view of the same ledger.
    seen = await pclient.get(f"/api/admin/users/{payer.id}/credits", headers=padmin.headers)
    assert seen.status_code == 200 and seen.json()["balanceCents"] == 1234
    assert [e["id"] for e in seen.json()["entries"]] == [entry["id"]]


async def test_grant_rules(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, other_payer: TestUser, padmin: TestUser
) -> None:
    r = await _grant(pclient, other_payer, payer.id, 500)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_required")
    r = await _grant(pclient, padmin, "01NOSUCHUSER0000000000000", 500)
    assert r.status_code == 404, r.text
    for cents in (0, -5):
        r = await _grant(pclient, padmin, payer.id, cents)
        assert r.status_code == 422, r.text
    assert await _entries(papp, payer.id) == []
    await _consistent(papp, payer.id, 0)
    assert await audits(papp, "credits.granted") == []


async def test_the_same_idempotency_key_grants_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    first = await _grant(pclient, padmin, payer.id, 700, idempotencyKey="ticket-42")
    again = await _grant(pclient, padmin, payer.id, 700, idempotencyKey="ticket-42")
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["balanceCents"] == again.json()["balanceCents"] == 700
    assert [(e.amount_cents, e.idempotency_key) for e in await _entries(papp, payer.id)] == [
        (700, f"grant:{payer.id}:ticket-42")
    ]
    await _consistent(papp, payer.id, 700)
    # The audit log describes what happened: one grant.
    assert len(await audits(papp, "credits.granted")) == 1
    # A different key is a different grant.
    assert (await _grant(pclient, padmin, payer.id, 300, idempotencyKey="ticket-43")).status_code == 201
    assert await balance(pclient, payer) == 1000
    await _consistent(papp, payer.id, 1000)


async def test_a_top_up_paid_by_an_admin_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    top = await topup_invoice(pclient, payer, 2000)
    assert (top["kind"], top["status"], top["amountCents"]) == ("topup", "PENDING", 2000)
    assert await balance(pclient, payer) == 0  # an unpaid top-up is not credit
    r = await pclient.patch(f"/api/admin/invoices/{top['id']}", json={"status": "PAID"}, headers=padmin.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["provider"]) == ("PAID", "manual")
    [entry] = (await _credits(pclient, payer))["entries"]
    assert (entry["amountCents"], entry["reason"]) == (2000, "topup")
    async with papp.state.db.sessions() as s:
        [payment] = (await s.scalars(select(Payment).where(Payment.invoice_id == top["id"]))).all()
    assert (payment.provider, payment.status, payment.received_cents, payment.credited_cents) == (
        "manual",
        "CONFIRMED",
        2000,
        2000,
    )
    assert entry["reference"] == payment.id
    await _consistent(papp, payer.id, 2000)
    assert [e.target_id for e in await audits(papp, "credits.topup_requested")] == [top["id"]]
    assert [e.target_id for e in await audits(papp, "invoice.paid")] == [top["id"]]
    # Paid once: a second PATCH changes nothing.
    again = await pclient.patch(f"/api/admin/invoices/{top['id']}", json={"status": "PAID"}, headers=padmin.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invoice_not_payable")
    await _consistent(papp, payer.id, 2000)


async def test_paying_with_exactly_enough_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    await _grant(pclient, padmin, payer.id, 500)
    r = await pclient.post(f"/api/billing/invoices/{inv['id']}/pay-with-credits", headers=payer.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["provider"]) == ("PAID", "credits")
    assert await balance(pclient, payer) == 0
    await _consistent(papp, payer.id, 0)
    debit = (await _entries(papp, payer.id))[-1]
    assert (debit.amount_cents, debit.reason, debit.reference, debit.idempotency_key) == (
        -500,
        "invoice",
        inv["id"],
        f"invoice:{inv['id']}",
    )
    sub = (await pclient.get("/api/billing/subscription", headers=payer.headers)).json()
    assert (sub["current"]["tierId"], sub["current"]["status"], sub["current"]["provider"]) == (
        "tier_starter",
        "ACTIVE",
        "credits",
    )
    [paid] = await audits(papp, "invoice.paid")
    assert paid.target_id == inv["id"] and paid.details["provider"] == "credits" and paid.actor_id == payer.id
    # Paid invoices are not paid again.
    again = await pclient.post(f"/api/billing/invoices/{inv['id']}/pay-with-credits", headers=payer.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invoice_not_payable")
    await _consistent(papp, payer.id, 0)


async def test_not_enough_credit_is_402_and_changes_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    await _grant(pclient, padmin, payer.id, 499)
    r = await pclient.post(f"/api/billing/invoices/{inv['id']}/pay-with-credits", headers=payer.headers)
    assert r.status_code == 402, r.text
    error = r.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert error["details"] == {"balanceCents": 499, "amountCents": 500, "currency": "USD"}
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"
    assert [e.amount_cents for e in await _entries(papp, payer.id)] == [499]
    await _consistent(papp, payer.id, 499)
    sub = (await pclient.get("/api/billing/subscription", headers=payer.headers)).json()
    assert sub["current"]["tierId"] == "tier_free" and sub["pending"]["status"] == "PENDING_PAYMENT"
    assert await audits(papp, "invoice.paid") == []
    # With no credit account at all it is the same answer.
    other = await _one_off_invoice(papp, payer.id, 100_000)
    r = await pclient.post(f"/api/billing/invoices/{other}/pay-with-credits", headers=payer.headers)
    assert r.status_code == 402 and r.json()["error"]["details"]["balanceCents"] == 499


async def test_another_users_invoice_is_404_and_a_top_up_is_409(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, other_payer: TestUser, padmin: TestUser
) -> None:
    theirs = await subscribe_invoice(pclient, other_payer, padmin)
    await _grant(pclient, padmin, payer.id, 5000)
    r = await pclient.post(f"/api/billing/invoices/{theirs['id']}/pay-with-credits", headers=payer.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "invoice_not_found")
    assert (await invoice_row(papp, theirs["id"])).status == "PENDING"
    top = await topup_invoice(pclient, payer, 1000)
    r = await pclient.post(f"/api/billing/invoices/{top['id']}/pay-with-credits", headers=payer.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "topup_not_payable_with_credits")
    assert (await invoice_row(papp, top["id"])).status == "PENDING"
    assert [e.amount_cents for e in await _entries(papp, payer.id)] == [5000]
    await _consistent(papp, payer.id, 5000)
    await _consistent(papp, other_payer.id, 0)


async def test_two_invoices_racing_for_credit_that_covers_one(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    first = (await subscribe_invoice(pclient, payer, padmin))["id"]
    second = await _one_off_invoice(papp, payer.id, 500)
    await _grant(pclient, padmin, payer.id, 700)
    results = await asyncio.gather(
        *(pclient.post(f"/api/billing/invoices/{i}/pay-with-credits", headers=payer.headers) for i in (first, second))
    )
    assert sorted(r.status_code for r in results) == [200, 402], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 402)
    assert loser.json()["error"]["code"] == "insufficient_credits"
    statuses = sorted([(await invoice_row(papp, first)).status, (await invoice_row(papp, second)).status])
    assert statuses == ["PAID", "PENDING"]
    assert await balance(pclient, payer) == 200
    await _consistent(papp, payer.id, 200)
    debits = [e for e in await _entries(papp, payer.id) if e.amount_cents < 0]
    assert [d.amount_cents for d in debits] == [-500]
    assert len(await audits(papp, "invoice.paid")) == 1


async def test_the_same_invoice_paid_twice_at_once_is_debited_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = (await subscribe_invoice(pclient, payer, padmin))["id"]
    await _grant(pclient, padmin, payer.id, 1500)  # enough for three: only the invoice's state stops a second debit
    results = await asyncio.gather(
        *(pclient.post(f"/api/billing/invoices/{inv}/pay-with-credits", headers=payer.headers) for _ in range(3))
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409, 409], [r.text for r in results]
    assert {r.json()["error"]["code"] for r in results if r.status_code == 409} == {"invoice_not_payable"}
    assert (await invoice_row(papp, inv)).status == "PAID"
    debits = [e for e in await _entries(papp, payer.id) if e.amount_cents < 0]
    assert [(d.amount_cents, d.reference) for d in debits] == [(-500, inv)]
    assert await balance(pclient, payer) == 1000
    await _consistent(papp, payer.id, 1000)
    assert len(await audits(papp, "invoice.paid")) == 1
    async with papp.state.db.sessions() as s:
        live = await s.scalar(
            select(func.count())
            .select_from(Subscription)
            .where(Subscription.user_id == payer.id, Subscription.status == "ACTIVE")
        )
        hold = await s.scalar(select(User.billing_hold).where(User.id == payer.id))
    assert (live, hold) == (1, None)


async def test_another_user_never_sees_these_entries(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, other_payer: TestUser, padmin: TestUser
) -> None:
    await _grant(pclient, padmin, payer.id, 900, "only for the payer")
    inv = await subscribe_invoice(pclient, payer, padmin)
    assert (
        await pclient.post(f"/api/billing/invoices/{inv['id']}/pay-with-credits", headers=payer.headers)
    ).status_code == 200
    mine = await _credits(pclient, payer)
    assert mine["balanceCents"] == 400 and len(mine["entries"]) == 2
    theirs = await _credits(pclient, other_payer)
    assert (theirs["balanceCents"], theirs["balances"], theirs["entries"]) == (0, {}, [])
    for cursor in [e["id"] for e in mine["entries"]]:
        page = await pclient.get(f"/api/billing/credits?cursor={cursor}", headers=other_payer.headers)
        assert page.status_code == 200 and page.json()["entries"] == []
    await _consistent(papp, other_payer.id, 0)
    await _consistent(papp, payer.id, 400)
