"""Renewals and the subscription life cycle: periods ending, renewing from credits, PAST_DUE and its grace
period, trials ending, refunds of a past period, scheduled downgrades and cancellations.

The billing job runs as the scheduler would (`run_billing`); time moves by putting a period end (or a grace
end) into the past. Every transition is checked in the stored rows, the credit ledger and the audit log."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.kit.periods import period_end
from pockity.kit.time import utcnow
from pockity.models import CreditEntry, Invoice, Payment, Subscription, User
from tests.fixtures.payments import (
    GRACE_DAYS,
    audits,
    balance,
    end_grace,
    end_period,
    ledger_and_account,
    post_stripe,
    run_billing,
    stripe_event,
    subscribe_invoice,
    subscription,
)
from tests.fixtures.storage import local_files
from tests.fixtures.users import TestUser, make_user

GRACE = timedelta(days=GRACE_DAYS)


# --- helpers -------------------------------------------------------------------------------------------------


async def _grant(client: httpx.AsyncClient, admin: TestUser, user: TestUser, cents: int) -> None:
    r = await client.post(
        f"/api/admin/users/{user.id}/credits", json={"amountCents": cents, "reason": "test"}, headers=admin.headers
    )
    assert r.status_code == 201, r.text


async def _admin_pay(client: httpx.AsyncClient, admin: TestUser, invoice_id: str) -> httpx.Response:
    return await client.patch(f"/api/admin/invoices/{invoice_id}", json={"status": "PAID"}, headers=admin.headers)


async def _auto_renew(client: httpx.AsyncClient, user: TestUser, enabled: bool = True) -> dict[str, Any]:
    r = await client.patch("/api/billing/subscription", json={"autoRenewFromCredits": enabled}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["autoRenewFromCredits"] is enabled
    return r.json()  # type: ignore[no-any-return]


async def _paid_starter(client: httpx.AsyncClient, user: TestUser, admin: TestUser) -> tuple[str, str]:
    """A Starter subscription paid by an admin: (subscription id, its first invoice id)."""
    inv = await subscribe_invoice(client, user, admin)
    r = await _admin_pay(client, admin, inv["id"])
    assert r.status_code == 200, r.text
    sub = (await subscription(client, user))["current"]
    assert (sub["tierId"], sub["status"]) == ("tier_starter", "ACTIVE")
    return sub["id"], inv["id"]


async def _sub(app: FastAPI, sub_id: str) -> Subscription:
    async with app.state.db.sessions() as s:
        row: Subscription | None = await s.get(Subscription, sub_id)
    assert row is not None
    return row


async def _current(app: FastAPI, user_id: str) -> Subscription:
    async with app.state.db.sessions() as s:
        rows: list[Subscription] = list(
            (
                await s.scalars(select(Subscription).where(Subscription.user_id == user_id, Subscription.is_current))
            ).all()
        )
    assert len(rows) == 1
    return rows[0]


async def _invoices(app: FastAPI, user_id: str) -> list[Invoice]:
    async with app.state.db.sessions() as s:
        return list((await s.scalars(select(Invoice).where(Invoice.user_id == user_id).order_by(Invoice.id))).all())


async def _entries(app: FastAPI, user_id: str) -> list[tuple[int, str, str | None]]:
    async with app.state.db.sessions() as s:
        rows = (
            await s.scalars(select(CreditEntry).where(CreditEntry.user_id == user_id).order_by(CreditEntry.id))
        ).all()
    return [(e.amount_cents, e.reason, e.reference) for e in rows]


async def _user(app: FastAPI, user_id: str) -> User:
    async with app.state.db.sessions() as s:
        row: User | None = await s.get(User, user_id)
    assert row is not None
    return row


async def _consistent(app: FastAPI, user_id: str, expected: int) -> None:
    assert await ledger_and_account(app, user_id) == (expected, expected)


async def _put(client: httpx.AsyncClient, user: TestUser, name: str, data: bytes) -> httpx.Response:
    return await client.put(f"/api/storage/files/{name}", content=data, headers=user.headers)


async def _readable(client: httpx.AsyncClient, app: FastAPI, user: TestUser, name: str, data: bytes) -> None:
    """The file is listed, its metadata and content can be read, and the backend still holds it."""
    listing = await client.get("/api/storage/files", headers=user.headers)
    assert listing.status_code == 200, listing.text
    assert name in [i["key"] for i in listing.json()["items"]]
    meta = await client.get(f"/api/storage/files/{name}", headers=user.headers)
    assert meta.status_code == 200 and meta.json()["size"] == len(data) and meta.json()["url"]
    content = await client.get(f"/api/storage/files/{name}/content", headers=user.headers)
    assert content.status_code == 200 and content.content == data
    assert local_files(app, user.id).get(name) == len(data)


def _past(minutes: int = 5) -> datetime:
    return utcnow() - timedelta(minutes=minutes)


async def _past_due_starter(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> tuple[str, datetime, bytes]:
    """A paid Starter user with a file, whose period ended with 499 credits and auto-renew on: PAST_DUE.
    Returns (subscription id, the old period end, the file's content)."""
    sub_id, _ = await _paid_starter(client, user, admin)
    data = b"kept through billing trouble"
    assert (await _put(client, user, "a.txt", data)).status_code == 201
    await _auto_renew(client, user)
    await _grant(client, admin, user, 499)
    old_end = _past()
    await end_period(app, sub_id, at=old_end)
    assert await run_billing(app) == 1
    assert (await _sub(app, sub_id)).status == "PAST_DUE"
    return sub_id, old_end, data


# --- 1. renewing from credits ------------------------------------------------------------------------------


async def test_renewal_from_credits_extends_the_period_from_the_old_end(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first_invoice = await _paid_starter(pclient, payer, padmin)
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 500)
    assert await run_billing(papp) == 0  # the period is still running
    old_end = _past()
    await end_period(papp, sub_id, at=old_end)
    assert await run_billing(papp) == 1
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("ACTIVE", True, None)
    assert sub.current_period_start == old_end
    assert sub.current_period_end == period_end(old_end, "monthly")
    api = (await subscription(pclient, payer))["current"]
    assert api["id"] == sub_id and datetime.fromisoformat(api["currentPeriodStart"]) == old_end
    first, renewal = await _invoices(papp, payer.id)
    assert first.id == first_invoice and first.status == "PAID"
    assert (renewal.kind, renewal.status, renewal.provider, renewal.amount_cents, renewal.tier_id) == (
        "renewal",
        "PAID",
        "credits",
        500,
        "tier_starter",
    )
    assert (renewal.period_start, renewal.period_end) == (old_end, period_end(old_end, "monthly"))
    assert renewal.subscription_id == sub_id and renewal.paid_at is not None
    assert await balance(pclient, payer) == 0
    assert await _entries(papp, payer.id) == [(500, "grant", None), (-500, "renewal", renewal.id)]
    await _consistent(papp, payer.id, 0)
    [renewed] = await audits(papp, "subscription.renewed", sub_id)
    assert (renewed.actor_type, renewed.actor_id) == ("system", "jobs")
    assert renewed.details == {"invoiceId": renewal.id, "amountCents": 500, "from": "credits"}
    paid = await audits(papp, "invoice.paid", renewal.id)
    assert len(paid) == 1 and paid[0].details["provider"] == "credits"
    assert await audits(papp, "subscription.past_due") == []
    assert (await _user(papp, payer.id)).billing_hold is None


# --- 2. not enough credit: PAST_DUE, uploads paused, reads allowed; paying restores ---------------------------


async def _pay_renewal(
    how: str, client: httpx.AsyncClient, admin: TestUser, user: TestUser, invoice_id: str
) -> httpx.Response:
    if how == "admin":
        return await _admin_pay(client, admin, invoice_id)
    await _grant(client, admin, user, 1)  # 499 + 1 covers it now
    return await client.post(f"/api/billing/invoices/{invoice_id}/pay-with-credits", headers=user.headers)


async def _past_due_then_paid(
    how: str, client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    sub_id, old_end, data = await _past_due_starter(client, app, user, admin)
    sub = await _sub(app, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("PAST_DUE", True, old_end + GRACE)
    assert sub.current_period_end == old_end  # the unpaid period is not granted
    assert (await _user(app, user.id)).billing_hold == "past_due"
    _, renewal = await _invoices(app, user.id)
    assert (renewal.kind, renewal.status, renewal.amount_cents, renewal.period_start) == (
        "renewal",
        "PENDING",
        500,
        old_end,
    )
    assert renewal.due_at == old_end + GRACE
    assert await _entries(app, user.id) == [(499, "grant", None)]  # no debit was attempted on the ledger
    await _consistent(app, user.id, 499)
    [past_due] = await audits(app, "subscription.past_due", sub_id)
    assert past_due.details["invoiceId"] == renewal.id
    assert past_due.details["before"]["status"] == "ACTIVE" and past_due.details["after"]["status"] == "PAST_DUE"
    assert await audits(app, "subscription.renewed") == []
    api = (await subscription(client, user))["current"]
    assert api["status"] == "PAST_DUE" and datetime.fromisoformat(api["graceEndsAt"]) == old_end + GRACE

    # Uploads are paused; everything already stored can still be read.
    r = await _put(client, user, "b.txt", b"new")
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    r = await _put(client, user, "a.txt", b"overwrite")
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    await _readable(client, app, user, "a.txt", data)
    assert "b.txt" not in local_files(app, user.id)
    # Another run during the grace period changes nothing.
    assert await run_billing(app) == 0
    assert len(await _invoices(app, user.id)) == 2

    paid = await _pay_renewal(how, client, admin, user, renewal.id)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "PAID"
    sub = await _sub(app, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("ACTIVE", True, None)
    assert (sub.current_period_start, sub.current_period_end) == (old_end, period_end(old_end, "monthly"))
    u = await _user(app, user.id)
    assert (u.billing_hold, u.tier_id) == (None, "tier_starter")
    assert (await _put(client, user, "b.txt", b"new")).status_code == 201
    assert [e.target_id for e in await audits(app, "invoice.paid")][-1] == renewal.id


async def test_past_due_paid_by_an_admin(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await _past_due_then_paid("admin", pclient, papp, payer, padmin)
    await _consistent(papp, payer.id, 499)  # paid by hand: the credit is untouched


async def test_past_due_paid_with_credits_after_a_grant(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await _past_due_then_paid("credits", pclient, papp, payer, padmin)
    _, renewal = await _invoices(papp, payer.id)
    assert renewal.provider == "credits"
    assert (await _entries(papp, payer.id))[-1] == (-500, "invoice", renewal.id)
    await _consistent(papp, payer.id, 0)


# --- 3. auto-renew off ---------------------------------------------------------------------------------------


async def test_without_auto_renew_the_period_is_invoiced_even_with_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, _ = await _paid_starter(pclient, payer, padmin)
    assert (await subscription(pclient, payer))["current"]["autoRenewFromCredits"] is False  # the default
    await _grant(pclient, padmin, payer, 5000)
    old_end = _past()
    await end_period(papp, sub_id, at=old_end)
    assert await run_billing(papp) == 1
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.grace_ends_at) == ("PAST_DUE", old_end + GRACE)
    _, renewal = await _invoices(papp, payer.id)
    assert (renewal.kind, renewal.status, renewal.period_start, renewal.provider) == (
        "renewal",
        "PENDING",
        old_end,
        None,
    )
    assert await _entries(papp, payer.id) == [(5000, "grant", None)]
    await _consistent(papp, payer.id, 5000)
    assert (await _user(papp, payer.id)).billing_hold == "past_due"
    assert len(await audits(papp, "subscription.past_due", sub_id)) == 1
    assert await audits(papp, "subscription.renewed") == []
    # Turning auto-renew on is audited, and does not charge by itself.
    await _auto_renew(pclient, payer)
    [toggle] = await audits(papp, "subscription.auto_renew", sub_id)
    assert toggle.details == {"before": False, "after": True} and toggle.actor_id == payer.id
    assert await run_billing(papp) == 0
    await _consistent(papp, payer.id, 5000)


# --- 4. grace runs out -------------------------------------------------------------------------------------


async def test_grace_expiry_falls_back_to_the_default_tier_and_keeps_the_data(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, old_end, data = await _past_due_starter(pclient, papp, payer, padmin)
    _, renewal = await _invoices(papp, payer.id)
    await end_grace(papp, sub_id)
    assert await run_billing(papp) == 1
    old = await _sub(papp, sub_id)
    assert (old.status, old.is_current) == ("EXPIRED", False) and old.ended_at is not None
    first, voided = await _invoices(papp, payer.id)
    assert (first.status, voided.id, voided.status, voided.period_start) == ("PAID", renewal.id, "VOID", old_end)
    new = await _current(papp, payer.id)
    assert (new.tier_id, new.status, new.current_period_end) == ("tier_free", "ACTIVE", None)
    u = await _user(papp, payer.id)
    assert (u.tier_id, u.billing_hold) == ("tier_free", None)
    api = await subscription(pclient, payer)
    assert (api["current"]["id"], api["tier"]["id"]) == (new.id, "tier_free")
    # Billing never deletes data: the file is there, readable, and writes work again on the free tier.
    await _readable(pclient, papp, payer, "a.txt", data)
    assert (await _put(pclient, payer, "b.txt", b"free tier")).status_code == 201
    await _consistent(papp, payer.id, 499)  # the credit is still the user's
    [expired] = await audits(papp, "subscription.expired", sub_id)
    assert (expired.actor_type, expired.actor_id) == ("system", "jobs")
    assert expired.details["before"]["status"] == "PAST_DUE"
    assert expired.details["after"]["tierId"] == "tier_free"
    # The voided invoice cannot be paid by an admin...
    late = await _admin_pay(pclient, padmin, renewal.id)
    assert (late.status_code, late.json()["error"]["code"]) == (409, "invoice_not_payable")
    # ...and money a provider reports for it late becomes credit; the subscription is not revived.
    body = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_late",
            "object": "checkout.session",
            "payment_status": "paid",
            "payment_intent": "pi_late",
            "amount_total": 500,
            "currency": "usd",
            "metadata": {"invoiceId": renewal.id},
        },
    )
    r = await post_stripe(pclient, body)
    assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text
    assert [i.status for i in await _invoices(papp, payer.id)] == ["PAID", "VOID"]
    assert (await _entries(papp, payer.id))[-1][:2] == (500, "unapplied_payment")
    await _consistent(papp, payer.id, 999)
    assert (await _current(papp, payer.id)).id == new.id
    # Nothing more is due.
    assert await run_billing(papp) == 0


# --- 5. idempotent and safe with two runners ---------------------------------------------------------------


async def test_running_the_job_again_does_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, _ = await _paid_starter(pclient, payer, padmin)
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 1000)  # enough for two renewals: only the job's own logic stops a second
    await end_period(papp, sub_id, at=_past())
    assert await run_billing(papp) == 1
    after_first = (await _sub(papp, sub_id)).current_period_end
    invoices, entries = await _invoices(papp, payer.id), await _entries(papp, payer.id)
    assert await run_billing(papp) == 0
    assert (await _sub(papp, sub_id)).current_period_end == after_first
    assert [(i.id, i.status) for i in await _invoices(papp, payer.id)] == [(i.id, i.status) for i in invoices]
    assert await _entries(papp, payer.id) == entries
    await _consistent(papp, payer.id, 500)
    assert len(await audits(papp, "subscription.renewed")) == 1


async def test_two_runners_at_once_renew_each_subscription_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    users = [payer] + [await make_user(pclient, f"due{n}") for n in range(3)]
    ends: dict[str, tuple[str, datetime]] = {}
    for n, user in enumerate(users):
        sub_id, _ = await _paid_starter(pclient, user, padmin)
        await _auto_renew(pclient, user)
        await _grant(pclient, padmin, user, 1000)  # enough for two: a double renewal would show
        ends[user.id] = (sub_id, _past(5 + n))
        await end_period(papp, sub_id, at=ends[user.id][1])
    done = await asyncio.gather(run_billing(papp), run_billing(papp))
    assert sum(done) == len(users), done
    for user in users:
        sub_id, old_end = ends[user.id]
        sub = await _sub(papp, sub_id)
        assert (sub.status, sub.current_period_start, sub.current_period_end) == (
            "ACTIVE",
            old_end,
            period_end(old_end, "monthly"),
        )
        renewals = [i for i in await _invoices(papp, user.id) if i.kind == "renewal"]
        assert [(r.status, r.period_start) for r in renewals] == [("PAID", old_end)]
        debits = [e for e in await _entries(papp, user.id) if e[0] < 0]
        assert debits == [(-500, "renewal", renewals[0].id)]
        assert await balance(pclient, user) == 500
        await _consistent(papp, user.id, 500)
    renewed = await audits(papp, "subscription.renewed")
    assert sorted(e.target_id or "" for e in renewed) == sorted(sub_id for sub_id, _ in ends.values())
    assert list(await asyncio.gather(run_billing(papp), run_billing(papp))) == [0, 0]


# --- 6. trials ---------------------------------------------------------------------------------------------


async def _trial(client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser) -> tuple[str, Invoice]:
    inv = await subscribe_invoice(client, user, admin, "tier_pro")
    sub = (await subscription(client, user))["current"]
    assert (sub["tierId"], sub["status"]) == ("tier_pro", "TRIALING")
    row = await _sub(app, sub["id"])
    [invoice] = await _invoices(app, user.id)
    assert invoice.id == inv["id"] and (invoice.amount_cents, invoice.status) == (2500, "PENDING")
    assert invoice.period_start == row.current_period_end  # the trial's invoice pays the month after it
    assert row.current_period_end is not None and row.current_period_start is not None
    assert row.current_period_end - row.current_period_start == timedelta(days=14)
    return sub["id"], invoice


async def test_a_trial_ending_unpaid_holds_uploads_until_paid(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, invoice = await _trial(pclient, papp, payer, padmin)
    await _grant(pclient, padmin, payer, 2500)  # credit, but auto-renew is off
    trial_end = _past()
    await end_period(papp, sub_id, at=trial_end)
    assert await run_billing(papp) == 1
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("PENDING_PAYMENT", True, trial_end + GRACE)
    assert (await _user(papp, payer.id)).billing_hold == "past_due"
    [still] = await _invoices(papp, payer.id)  # the trial's own invoice, not a second one
    assert (still.id, still.status, still.period_start) == (invoice.id, "PENDING", trial_end)
    await _consistent(papp, payer.id, 2500)
    [past_due] = await audits(papp, "subscription.past_due", sub_id)
    assert past_due.details["before"]["status"] == "TRIALING"
    assert past_due.details["after"]["status"] == "PENDING_PAYMENT"
    r = await _put(pclient, payer, "a.txt", b"x")
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    # Paying it starts the paid period where the trial ended.
    assert (await _admin_pay(pclient, padmin, invoice.id)).status_code == 200
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.current_period_start, sub.grace_ends_at) == ("ACTIVE", trial_end, None)
    assert sub.current_period_end == period_end(trial_end, "monthly")
    assert (await _user(papp, payer.id)).billing_hold is None
    assert (await _put(pclient, payer, "a.txt", b"x")).status_code == 201


@pytest.mark.parametrize("invoice_period", ["trial_end", "legacy_none"])
async def test_a_trial_ending_with_auto_renew_is_paid_from_credits(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, invoice_period: str
) -> None:
    """The trial's invoice carries the period after the trial (or, made before invoices carried their period,
    none): either way it is the one paid, for the month starting at the trial's end."""
    sub_id, invoice = await _trial(pclient, papp, payer, padmin)
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 2500)
    assert await run_billing(papp) == 0  # the trial is still running: nothing is charged early
    await _consistent(papp, payer.id, 2500)
    trial_end = _past()
    await end_period(papp, sub_id, at=trial_end)
    aligned = {"period_start": trial_end, "period_end": period_end(trial_end, "monthly")}
    async with papp.state.db.sessions() as s, s.begin():
        await s.execute(
            update(Invoice)
            .where(Invoice.id == invoice.id)
            .values(**(aligned if invoice_period == "trial_end" else {"period_start": None, "period_end": None}))
        )
    assert await run_billing(papp) == 1
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.current_period_start, sub.grace_ends_at) == ("ACTIVE", trial_end, None)
    assert sub.current_period_end == period_end(trial_end, "monthly")
    [paid] = await _invoices(papp, payer.id)
    assert (paid.id, paid.status, paid.provider, paid.period_start) == (invoice.id, "PAID", "credits", trial_end)
    assert await _entries(papp, payer.id) == [(2500, "grant", None), (-2500, "renewal", invoice.id)]
    await _consistent(papp, payer.id, 0)
    assert (await _user(papp, payer.id)).billing_hold is None
    assert len(await audits(papp, "subscription.renewed", sub_id)) == 1
    assert len(await audits(papp, "invoice.paid", invoice.id)) == 1
    assert await audits(papp, "subscription.past_due") == []


async def test_a_trial_paid_early_is_not_charged_again_at_trial_end(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, invoice = await _trial(pclient, papp, payer, padmin)
    trial_end = (await _sub(papp, sub_id)).current_period_end
    assert trial_end is not None
    assert (await _admin_pay(pclient, padmin, invoice.id)).status_code == 200
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.current_period_start) == ("ACTIVE", trial_end)  # paid from the trial's end
    assert sub.current_period_end == period_end(trial_end, "monthly")
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 2500)
    assert await run_billing(papp) == 0
    # The trial's end passes (everything moves 14 days and a minute into the past): still nothing to charge.
    shift = timedelta(days=14, minutes=1)
    assert sub.current_period_start is not None and sub.current_period_end is not None
    async with papp.state.db.sessions() as s, s.begin():
        await s.execute(
            update(Subscription)
            .where(Subscription.id == sub_id)
            .values(
                current_period_start=sub.current_period_start - shift,
                current_period_end=sub.current_period_end - shift,
            )
        )
        await s.execute(
            update(Invoice)
            .where(Invoice.id == invoice.id)
            .values(period_start=sub.current_period_start - shift, period_end=sub.current_period_end - shift)
        )
    assert sub.current_period_start - shift < utcnow()  # the trial is over
    assert await run_billing(papp) == 0
    [only] = await _invoices(papp, payer.id)
    assert (only.id, only.status, only.provider) == (invoice.id, "PAID", "manual")
    assert await _entries(papp, payer.id) == [(2500, "grant", None)]
    await _consistent(papp, payer.id, 2500)
    assert (await _sub(papp, sub_id)).status == "ACTIVE"
    assert await audits(papp, "subscription.renewed") == []
    assert await audits(papp, "subscription.past_due") == []


