"""Stripe: Checkout Sessions at the provider stub, and signed webhooks applied exactly once.

Every webhook here is signed with Stripe's documented scheme by the fixture helpers; what the server sent to
the stub and what it stored (payments, the event inbox, the credit ledger, invoices, subscriptions, audit) is
read back and asserted, not just the status code.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.kit.time import utcnow
from pockity.models import CreditEntry, Payment, PaymentEvent
from tests.fixtures.payments import (
    GRACE_DAYS,
    ProviderStub,
    audits,
    balance,
    billing_hold,
    checkout,
    current_subscription,
    invoice,
    invoice_row,
    ledger_and_account,
    payment_events,
    payment_row,
    payments_of,
    post_stripe,
    row_count,
    stripe_event,
    stripe_signature,
    subscribe_invoice,
    subscription,
    topup_invoice,
)
from tests.fixtures.storage import usage
from tests.fixtures.users import TestUser

GIB = 1024**3


# --- helpers ---------------------------------------------------------------------------------------------


def _pi() -> str:
    return f"pi_test_{uuid.uuid4().hex[:16]}"


def _evt() -> str:
    return f"evt_test_{uuid.uuid4().hex[:16]}"


async def _checkout(client: httpx.AsyncClient, user: TestUser, invoice_id: str) -> dict[str, Any]:
    return await checkout(client, user, invoice_id, "stripe")


def _completed(
    session_id: str,
    invoice_id: str,
    payment_intent: str,
    amount: int = 500,
    *,
    currency: str = "usd",
    payment_status: str = "paid",
    event_id: str | None = None,
    kind: str = "checkout.session.completed",
) -> bytes:
    return stripe_event(
        kind,
        {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "client_reference_id": invoice_id,
            "metadata": {"invoiceId": invoice_id},
            "payment_intent": payment_intent,
            "payment_status": payment_status,
            "amount_total": amount,
            "currency": currency,
        },
        event_id=event_id or _evt(),
    )


def _invoice_paid(invoice_id: str, payment_intent: str, amount: int = 500, event_id: str | None = None) -> bytes:
    return stripe_event(
        "invoice.paid",
        {
            "id": f"in_test_{uuid.uuid4().hex[:12]}",
            "object": "invoice",
            "amount_paid": amount,
            "currency": "usd",
            "payment_intent": payment_intent,
            "metadata": {"invoiceId": invoice_id},
            "status": "paid",
        },
        event_id=event_id or _evt(),
    )


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
        event_id=_evt(),
    )


async def _ack(client: httpx.AsyncClient, body: bytes, outcome: str, duplicate: bool = False) -> None:
    r = await post_stripe(client, body)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "duplicate": duplicate, "outcome": outcome}


async def _entries(app: FastAPI, user_id: str) -> list[tuple[int, str, str | None]]:
    async with app.state.db.sessions() as s:
        rows = await s.execute(
            select(CreditEntry.amount_cents, CreditEntry.reason, CreditEntry.reference)
            .where(CreditEntry.user_id == user_id)
            .order_by(CreditEntry.id)
        )
    return [(int(a), str(r), ref) for a, r, ref in rows.all()]


async def _paid_by_stripe(
    client: httpx.AsyncClient, user: TestUser, invoice_id: str, amount: int = 500
) -> tuple[dict[str, Any], str]:
    """Checkout and its completion: the checkout answer and the PaymentIntent id."""
    made = await _checkout(client, user, invoice_id)
    pi = _pi()
    await _ack(client, _completed(made["sessionId"], invoice_id, pi, amount), "applied")
    return made, pi


# --- checkout --------------------------------------------------------------------------------------------


async def test_checkout_creates_a_session_for_exactly_the_invoice(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, provider_stub: ProviderStub
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    r = await pclient.post(
        f"/api/billing/invoices/{inv['id']}/checkout", json={"provider": "stripe"}, headers=payer.headers
    )
    assert r.status_code == 200, r.text
    out = r.json()
    sid = out["sessionId"]
    assert sid.startswith("cs_test_")
    assert out["provider"] == "stripe" and out["invoiceId"] == inv["id"]
    assert (out["amountCents"], out["currency"]) == (500, "USD")
    assert out["url"] == f"https://checkout.stripe.com/c/pay/{sid}"
    assert out["orderId"] is None and out["keyId"] is None

    assert len(provider_stub.requests) == 1
    sent = provider_stub.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.headers["authorization"] == "Bearer sk_test_pockity"
    assert sent.headers["idempotency-key"] == f"pockity-checkout-{out['paymentId']}"
    form = sent.form
    assert form["mode"] == "payment"
    assert form["client_reference_id"] == inv["id"]
    assert form["customer_email"] == payer.email
    assert form["metadata[invoiceId]"] == inv["id"]
    assert form["metadata[userId]"] == payer.id
    assert form["metadata[paymentId]"] == out["paymentId"]
    assert form["payment_intent_data[metadata][invoiceId]"] == inv["id"]
    assert form["payment_intent_data[metadata][paymentId]"] == out["paymentId"]
    assert form["line_items[0][quantity]"] == "1"
    assert form["line_items[0][price_data][unit_amount]"] == "500"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert inv["id"] in form["success_url"] and inv["id"] in form["cancel_url"]

    (payment,) = await payments_of(papp, payer.id)
    assert payment.id == out["paymentId"] and payment.checkout_ref == sid
    assert (payment.provider, payment.status, payment.invoice_id) == ("stripe", "PENDING", inv["id"])
    assert (payment.amount_cents, payment.currency, payment.provider_payment_id) == (500, "USD", None)
    listed = (await pclient.get("/api/billing/payments", headers=payer.headers)).json()["items"]
    assert [(p["id"], p["checkoutRef"], p["status"]) for p in listed] == [(payment.id, sid, "PENDING")]
    # Starting a checkout pays nothing.
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    assert (await subscription(pclient, payer))["current"]["tierId"] == "tier_free"


async def test_checkout_of_another_users_invoice_is_404(
    pclient: httpx.AsyncClient,
    papp: FastAPI,
    payer: TestUser,
    other_payer: TestUser,
    padmin: TestUser,
    provider_stub: ProviderStub,
) -> None:
    theirs = await subscribe_invoice(pclient, other_payer, padmin)
    for invoice_id in (theirs["id"], "01JZZZZZZZZZZZZZZZZZZZZZZZ"):
        r = await pclient.post(
            f"/api/billing/invoices/{invoice_id}/checkout", json={"provider": "stripe"}, headers=payer.headers
        )
        assert (r.status_code, r.json()["error"]["code"]) == (404, "invoice_not_found")
    assert provider_stub.requests == []
    assert await row_count(papp, Payment) == 0


async def test_checkout_of_a_paid_invoice_is_409(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, provider_stub: ProviderStub
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    r = await pclient.patch(f"/api/admin/invoices/{inv['id']}", json={"status": "PAID"}, headers=padmin.headers)
    assert r.status_code == 200, r.text
    before = await payments_of(papp, payer.id)
    assert [p.provider for p in before] == ["manual"]
    r = await pclient.post(
        f"/api/billing/invoices/{inv['id']}/checkout", json={"provider": "stripe"}, headers=payer.headers
    )
    assert (r.status_code, r.json()["error"]["code"]) == (409, "invoice_not_payable")
    assert r.json()["error"]["details"]["status"] == "PAID"
    assert provider_stub.requests == []
    assert [p.id for p in await payments_of(papp, payer.id)] == [before[0].id]


async def test_provider_error_is_502_and_records_no_checkout(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, provider_stub: ProviderStub
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    provider_stub.fail_next = (
        400,
        {"error": {"type": "invalid_request_error", "message": "Amount must be at least 50 cents"}},
    )
    r = await pclient.post(
        f"/api/billing/invoices/{inv['id']}/checkout", json={"provider": "stripe"}, headers=payer.headers
    )
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_error" and err["details"]["provider"] == "stripe"
    assert "50 cents" in err["details"]["message"]
    assert len(provider_stub.requests) == 1  # a client error is not retried
    (attempt,) = await payments_of(papp, payer.id)
    assert attempt.checkout_ref is None and attempt.status == "FAILED"  # over, not pending for ever
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    # The invoice can still be paid: the next checkout works and gets its own idempotency key.
    again = await _checkout(pclient, payer, inv["id"])
    assert again["paymentId"] != attempt.id
    assert provider_stub.requests[-1].headers["idempotency-key"] == f"pockity-checkout-{again['paymentId']}"
    assert (await payment_row(papp, again["paymentId"])).checkout_ref == again["sessionId"]


# --- webhooks: paying once -------------------------------------------------------------------------------


async def test_completed_checkout_pays_once_and_activates_the_subscription(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    pi, event_id = _pi(), _evt()
    body = _completed(made["sessionId"], inv["id"], pi, 500, event_id=event_id)
    await _ack(pclient, body, "applied")

    paid = await invoice(pclient, payer, inv["id"])
    assert paid["status"] == "PAID" and paid["paidAt"] and paid["provider"] == "stripe"
    assert paid["providerRef"] == made["paymentId"] and paid["crypto"] == []
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.received_cents, payment.credited_cents) == ("CONFIRMED", 500, 0)
    assert (payment.provider_payment_id, payment.checkout_ref) == (pi, made["sessionId"])
    sub = await subscription(pclient, payer)
    assert sub["current"]["tierId"] == "tier_starter" and sub["current"]["status"] == "ACTIVE"
    assert sub["current"]["provider"] == "stripe" and sub["pending"] is None
    u = await usage(pclient, payer)
    assert u["tier"]["id"] == "tier_starter"  # type: ignore[index]
    assert (u["storageLimitBytes"], u["maxObjects"]) == (50 * GIB, 50_000)
    assert await balance(pclient, payer) == 0 and await _entries(papp, payer.id) == []
    (event,) = await payment_events(papp)
    assert (event.provider, event.event_id, event.event_type) == ("stripe", event_id, "checkout.session.completed")
    assert event.processed_at is not None and (event.outcome, event.error, event.attempts) == ("applied", None, 1)
    assert json.loads(event.payload)["data"]["object"]["payment_intent"] == pi
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    (received,) = await audits(papp, "payment.received", made["paymentId"])
    assert received.actor_type == "provider" and received.details["receivedCents"] == 500

    # The same event delivered again: acknowledged as a duplicate, nothing changes.
    await _ack(pclient, body, "applied", duplicate=True)
    assert len(await payment_events(papp)) == 1
    assert (await payment_events(papp))[0].attempts == 1
    # The same money reported by a second, different event (invoice.paid with the same PaymentIntent).
    await _ack(pclient, _invoice_paid(inv["id"], pi, 500), "already_applied")
    assert len(await payment_events(papp)) == 2
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert [(p.status, p.received_cents) for p in await payments_of(papp, payer.id)] == [("CONFIRMED", 500)]
    assert await balance(pclient, payer) == 0 and await _entries(papp, payer.id) == []
    assert (await current_subscription(papp, payer.id)).status == "ACTIVE"


async def test_payment_event_before_the_checkout_completion_pays_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    pi = _pi()
    await _ack(pclient, _invoice_paid(inv["id"], pi, 500), "applied")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    sub = await subscription(pclient, payer)
    assert (sub["current"]["tierId"], sub["current"]["status"]) == ("tier_starter", "ACTIVE")
    period_end = sub["current"]["currentPeriodEnd"]

    # The checkout completion for the same PaymentIntent arrives later: nothing more happens.
    await _ack(pclient, _completed(made["sessionId"], inv["id"], pi, 500), "already_applied")
    confirmed = [p for p in await payments_of(papp, payer.id) if p.status == "CONFIRMED"]
    assert [(p.provider_payment_id, p.received_cents, p.credited_cents) for p in confirmed] == [(pi, 500, 0)]
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert await balance(pclient, payer) == 0 and await _entries(papp, payer.id) == []
    assert (await subscription(pclient, payer))["current"]["currentPeriodEnd"] == period_end
    assert [e.outcome for e in await payment_events(papp)] == ["applied", "already_applied"]


async def test_asynchronous_payment_waits_for_its_success_event(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    pi = _pi()
    await _ack(pclient, _completed(made["sessionId"], inv["id"], pi, payment_status="unpaid"), "awaiting_payment")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    assert (await payment_row(papp, made["paymentId"])).status == "PENDING"
    await _ack(
        pclient,
        _completed(made["sessionId"], inv["id"], pi, kind="checkout.session.async_payment_succeeded"),
        "applied",
    )
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    assert (await payment_row(papp, made["paymentId"])).provider_payment_id == pi


async def test_overpayment_pays_the_invoice_and_credits_the_difference(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made, _ = await _paid_by_stripe(pclient, payer, inv["id"], amount=800)
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.received_cents, payment.credited_cents) == ("CONFIRMED", 800, 300)
    assert await _entries(papp, payer.id) == [(300, "overpayment", payment.id)]
    assert await balance(pclient, payer) == 300
    assert await ledger_and_account(papp, payer.id) == (300, 300)
    credits = (await pclient.get("/api/billing/credits", headers=payer.headers)).json()
    assert [(e["amountCents"], e["reason"]) for e in credits["entries"]] == [(300, "overpayment")]
    (received,) = await audits(papp, "payment.received", payment.id)
    assert received.details["creditedCents"] == 300 and received.details["creditReason"] == "overpayment"


@pytest.mark.parametrize("closed_as", ["PAID", "VOID"])
async def test_payment_for_a_closed_invoice_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, closed_as: str
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    r = await pclient.patch(f"/api/admin/invoices/{inv['id']}", json={"status": closed_as}, headers=padmin.headers)
    assert r.status_code == 200 and r.json()["status"] == closed_as
    paid_before = len(await audits(papp, "invoice.paid", inv["id"]))

    await _ack(pclient, _completed(made["sessionId"], inv["id"], _pi(), 500), "applied")
    closed = await invoice(pclient, payer, inv["id"])
    assert closed["status"] == closed_as and closed["provider"] == ("manual" if closed_as == "PAID" else None)
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.received_cents, payment.credited_cents) == ("CONFIRMED", 500, 500)
    assert await _entries(papp, payer.id) == [(500, "unapplied_payment", payment.id)]
    assert await balance(pclient, payer) == 500
    assert await ledger_and_account(papp, payer.id) == (500, 500)
    assert len(await audits(papp, "invoice.paid", inv["id"])) == paid_before


async def test_top_up_paid_by_card_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, provider_stub: ProviderStub
) -> None:
    top = await topup_invoice(pclient, payer, 2000)
    assert (top["amountCents"], top["status"], top["subscriptionId"]) == (2000, "PENDING", None)
    made = await _checkout(pclient, payer, top["id"])
    assert provider_stub.requests[-1].form["line_items[0][price_data][unit_amount]"] == "2000"
    await _ack(pclient, _completed(made["sessionId"], top["id"], _pi(), 2000), "applied")
    assert (await invoice(pclient, payer, top["id"]))["status"] == "PAID"
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.received_cents, payment.credited_cents) == ("CONFIRMED", 2000, 2000)
    assert await _entries(papp, payer.id) == [(2000, "topup", payment.id)]
    assert await balance(pclient, payer) == 2000
    assert await ledger_and_account(papp, payer.id) == (2000, 2000)
    assert (await subscription(pclient, payer))["current"]["tierId"] == "tier_free"


# --- webhooks: rejected, ignored, unapplicable -----------------------------------------------------------


def _bad_headers(body: bytes, case: str) -> dict[str, str | bytes]:
    now = int(time.time())
    if case == "forged":
        return {"Stripe-Signature": f"t={now},v1={'0' * 64}"}
    if case == "wrong_secret":
        return {"Stripe-Signature": stripe_signature(body, secret="whsec_someone_else_" + "1" * 24)}
    if case == "stale":
        return {"Stripe-Signature": stripe_signature(body, timestamp=now - 400)}
    if case == "other_body":
        return {"Stripe-Signature": stripe_signature(body.replace(b'"amount_total": 500', b'"amount_total": 50'))}
    if case == "garbage":
        return {"Stripe-Signature": "not a signature"}
    if case == "non_ascii":
        return {"Stripe-Signature": f"t={now},v1={'é' * 64}".encode("latin-1")}
    assert case == "missing"
    return {}


@pytest.mark.parametrize("case", ["forged", "wrong_secret", "stale", "other_body", "garbage", "non_ascii", "missing"])
async def test_bad_signatures_are_400_and_store_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, case: str
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    body = _completed(made["sessionId"], inv["id"], _pi(), 500)
    r = await pclient.post(
        "/api/billing/webhooks/stripe",
        content=body,
        headers=[
            (b"content-type", b"application/json"),
            *((k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in _bad_headers(body, case).items()),
        ],
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_signature")
    assert await payment_events(papp) == []
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    assert (await payment_row(papp, made["paymentId"])).status == "PENDING"


async def test_signature_inside_the_tolerance_is_accepted(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    """The stale-timestamp rejection is about age, not about any past timestamp."""
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    body = _completed(made["sessionId"], inv["id"], _pi(), 500)
    r = await post_stripe(pclient, body, stripe_signature(body, timestamp=int(time.time()) - 200))
    assert r.status_code == 200 and r.json()["outcome"] == "applied"
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"


@pytest.mark.parametrize("raw", [b"this is not json", b"[1, 2, 3]", b"\xff\xfe{"])
async def test_a_body_that_is_not_a_json_object_is_400(pclient: httpx.AsyncClient, papp: FastAPI, raw: bytes) -> None:
    r = await post_stripe(pclient, raw)  # correctly signed, but not an event
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_payload")
    assert await payment_events(papp) == []


async def test_unknown_event_types_are_stored_and_ignored(pclient: httpx.AsyncClient, papp: FastAPI) -> None:
    event_id = _evt()
    body = stripe_event("customer.created", {"id": "cus_test_1", "object": "customer"}, event_id=event_id)
    await _ack(pclient, body, "ignored")
    (event,) = await payment_events(papp)
    assert (event.event_id, event.event_type, event.outcome, event.error) == (
        event_id,
        "customer.created",
        "ignored",
        None,
    )
    assert event.processed_at is not None and event.payload == body.decode()
    await _ack(pclient, body, "ignored", duplicate=True)
    assert len(await payment_events(papp)) == 1
    assert await row_count(papp, Payment) == 0


async def test_event_for_an_unknown_invoice_is_unapplicable_and_recorded(
    pclient: httpx.AsyncClient, papp: FastAPI, padmin: TestUser
) -> None:
    event_id = _evt()
    body = _completed("cs_test_nowhere", "inv_does_not_exist", _pi(), 500, event_id=event_id)
    await _ack(pclient, body, "unapplicable")
    (event,) = await payment_events(papp)
    assert event.event_id == event_id and event.processed_at is not None and event.outcome == "unapplicable"
    assert event.error and "inv_does_not_exist" in event.error
    assert await row_count(papp, Payment) == 0 and await row_count(papp, CreditEntry) == 0
    listed = (await pclient.get("/api/admin/payment-events?provider=stripe", headers=padmin.headers)).json()["items"]
    assert [(e["eventId"], e["outcome"]) for e in listed] == [(event_id, "unapplicable")]
    assert "inv_does_not_exist" in listed[0]["error"]
    # A redelivery does not try again.
    await _ack(pclient, body, "unapplicable", duplicate=True)


async def test_payment_in_another_currency_is_not_applied(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    await _ack(pclient, _completed(made["sessionId"], inv["id"], _pi(), 500, currency="eur"), "unapplicable")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    assert (await payment_row(papp, made["paymentId"])).status == "PENDING"
    (event,) = await payment_events(papp)
    assert event.error and "EUR" in event.error
    assert await balance(pclient, payer) == 0


# --- failures and refunds --------------------------------------------------------------------------------


async def test_failed_payment_marks_the_invoice_failed_but_still_payable(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    first = await _checkout(pclient, payer, inv["id"])
    body = _completed(first["sessionId"], inv["id"], _pi(), kind="checkout.session.async_payment_failed")
    await _ack(pclient, body, "invoice_failed")
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
    await _ack(pclient, again, "noted")
    assert len(await audits(papp, "invoice.payment_failed", inv["id"])) == 1

    # Still payable: a new checkout and its completion pay it.
    second = await _checkout(pclient, payer, inv["id"])
    await _ack(pclient, _completed(second["sessionId"], inv["id"], _pi()), "applied")
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
    await _ack(pclient, body, "invoice_failed")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "FAILED"
    (audit,) = await audits(papp, "invoice.payment_failed", inv["id"])
    assert audit.details["reason"] == "card declined"
    await _paid_by_stripe(pclient, payer, inv["id"])
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"


async def test_refund_of_the_current_period_puts_the_subscription_past_due_until_paid_again(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made, pi = await _paid_by_stripe(pclient, payer, inv["id"])
    r = await pclient.put("/api/storage/files/before.txt", content=b"kept", headers=payer.headers)
    assert r.status_code == 201, r.text
    paid = await invoice_row(papp, inv["id"])

    await _ack(pclient, _charge_refunded(pi, 500), "refunded")
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
    assert await balance(pclient, payer) == 0 and await _entries(papp, payer.id) == []

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
    await _ack(pclient, _charge_refunded(pi, 500), "noted")
    assert len((await pclient.get("/api/billing/invoices", headers=payer.headers)).json()["items"]) == 2
    assert len(await audits(papp, "subscription.past_due")) == 1

    # Paying the re-issued invoice restores the subscription and lifts the hold.
    await _paid_by_stripe(pclient, payer, again.id)
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
    made = await _checkout(pclient, payer, inv["id"])
    expired = stripe_event("checkout.session.expired", {"id": made["sessionId"], "object": "checkout.session"})
    await _ack(pclient, expired, "closed")
    assert (await payment_row(papp, made["paymentId"])).status == "FAILED"
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"  # still payable
    await _ack(pclient, stripe_event("checkout.session.expired", {"id": "cs_unknown"}), "ignored")
    # A later checkout for the same invoice pays it.
    again = await _checkout(pclient, payer, inv["id"])
    await _ack(pclient, _completed(again["sessionId"], inv["id"], _pi(), 500), "applied")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"


async def test_a_refund_before_its_payment_is_retried_until_the_payment_is_recorded(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    pi = _pi()
    refund = _charge_refunded(pi, 500)
    r = await post_stripe(pclient, refund)
    # Not applicable yet: 503 so Stripe delivers it again; stored, unprocessed, with the reason.
    assert (r.status_code, r.json()["error"]["code"]) == (503, "event_processing_failed")
    (event,) = await payment_events(papp)
    assert event.processed_at is None and event.attempts == 1 and "to refund yet" in (event.error or "")
    await _ack(pclient, _completed(made["sessionId"], inv["id"], pi, 500), "applied")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    # The redelivery now applies, once.
    await _ack(pclient, refund, "refunded")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "REFUNDED"
    await _ack(pclient, refund, "refunded", duplicate=True)
    refunded = [e for e in await payment_events(papp) if e.event_type == "charge.refunded"]
    assert [(e.outcome, e.error, e.attempts) for e in refunded] == [("refunded", None, 2)]
    assert len(await audits(papp, "payment.refunded")) == 1


async def test_refund_of_an_overpayment_takes_back_the_credit_first(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made, pi = await _paid_by_stripe(pclient, payer, inv["id"], amount=800)
    assert await balance(pclient, payer) == 300

    await _ack(pclient, _charge_refunded(pi, 200, amount=800), "refunded")
    assert await balance(pclient, payer) == 100
    assert await ledger_and_account(papp, payer.id) == (100, 100)
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("CONFIRMED", 200)
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    assert (await current_subscription(papp, payer.id)).status == "ACTIVE"
    assert await billing_hold(papp, payer.id) is None

    # The rest of the refund: the remaining credit, then the invoice.
    await _ack(pclient, _charge_refunded(pi, 800, amount=800), "refunded")
    assert await balance(pclient, payer) == 0
    assert await ledger_and_account(papp, payer.id) == (0, 0)
    assert [(a, r) for a, r, _ in await _entries(papp, payer.id)] == [
        (300, "overpayment"),
        (-200, "refund"),
        (-100, "refund"),
    ]
    refunded = await invoice(pclient, payer, inv["id"])
    assert (refunded["status"], refunded["refundedCents"]) == ("REFUNDED", 500)
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("REFUNDED", 800)
    assert (await current_subscription(papp, payer.id)).status == "PAST_DUE"


# --- concurrency -----------------------------------------------------------------------------------------


async def test_two_deliveries_of_one_event_at_once_apply_it_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    body = _completed(made["sessionId"], inv["id"], _pi(), 800)
    results = await asyncio.gather(*(post_stripe(pclient, body) for _ in range(3)))
    assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
    assert sorted(r.json()["duplicate"] for r in results) == [False, True, True]
    assert {r.json()["outcome"] for r in results} == {"applied"}
    (event,) = await payment_events(papp)
    assert event.attempts == 1 and event.outcome == "applied"
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert await _entries(papp, payer.id) == [(300, "overpayment", made["paymentId"])]
    assert await ledger_and_account(papp, payer.id) == (300, 300)


async def test_two_events_about_the_same_money_at_once_apply_it_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    """A checkout completion and an invoice.paid for one PaymentIntent racing: one of them may have to be
    delivered again (503), but the money is applied exactly once."""
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await _checkout(pclient, payer, inv["id"])
    pi = _pi()
    bodies = [_completed(made["sessionId"], inv["id"], pi, 800), _invoice_paid(inv["id"], pi, 800)]
    results = await asyncio.gather(*(post_stripe(pclient, b) for b in bodies))
    outcomes = []
    for body, r in zip(bodies, results, strict=True):
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:  # the provider delivers it again
            assert r.json()["error"]["code"] == "event_processing_failed"
            r = await post_stripe(pclient, body)
            assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
        outcomes.append(r.json()["outcome"])
    # Whichever event won, one applied the money and the other found it applied (also after a redelivery:
    # a completion whose UPDATE lost to the invoice.paid INSERT finds that payment confirmed).
    assert sorted(outcomes) == ["already_applied", "applied"]
    assert all(e.processed_at is not None for e in await payment_events(papp))
    confirmed = [p for p in await payments_of(papp, payer.id) if p.status == "CONFIRMED"]
    assert [(p.provider_payment_id, p.received_cents, p.credited_cents) for p in confirmed] == [(pi, 800, 300)]
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert await ledger_and_account(papp, payer.id) == (300, 300)


# --- a server without Stripe or Razorpay keys ------------------------------------------------------------


async def test_without_provider_keys_card_methods_are_unavailable(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    r = await client.get("/api/billing/methods", headers=user.headers)
    assert r.status_code == 200
    methods = {m["id"]: m for m in r.json()["methods"]}
    assert methods["stripe"]["available"] is False and methods["stripe"]["kind"] == "checkout"
    assert methods["razorpay"]["available"] is False and methods["razorpay"]["keyId"] is None
    assert methods["credits"]["available"] is True
    inv = await subscribe_invoice(client, user, admin)
    for provider in ("stripe", "razorpay"):
        r = await client.post(
            f"/api/billing/invoices/{inv['id']}/checkout", json={"provider": provider}, headers=user.headers
        )
        assert (r.status_code, r.json()["error"]["code"]) == (503, "provider_not_configured")
    assert await row_count(app, Payment) == 0
    assert (await invoice(client, user, inv["id"]))["status"] == "PENDING"
    body = _completed("cs_test_x", inv["id"], _pi())
    r = await post_stripe(client, body)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "provider_not_configured")
    assert await row_count(app, PaymentEvent) == 0


async def test_with_provider_keys_card_methods_are_available(pclient: httpx.AsyncClient, payer: TestUser) -> None:
    methods = {m["id"]: m for m in (await pclient.get("/api/billing/methods", headers=payer.headers)).json()["methods"]}
    assert methods["stripe"]["available"] is True
    assert methods["razorpay"]["available"] is True and methods["razorpay"]["keyId"] == "rzp_test_pockity"
