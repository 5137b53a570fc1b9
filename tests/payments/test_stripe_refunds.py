"""Stripe failures and refunds: a failed attempt leaves the invoice payable, an expired checkout closes its
attempt, a refund takes back credit first and puts a refunded current period PAST_DUE, and a refund
before its payment waits for it.

Every webhook here is signed with Stripe's documented scheme by the fixture helpers; what the server sent to
the stub and what it stored (payments, the event inbox, the credit ledger, invoices, subscriptions, audit) is
read back and asserted, not just the status code.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from fastapi import FastAPI

from pockity.kit.time import utcnow
from tests.fixtures.payments import (
    GRACE_DAYS,
    audits,
    balance,
    billing_hold,
    current_subscription,
    invoice,
    invoice_row,
    ledger_and_account,
    payment_events,
    payment_row,
    post_stripe,
    stripe_event,
    subscribe_invoice,
    subscription,
)
from tests.fixtures.stripe import (
    ack_event,
    checkout_completed,
    ledger_rows,
    new_event_id,
    new_payment_intent,
    paid_by_stripe,
    start_checkout,
)
from tests.fixtures.users import TestUser

# --- helpers ---------------------------------------------------------------------------------------------


def _charge_refunded(payment_intent: str, refunded_total: int, amount: int = 500) -> bytes:
    return stripe_event(
        "charge.refunded",
        {
            "id": f"ch_test_{uuid.uuid4().hex[:12]}",
            "object": "charge",
            "amount": amount,
            "amount_refunded": refunded_total,
            "currency": "usd",
            "payment_intent": payment_intent,
            "refunded": refunded_total >= amount,
        },
        event_id=new_event_id(),
    )


# --- failures and refunds --------------------------------------------------------------------------------


async def test_failed_payment_marks_the_invoice_failed_but_still_payable(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    first = await start_checkout(pclient, payer, inv["id"])
    body = checkout_completed(
        first["sessionId"], inv["id"], new_payment_intent(), kind="checkout.session.async_payment_failed"
    )
    await ack_event(pclient, body, "invoice_failed")
    failed = await invoice(pclient, payer, inv["id"])
    assert failed["status"] == "FAILED" and failed["paidAt"] is None
    assert (await payment_row(papp, first["paymentId"])).status == "FAILED"
    (audit,) = await audits(papp, "invoice.payment_failed", inv["id"])
    assert audit.details["provider"] == "stripe"
    sub = await subscription(pclient, payer)
    assert sub["current"]["tierId"] == "tier_free" and sub["pending"]["status"] == "PENDING_PAYMENT"

    # invoice.payment_failed for an invoice already FAILED is noted, not recorded twice.
    again = stripe_event(
        "invoice.payment_failed", {"id": "in_test_x", "object": "invoice", "metadata": {"invoiceId": inv["id"]}}
    )
    await ack_event(pclient, again, "noted")
    assert len(await audits(papp, "invoice.payment_failed", inv["id"])) == 1

    # Still payable: a new checkout and its completion pay it.
    second = await start_checkout(pclient, payer, inv["id"])
    await ack_event(pclient, checkout_completed(second["sessionId"], inv["id"], new_payment_intent()), "applied")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    assert (await subscription(pclient, payer))["current"]["tierId"] == "tier_starter"
    assert await balance(pclient, payer) == 0


async def test_invoice_payment_failed_event_marks_a_pending_invoice_failed(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    body = stripe_event(
        "invoice.payment_failed",
        {
            "id": "in_test_failed",
            "object": "invoice",
            "metadata": {"invoiceId": inv["id"]},
            "last_finalization_error": {"message": "card declined"},
        },
    )
    await ack_event(pclient, body, "invoice_failed")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "FAILED"
    (audit,) = await audits(papp, "invoice.payment_failed", inv["id"])
    assert audit.details["reason"] == "card declined"
    await paid_by_stripe(pclient, payer, inv["id"])
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"


async def test_refund_of_the_current_period_puts_the_subscription_past_due_until_paid_again(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made, pi = await paid_by_stripe(pclient, payer, inv["id"])
    r = await pclient.put("/api/storage/files/before.txt", content=b"kept", headers=payer.headers)
    assert r.status_code == 201, r.text
    paid = await invoice_row(papp, inv["id"])

    await ack_event(pclient, _charge_refunded(pi, 500), "refunded")
    refunded = await invoice(pclient, payer, inv["id"])
    assert (refunded["status"], refunded["refundedCents"]) == ("REFUNDED", 500)
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("REFUNDED", 500)
    sub = await current_subscription(papp, payer.id)
    assert (sub.status, sub.tier_id) == ("PAST_DUE", "tier_starter")
    assert sub.grace_ends_at is not None
    expected_grace = utcnow() + timedelta(days=GRACE_DAYS)
    assert abs((sub.grace_ends_at - expected_grace).total_seconds()) < 60
    assert await billing_hold(papp, payer.id) == "past_due"
    (past_due,) = await audits(papp, "subscription.past_due", sub.id)
    assert past_due.details["reason"] == "refund"
    (refund_audit,) = await audits(papp, "payment.refunded", payment.id)
    assert refund_audit.details["refundedCents"] == 500 and refund_audit.details["fromCreditCents"] == 0
    assert await balance(pclient, payer) == 0 and await ledger_rows(papp, payer.id) == []

    # Uploads are refused; what is stored can still be read.
    r = await pclient.put("/api/storage/files/x.txt", content=b"hello", headers=payer.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    r = await pclient.get("/api/storage/files/before.txt/content", headers=payer.headers)
    assert r.status_code == 200 and r.content == b"kept"

    # The period is invoiced again.
    invoices = (await pclient.get("/api/billing/invoices", headers=payer.headers)).json()["items"]
    reissued = [i for i in invoices if i["id"] != inv["id"]]
    assert [(i["status"], i["amountCents"], i["subscriptionId"]) for i in reissued] == [("PENDING", 500, sub.id)]
    again = await invoice_row(papp, reissued[0]["id"])
    assert (again.kind, again.period_start, again.period_end) == ("renewal", paid.period_start, paid.period_end)

    # The same refund reported again changes nothing.
    await ack_event(pclient, _charge_refunded(pi, 500), "noted")
    assert len((await pclient.get("/api/billing/invoices", headers=payer.headers)).json()["items"]) == 2
    assert len(await audits(papp, "subscription.past_due")) == 1

    # Paying the re-issued invoice restores the subscription and lifts the hold.
    await paid_by_stripe(pclient, payer, again.id)
    assert (await invoice(pclient, payer, again.id))["status"] == "PAID"
    sub = await current_subscription(papp, payer.id)
    assert (sub.status, sub.tier_id, sub.grace_ends_at) == ("ACTIVE", "tier_starter", None)
    assert sub.current_period_end == paid.period_end
    assert await billing_hold(papp, payer.id) is None
    r = await pclient.put("/api/storage/files/x.txt", content=b"hello", headers=payer.headers)
    assert r.status_code == 201, r.text
    assert await balance(pclient, payer) == 0


async def test_an_expired_checkout_closes_its_attempt_and_leaves_the_invoice_open(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    expired = stripe_event("checkout.session.expired", {"id": made["sessionId"], "object": "checkout.session"})
    await ack_event(pclient, expired, "closed")
    assert (await payment_row(papp, made["paymentId"])).status == "FAILED"
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"  # still payable
    await ack_event(pclient, stripe_event("checkout.session.expired", {"id": "cs_unknown"}), "ignored")
    # A later checkout for the same invoice pays it.
    again = await start_checkout(pclient, payer, inv["id"])
    await ack_event(pclient, checkout_completed(again["sessionId"], inv["id"], new_payment_intent(), 500), "applied")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"


async def test_a_refund_before_its_payment_is_retried_until_the_payment_is_recorded(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    pi = new_payment_intent()
    refund = _charge_refunded(pi, 500)
    r = await post_stripe(pclient, refund)
    # Not applicable yet: 503 so Stripe delivers it again; stored, unprocessed, with the reason.
    assert (r.status_code, r.json()["error"]["code"]) == (503, "event_processing_failed")
    (event,) = await payment_events(papp)
    assert event.processed_at is None and event.attempts == 1 and "to refund yet" in (event.error or "")
    await ack_event(pclient, checkout_completed(made["sessionId"], inv["id"], pi, 500), "applied")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    # The redelivery now applies, once.
    await ack_event(pclient, refund, "refunded")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "REFUNDED"
    await ack_event(pclient, refund, "refunded", duplicate=True)
    refunded = [e for e in await payment_events(papp) if e.event_type == "charge.refunded"]
    assert [(e.outcome, e.error, e.attempts) for e in refunded] == [("refunded", None, 2)]
    assert len(await audits(papp, "payment.refunded")) == 1


async def test_refund_of_an_overpayment_takes_back_the_credit_first(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made, pi = await paid_by_stripe(pclient, payer, inv["id"], amount=800)
    assert await balance(pclient, payer) == 300

    await ack_event(pclient, _charge_refunded(pi, 200, amount=800), "refunded")
    assert await balance(pclient, payer) == 100
    assert await ledger_and_account(papp, payer.id) == (100, 100)
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("CONFIRMED", 200)
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    assert (await current_subscription(papp, payer.id)).status == "ACTIVE"
    assert await billing_hold(papp, payer.id) is None

    # The rest of the refund: the remaining credit, then the invoice.
    await ack_event(pclient, _charge_refunded(pi, 800, amount=800), "refunded")
    assert await balance(pclient, payer) == 0
    assert await ledger_and_account(papp, payer.id) == (0, 0)
    assert [(a, r) for a, r, _ in await ledger_rows(papp, payer.id)] == [
        (300, "overpayment"),
        (-200, "refund"),
        (-100, "refund"),
    ]
    refunded = await invoice(pclient, payer, inv["id"])
    assert (refunded["status"], refunded["refundedCents"]) == ("REFUNDED", 500)
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("REFUNDED", 800)
    assert (await current_subscription(papp, payer.id)).status == "PAST_DUE"