# --- 7. a refund of a period that has ended ------------------------------------------------------------------


async def test_refunding_the_first_period_after_a_renewal_leaves_the_renewed_period(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    completed = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_first",
            "object": "checkout.session",
            "payment_status": "paid",
            "payment_intent": "pi_x",
            "amount_total": 500,
            "currency": "usd",
            "client_reference_id": inv["id"],
            "metadata": {"invoiceId": inv["id"]},
        },
    )
    r = await post_stripe(pclient, completed)
    assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text
    sub_id = (await subscription(pclient, payer))["current"]["id"]
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.provider, sub.tier_id) == ("ACTIVE", "stripe", "tier_starter")
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 500)
    # The first period ends: the subscription's end and the period the first invoice paid for end together.
    old_end = _past()
    await end_period(papp, sub_id, at=old_end)
    async with papp.state.db.sessions() as s, s.begin():
        await s.execute(update(Invoice).where(Invoice.id == inv["id"]).values(period_end=old_end))
    assert await run_billing(papp) == 1
    first, renewal = await _invoices(papp, payer.id)
    assert (renewal.status, renewal.provider, renewal.period_start) == ("PAID", "credits", old_end)
    await _consistent(papp, payer.id, 0)

    refund = stripe_event(
        "charge.refunded",
        {"id": "ch_x", "object": "charge", "payment_intent": "pi_x", "amount_refunded": 500, "currency": "usd"},
    )
    r = await post_stripe(pclient, refund)
    assert r.status_code == 200 and r.json()["outcome"] == "refunded", r.text
    first, renewal_after = await _invoices(papp, payer.id)  # no invoice is reissued
    assert (first.id, first.status, first.refunded_cents) == (inv["id"], "REFUNDED", 500)
    assert (renewal_after.id, renewal_after.status) == (renewal.id, "PAID")
    async with papp.state.db.sessions() as s:
        [payment] = (await s.scalars(select(Payment).where(Payment.user_id == payer.id))).all()
    assert (payment.provider_payment_id, payment.status, payment.refunded_cents) == ("pi_x", "REFUNDED", 500)
    sub = await _sub(papp, sub_id)
    assert (sub.status, sub.grace_ends_at, sub.current_period_start) == ("ACTIVE", None, old_end)
    assert sub.current_period_end == period_end(old_end, "monthly")
    assert (await _user(papp, payer.id)).billing_hold is None
    assert await _entries(papp, payer.id) == [(500, "grant", None), (-500, "renewal", renewal.id)]
    await _consistent(papp, payer.id, 0)
    [refunded] = await audits(papp, "payment.refunded", payment.id)
    assert refunded.details["refundedCents"] == 500 and refunded.details["fromCreditCents"] == 0
    assert refunded.details["invoiceId"] == inv["id"] and refunded.actor_type == "provider"
    assert await audits(papp, "subscription.past_due") == []
    assert (await _put(pclient, payer, "a.txt", b"still active")).status_code == 201
    # The same refund delivered again changes nothing.
    again = await post_stripe(pclient, refund)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(await audits(papp, "payment.refunded")) == 1


