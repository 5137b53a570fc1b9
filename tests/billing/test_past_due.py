"""PAST_DUE and its grace period: an unpaid renewal pauses uploads (reads stay allowed) until it is paid;
the grace running out falls back to the default tier and keeps the data; a refund of a period that has
ended changes nothing that followed it.

The billing job runs as the scheduler would (`run_billing`); time moves by putting a period end (or a grace
end) into the past. Every transition is checked in the stored rows, the credit ledger and the audit log."""

from __future__ import annotations

from datetime import datetime

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.kit.periods import period_end
from pockity.models import Invoice, Payment
from tests.fixtures.billing import (
    GRACE,
    admin_pay,
    current_row,
    grant_credits,
    invoice_rows,
    ledger_consistent,
    ledger_entries,
    minutes_ago,
    paid_starter,
    put_file,
    set_auto_renew,
    sub_row,
    user_row,
)
from tests.fixtures.payments import (
    audits,
    end_grace,
    end_period,
    post_stripe,
    run_billing,
    stripe_event,
    subscribe_invoice,
    subscription,
)
from tests.fixtures.storage import local_files
from tests.fixtures.users import TestUser

# --- helpers -------------------------------------------------------------------------------------------------


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


async def _past_due_starter(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> tuple[str, datetime, bytes]:
    """A paid Starter user with a file, whose period ended with 499 credits and auto-renew on: PAST_DUE.
    Returns (subscription id, the old period end, the file's content)."""
    sub_id, _ = await paid_starter(client, user, admin)
    data = b"kept through billing trouble"
    assert (await put_file(client, user, "a.txt", data)).status_code == 201
    await set_auto_renew(client, user)
    await grant_credits(client, admin, user, 499)
    old_end = minutes_ago()
    await end_period(app, sub_id, at=old_end)
    assert await run_billing(app) == 1
    assert (await sub_row(app, sub_id)).status == "PAST_DUE"
    return sub_id, old_end, data


async def _pay_renewal(
    how: str, client: httpx.AsyncClient, admin: TestUser, user: TestUser, invoice_id: str
) -> httpx.Response:
    if how == "admin":
        return await admin_pay(client, admin, invoice_id)
    await grant_credits(client, admin, user, 1)  # 499 + 1 covers it now
    return await client.post(f"/api/billing/invoices/{invoice_id}/pay-with-credits", headers=user.headers)


async def _past_due_then_paid(
    how: str, client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    sub_id, old_end, data = await _past_due_starter(client, app, user, admin)
    sub = await sub_row(app, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("PAST_DUE", True, old_end + GRACE)
    assert sub.current_period_end == old_end  # the unpaid period is not granted
    assert (await user_row(app, user.id)).billing_hold == "past_due"
    _, renewal = await invoice_rows(app, user.id)
    assert (renewal.kind, renewal.status, renewal.amount_cents, renewal.period_start) == (
        "renewal",
        "PENDING",
        500,
        old_end,
    )
    assert renewal.due_at == old_end + GRACE
    assert await ledger_entries(app, user.id) == [(499, "grant", None)]  # no debit was attempted on the ledger
    await ledger_consistent(app, user.id, 499)
    [past_due] = await audits(app, "subscription.past_due", sub_id)
    assert past_due.details["invoiceId"] == renewal.id
    assert past_due.details["before"]["status"] == "ACTIVE" and past_due.details["after"]["status"] == "PAST_DUE"
    assert await audits(app, "subscription.renewed") == []
    api = (await subscription(client, user))["current"]
    assert api["status"] == "PAST_DUE" and datetime.fromisoformat(api["graceEndsAt"]) == old_end + GRACE

    # Uploads are paused; everything already stored can still be read.
    r = await put_file(client, user, "b.txt", b"new")
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    r = await put_file(client, user, "a.txt", b"overwrite")
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    await _readable(client, app, user, "a.txt", data)
    assert "b.txt" not in local_files(app, user.id)
    # Another run during the grace period changes nothing.
    assert await run_billing(app) == 0
    assert len(await invoice_rows(app, user.id)) == 2

    paid = await _pay_renewal(how, client, admin, user, renewal.id)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "PAID"
    sub = await sub_row(app, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("ACTIVE", True, None)
    assert (sub.current_period_start, sub.current_period_end) == (old_end, period_end(old_end, "monthly"))
    u = await user_row(app, user.id)
    assert (u.billing_hold, u.tier_id) == (None, "tier_starter")
    assert (await put_file(client, user, "b.txt", b"new")).status_code == 201
    assert [e.target_id for e in await audits(app, "invoice.paid")][-1] == renewal.id


# --- 2. not enough credit: PAST_DUE, uploads paused, reads allowed; paying restores ---------------------------


async def test_past_due_paid_by_an_admin(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await _past_due_then_paid("admin", pclient, papp, payer, padmin)
    await ledger_consistent(papp, payer.id, 499)  # paid by hand: the credit is untouched


async def test_past_due_paid_with_credits_after_a_grant(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await _past_due_then_paid("credits", pclient, papp, payer, padmin)
    _, renewal = await invoice_rows(papp, payer.id)
    assert renewal.provider == "credits"
    assert (await ledger_entries(papp, payer.id))[-1] == (-500, "invoice", renewal.id)
    await ledger_consistent(papp, payer.id, 0)


# --- 4. grace runs out -------------------------------------------------------------------------------------


async def test_grace_expiry_falls_back_to_the_default_tier_and_keeps_the_data(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, old_end, data = await _past_due_starter(pclient, papp, payer, padmin)
    _, renewal = await invoice_rows(papp, payer.id)
    await end_grace(papp, sub_id)
    assert await run_billing(papp) == 1
    old = await sub_row(papp, sub_id)
    assert (old.status, old.is_current) == ("EXPIRED", False) and old.ended_at is not None
    first, voided = await invoice_rows(papp, payer.id)
    assert (first.status, voided.id, voided.status, voided.period_start) == ("PAID", renewal.id, "VOID", old_end)
    new = await current_row(papp, payer.id)
    assert (new.tier_id, new.status, new.current_period_end) == ("tier_free", "ACTIVE", None)
    u = await user_row(papp, payer.id)
    assert (u.tier_id, u.billing_hold) == ("tier_free", None)
    api = await subscription(pclient, payer)
    assert (api["current"]["id"], api["tier"]["id"]) == (new.id, "tier_free")
    # Billing never deletes data: the file is there, readable, and writes work again on the free tier.
    await _readable(pclient, papp, payer, "a.txt", data)
    assert (await put_file(pclient, payer, "b.txt", b"free tier")).status_code == 201
    await ledger_consistent(papp, payer.id, 499)  # the credit is still the user's
    [expired] = await audits(papp, "subscription.expired", sub_id)
    assert (expired.actor_type, expired.actor_id) == ("system", "jobs")
    assert expired.details["before"]["status"] == "PAST_DUE"
    assert expired.details["after"]["tierId"] == "tier_free"
    # The voided invoice cannot be paid by an admin...
    late = await admin_pay(pclient, padmin, renewal.id)
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
    assert [i.status for i in await invoice_rows(papp, payer.id)] == ["PAID", "VOID"]
    assert (await ledger_entries(papp, payer.id))[-1][:2] == (500, "unapplied_payment")
    await ledger_consistent(papp, payer.id, 999)
    assert (await current_row(papp, payer.id)).id == new.id
    # Nothing more is due.
    assert await run_billing(papp) == 0


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
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.provider, sub.tier_id) == ("ACTIVE", "stripe", "tier_starter")
    await set_auto_renew(pclient, payer)
    await grant_credits(pclient, padmin, payer, 500)
    # The first period ends: the subscription's end and the period the first invoice paid for end together.
    old_end = minutes_ago()
    await end_period(papp, sub_id, at=old_end)
    async with papp.state.db.sessions() as s, s.begin():
        await s.execute(update(Invoice).where(Invoice.id == inv["id"]).values(period_end=old_end))
    assert await run_billing(papp) == 1
    first, renewal = await invoice_rows(papp, payer.id)
    assert (renewal.status, renewal.provider, renewal.period_start) == ("PAID", "credits", old_end)
    await ledger_consistent(papp, payer.id, 0)

    refund = stripe_event(
        "charge.refunded",
        {"id": "ch_x", "object": "charge", "payment_intent": "pi_x", "amount_refunded": 500, "currency": "usd"},
    )
    r = await post_stripe(pclient, refund)
    assert r.status_code == 200 and r.json()["outcome"] == "refunded", r.text
    first, renewal_after = await invoice_rows(papp, payer.id)  # no invoice is reissued
    assert (first.id, first.status, first.refunded_cents) == (inv["id"], "REFUNDED", 500)
    assert (renewal_after.id, renewal_after.status) == (renewal.id, "PAID")
    async with papp.state.db.sessions() as s:
        [payment] = (await s.scalars(select(Payment).where(Payment.user_id == payer.id))).all()
    assert (payment.provider_payment_id, payment.status, payment.refunded_cents) == ("pi_x", "REFUNDED", 500)
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.grace_ends_at, sub.current_period_start) == ("ACTIVE", None, old_end)
    assert sub.current_period_end == period_end(old_end, "monthly")
    assert (await user_row(papp, payer.id)).billing_hold is None
    assert await ledger_entries(papp, payer.id) == [(500, "grant", None), (-500, "renewal", renewal.id)]
    await ledger_consistent(papp, payer.id, 0)
    [refunded] = await audits(papp, "payment.refunded", payment.id)
    assert refunded.details["refundedCents"] == 500 and refunded.details["fromCreditCents"] == 0
    assert refunded.details["invoiceId"] == inv["id"] and refunded.actor_type == "provider"
    assert await audits(papp, "subscription.past_due") == []
    assert (await put_file(pclient, payer, "a.txt", b"still active")).status_code == 201
    # The same refund delivered again changes nothing.
    again = await post_stripe(pclient, refund)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(await audits(papp, "payment.refunded")) == 1