# --- 8. changes at the period end ----------------------------------------------------------------------------


async def test_a_scheduled_downgrade_starts_and_renews_from_credits_in_one_run(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin, "tier_pro")
    assert (await _admin_pay(pclient, padmin, inv["id"])).status_code == 200  # Pro, paid
    pro_id = (await subscription(pclient, payer))["current"]["id"]
    r = await pclient.post("/api/tier-requests", json={"tierId": "tier_starter"}, headers=payer.headers)
    assert r.status_code == 201, r.text
    r = await pclient.patch(
        f"/api/tier-requests/admin/{r.json()['id']}/approve", json={"approved": True}, headers=padmin.headers
    )
    assert r.status_code == 200 and r.json()["effective"] == "period_end" and r.json()["invoiceId"] is None
    assert (await _sub(papp, pro_id)).scheduled_tier_id == "tier_starter"
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 500)
    assert await run_billing(papp) == 0
    old_end = _past()
    await end_period(papp, pro_id, at=old_end)
    assert await run_billing(papp) == 1
    pro = await _sub(papp, pro_id)
    assert (pro.status, pro.is_current) == ("EXPIRED", False)
    starter = await _current(papp, payer.id)
    assert (starter.tier_id, starter.status, starter.auto_renew_from_credits) == ("tier_starter", "ACTIVE", True)
    assert (starter.current_period_start, starter.current_period_end) == (old_end, period_end(old_end, "monthly"))
    pro_invoice, renewal = await _invoices(papp, payer.id)
    assert (pro_invoice.id, pro_invoice.status) == (inv["id"], "PAID")
    assert (renewal.subscription_id, renewal.tier_id, renewal.amount_cents) == (starter.id, "tier_starter", 500)
    assert (renewal.status, renewal.provider, renewal.period_start) == ("PAID", "credits", old_end)
    assert await _entries(papp, payer.id) == [(500, "grant", None), (-500, "renewal", renewal.id)]
    await _consistent(papp, payer.id, 0)
    u = await _user(papp, payer.id)
    assert (u.tier_id, u.billing_hold) == ("tier_starter", None)
    [change] = await audits(papp, "subscription.period_change", payer.id)
    assert change.details["before"]["id"] == pro_id and change.details["after"]["tierId"] == "tier_starter"
    assert [e.target_id for e in await audits(papp, "subscription.renewed")] == [starter.id]
    assert await run_billing(papp) == 0


async def test_cancel_at_period_end_falls_to_the_default_tier_without_an_invoice(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first_invoice = await _paid_starter(pclient, payer, padmin)
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 500)  # credit and auto-renew: a cancellation still wins
    r = await pclient.post("/api/billing/subscription/cancel", headers=payer.headers)
    assert r.status_code == 200 and r.json()["cancelAtPeriodEnd"] is True, r.text
    assert len(await audits(papp, "subscription.cancel_scheduled", sub_id)) == 1
    await end_period(papp, sub_id, at=_past())
    assert await run_billing(papp) == 1
    old = await _sub(papp, sub_id)
    assert (old.status, old.is_current) == ("CANCELLED", False)
    new = await _current(papp, payer.id)
    assert (new.tier_id, new.status, new.current_period_end) == ("tier_free", "ACTIVE", None)
    assert [(i.id, i.status) for i in await _invoices(papp, payer.id)] == [(first_invoice, "PAID")]
    assert await _entries(papp, payer.id) == [(500, "grant", None)]
    await _consistent(papp, payer.id, 500)
    u = await _user(papp, payer.id)
    assert (u.tier_id, u.billing_hold) == ("tier_free", None)
    [change] = await audits(papp, "subscription.period_change", payer.id)
    assert change.details["after"]["tierId"] == "tier_free"
    assert await audits(papp, "subscription.renewed") == []
    assert await run_billing(papp) == 0


# --- the next period's invoice, ahead of the period end --------------------------------------------------------


async def test_the_next_invoice_is_issued_ahead_and_paying_it_early_extends_the_period(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first = await _paid_starter(pclient, payer, padmin)
    far = utcnow() + timedelta(days=10)
    await end_period(papp, sub_id, far)
    assert await run_billing(papp) == 0  # not within the notice (3 days) yet: nothing issued
    assert [i.id for i in await _invoices(papp, payer.id)] == [first]
    soon = utcnow() + timedelta(days=2)
    await end_period(papp, sub_id, soon)
    assert await run_billing(papp) == 1
    assert await run_billing(papp) == 0  # issued once
    ahead = [i for i in await _invoices(papp, payer.id) if i.id != first]
    assert [(i.kind, i.status, i.amount_cents, i.period_start) for i in ahead] == [("renewal", "PENDING", 500, soon)]
    (issued,) = await audits(papp, "invoice.issued", ahead[0].id)
    assert issued.details["subscriptionId"] == sub_id
    sub = await _sub(papp, sub_id)
    assert sub.status == "ACTIVE" and (await _user(papp, payer.id)).billing_hold is None  # still in good standing
    # Paying ahead extends the period at once; at the old end nothing more happens.
    await _grant(pclient, padmin, payer, 500)
    r = await pclient.post(f"/api/billing/invoices/{ahead[0].id}/pay-with-credits", headers=payer.headers)
    assert r.status_code == 200 and r.json()["status"] == "PAID", r.text
    sub = await _sub(papp, sub_id)
    assert (sub.current_period_start, sub.current_period_end) == (soon, period_end(soon, "monthly"))
    assert await run_billing(papp) == 0
    assert len(await _invoices(papp, payer.id)) == 2 and await balance(pclient, payer) == 0


async def test_an_invoice_issued_ahead_is_paid_from_credits_only_at_the_period_end(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first = await _paid_starter(pclient, payer, padmin)
    await _auto_renew(pclient, payer)
    await _grant(pclient, padmin, payer, 500)
    old_end = utcnow() + timedelta(days=1)
    await end_period(papp, sub_id, old_end)
    assert await run_billing(papp) == 1
    (ahead,) = [i for i in await _invoices(papp, payer.id) if i.id != first]
    assert ahead.status == "PENDING" and await balance(pclient, payer) == 500  # not charged early
    await end_period(papp, sub_id, utcnow() - timedelta(seconds=1))
    async with papp.state.db.sessions() as s, s.begin():  # the invoice follows the moved period end
        await s.execute(
            update(Invoice).where(Invoice.id == ahead.id).values(period_start=utcnow() - timedelta(seconds=1))
        )
    async with papp.state.db.sessions() as s:
        moved = (await s.get(Invoice, ahead.id)).period_start  # type: ignore[union-attr]
    await end_period(papp, sub_id, moved)
    assert await run_billing(papp) == 1
    invoices = await _invoices(papp, payer.id)
    assert [(i.id, i.status, i.provider) for i in invoices] == [
        (first, "PAID", "manual"),
        (ahead.id, "PAID", "credits"),
    ]
    assert await balance(pclient, payer) == 0 and (await _sub(papp, sub_id)).status == "ACTIVE"
    await _consistent(papp, payer.id, 0)


async def test_cancelling_voids_an_invoice_issued_ahead(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first = await _paid_starter(pclient, payer, padmin)
    await end_period(papp, sub_id, utcnow() + timedelta(days=1))
    assert await run_billing(papp) == 1
    (ahead,) = [i for i in await _invoices(papp, payer.id) if i.id != first]
    r = await pclient.post("/api/billing/subscription/cancel", headers=payer.headers)
    assert r.status_code == 200, r.text
    statuses = {i.id: i.status for i in await _invoices(papp, payer.id)}
    assert statuses == {first: "PAID", ahead.id: "VOID"}
    assert await run_billing(papp) == 0  # a cancelled subscription is not invoiced again


async def test_the_user_is_told_about_invoices_renewals_past_due_and_expiry(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, other_payer: TestUser
) -> None:
    sub_id, _ = await _paid_starter(pclient, payer, padmin)
    await end_period(papp, sub_id, utcnow() + timedelta(days=1))
    await run_billing(papp)  # issued ahead
    await end_period(papp, sub_id)
    async with papp.state.db.sessions() as s, s.begin():  # the period end arrives for the issued invoice too
        sub = await s.get(Subscription, sub_id)
        assert sub is not None
        await s.execute(
            update(Invoice)
            .where(Invoice.subscription_id == sub_id, Invoice.status == "PENDING")
            .values(period_start=sub.current_period_end)
        )
    await run_billing(papp)  # no credits, no auto-renew: PAST_DUE
    await end_grace(papp, sub_id)
    await run_billing(papp)  # expired

    r = await pclient.get("/api/notifications", headers=payer.headers)
    assert r.status_code == 200, r.text
    kinds = [n["kind"] for n in r.json()["items"]]
    assert sorted(k for k in kinds if k.startswith("billing.")) == [
        "billing.expired",
        "billing.invoice",
        "billing.past_due",
    ]
    past_due = next(n for n in r.json()["items"] if n["kind"] == "billing.past_due")
    assert "5.00 USD" in past_due["body"] and past_due["data"]["subscriptionId"] == sub_id
    # Nobody else sees them.
    r = await pclient.get("/api/notifications", headers=other_payer.headers)
    assert [n for n in r.json()["items"] if n["kind"].startswith("billing.")] == []
