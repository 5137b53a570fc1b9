"""Stripe webhooks (payments/providers/stripe_provider.py): signed events pay an invoice exactly once, in
any order and at once; bad signatures, unknown events and unapplicable events.

Every webhook here is signed with Stripe's documented scheme by the fixture helpers; what the server sent to
the stub and what it stored (payments, the event inbox, the credit ledger, invoices, subscriptions, audit) is
read back and asserted, not just the status code.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from fastapi import FastAPI

from pockity.models import CreditEntry, Payment
from tests.fixtures.payments import (
    ProviderStub,
    audits,
    balance,
    current_subscription,
    invoice,
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


GIB = 1024**3


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
        event_id=event_id or new_event_id(),
    )


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


# --- webhooks: paying once -------------------------------------------------------------------------------


async def test_completed_checkout_pays_once_and_activates_the_subscription(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    pi, event_id = new_payment_intent(), new_event_id()
    body = checkout_completed(made["sessionId"], inv["id"], pi, 500, event_id=event_id)
    await ack_event(pclient, body, "applied")

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
    assert await balance(pclient, payer) == 0 and await ledger_rows(papp, payer.id) == []
    (event,) = await payment_events(papp)
    assert (event.provider, event.event_id, event.event_type) == ("stripe", event_id, "checkout.session.completed")
    assert event.processed_at is not None and (event.outcome, event.error, event.attempts) == ("applied", None, 1)
    assert json.loads(event.payload)["data"]["object"]["payment_intent"] == pi
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    (received,) = await audits(papp, "payment.received", made["paymentId"])
    assert received.actor_type == "provider" and received.details["receivedCents"] == 500

    # The same event delivered again: acknowledged as a duplicate, nothing changes.
    await ack_event(pclient, body, "applied", duplicate=True)
    assert len(await payment_events(papp)) == 1
    assert (await payment_events(papp))[0].attempts == 1
    # The same money reported by a second, different event (invoice.paid with the same PaymentIntent).
    await ack_event(pclient, _invoice_paid(inv["id"], pi, 500), "already_applied")
    assert len(await payment_events(papp)) == 2
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert [(p.status, p.received_cents) for p in await payments_of(papp, payer.id)] == [("CONFIRMED", 500)]
    assert await balance(pclient, payer) == 0 and await ledger_rows(papp, payer.id) == []
    assert (await current_subscription(papp, payer.id)).status == "ACTIVE"


async def test_payment_event_before_the_checkout_completion_pays_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    pi = new_payment_intent()
    await ack_event(pclient, _invoice_paid(inv["id"], pi, 500), "applied")
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    sub = await subscription(pclient, payer)
    assert (sub["current"]["tierId"], sub["current"]["status"]) == ("tier_starter", "ACTIVE")
    period_end = sub["current"]["currentPeriodEnd"]

    # The checkout completion for the same PaymentIntent arrives later: nothing more happens.
    await ack_event(pclient, checkout_completed(made["sessionId"], inv["id"], pi, 500), "already_applied")
    confirmed = [p for p in await payments_of(papp, payer.id) if p.status == "CONFIRMED"]
    assert [(p.provider_payment_id, p.received_cents, p.credited_cents) for p in confirmed] == [(pi, 500, 0)]
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert await balance(pclient, payer) == 0 and await ledger_rows(papp, payer.id) == []
    assert (await subscription(pclient, payer))["current"]["currentPeriodEnd"] == period_end
    assert [e.outcome for e in await payment_events(papp)] == ["applied", "already_applied"]


async def test_asynchronous_payment_waits_for_its_success_event(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    pi = new_payment_intent()
    await ack_event(
        pclient, checkout_completed(made["sessionId"], inv["id"], pi, payment_status="unpaid"), "awaiting_payment"
    )
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    assert (await payment_row(papp, made["paymentId"])).status == "PENDING"
    await ack_event(
        pclient,
        checkout_completed(made["sessionId"], inv["id"], pi, kind="checkout.session.async_payment_succeeded"),
        "applied",
    )
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    assert (await payment_row(papp, made["paymentId"])).provider_payment_id == pi


async def test_overpayment_pays_the_invoice_and_credits_the_difference(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made, _ = await paid_by_stripe(pclient, payer, inv["id"], amount=800)
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.received_cents, payment.credited_cents) == ("CONFIRMED", 800, 300)
    assert await ledger_rows(papp, payer.id) == [(300, "overpayment", payment.id)]
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
    made = await start_checkout(pclient, payer, inv["id"])
    r = await pclient.patch(f"/api/admin/invoices/{inv['id']}", json={"status": closed_as}, headers=padmin.headers)
    assert r.status_code == 200 and r.json()["status"] == closed_as
    paid_before = len(await audits(papp, "invoice.paid", inv["id"]))

    await ack_event(pclient, checkout_completed(made["sessionId"], inv["id"], new_payment_intent(), 500), "applied")
    closed = await invoice(pclient, payer, inv["id"])
    assert closed["status"] == closed_as and closed["provider"] == ("manual" if closed_as == "PAID" else None)
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.received_cents, payment.credited_cents) == ("CONFIRMED", 500, 500)
    assert await ledger_rows(papp, payer.id) == [(500, "unapplied_payment", payment.id)]
    assert await balance(pclient, payer) == 500
    assert await ledger_and_account(papp, payer.id) == (500, 500)
    assert len(await audits(papp, "invoice.paid", inv["id"])) == paid_before


async def test_top_up_paid_by_card_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, provider_stub: ProviderStub
) -> None:
    top = await topup_invoice(pclient, payer, 2000)
    assert (top["amountCents"], top["status"], top["subscriptionId"]) == (2000, "PENDING", None)
    made = await start_checkout(pclient, payer, top["id"])
    assert provider_stub.requests[-1].form["line_items[0][price_data][unit_amount]"] == "2000"
    await ack_event(pclient, checkout_completed(made["sessionId"], top["id"], new_payment_intent(), 2000), "applied")
    assert (await invoice(pclient, payer, top["id"]))["status"] == "PAID"
    payment = await payment_row(papp, made["paymentId"])
    assert (payment.status, payment.received_cents, payment.credited_cents) == ("CONFIRMED", 2000, 2000)
    assert await ledger_rows(papp, payer.id) == [(2000, "topup", payment.id)]
    assert await balance(pclient, payer) == 2000
    assert await ledger_and_account(papp, payer.id) == (2000, 2000)
    assert (await subscription(pclient, payer))["current"]["tierId"] == "tier_free"


# --- webhooks: rejected, ignored, unapplicable -----------------------------------------------------------


@pytest.mark.parametrize("case", ["forged", "wrong_secret", "stale", "other_body", "garbage", "non_ascii", "missing"])
async def test_bad_signatures_are_400_and_store_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, case: str
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    body = checkout_completed(made["sessionId"], inv["id"], new_payment_intent(), 500)
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
    made = await start_checkout(pclient, payer, inv["id"])
    body = checkout_completed(made["sessionId"], inv["id"], new_payment_intent(), 500)
    r = await post_stripe(pclient, body, stripe_signature(body, timestamp=int(time.time()) - 200))
    assert r.status_code == 200 and r.json()["outcome"] == "applied"
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"


@pytest.mark.parametrize("raw", [b"this is not json", b"[1, 2, 3]", b"\xff\xfe{"])
async def test_a_body_that_is_not_a_json_object_is_400(pclient: httpx.AsyncClient, papp: FastAPI, raw: bytes) -> None:
    r = await post_stripe(pclient, raw)  # correctly signed, but not an event
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_payload")
    assert await payment_events(papp) == []


async def test_unknown_event_types_are_stored_and_ignored(pclient: httpx.AsyncClient, papp: FastAPI) -> None:
    event_id = new_event_id()
    body = stripe_event("customer.created", {"id": "cus_test_1", "object": "customer"}, event_id=event_id)
    await ack_event(pclient, body, "ignored")
    (event,) = await payment_events(papp)
    assert (event.event_id, event.event_type, event.outcome, event.error) == (
        event_id,
        "customer.created",
        "ignored",
        None,
    )
    assert event.processed_at is not None and event.payload == body.decode()
    await ack_event(pclient, body, "ignored", duplicate=True)
    assert len(await payment_events(papp)) == 1
    assert await row_count(papp, Payment) == 0


async def test_event_for_an_unknown_invoice_is_unapplicable_and_recorded(
    pclient: httpx.AsyncClient, papp: FastAPI, padmin: TestUser
) -> None:
    event_id = new_event_id()
    body = checkout_completed("cs_test_nowhere", "inv_does_not_exist", new_payment_intent(), 500, event_id=event_id)
    await ack_event(pclient, body, "unapplicable")
    (event,) = await payment_events(papp)
    assert event.event_id == event_id and event.processed_at is not None and event.outcome == "unapplicable"
    assert event.error and "inv_does_not_exist" in event.error
    assert await row_count(papp, Payment) == 0 and await row_count(papp, CreditEntry) == 0
    listed = (await pclient.get("/api/admin/payment-events?provider=stripe", headers=padmin.headers)).json()["items"]
    assert [(e["eventId"], e["outcome"]) for e in listed] == [(event_id, "unapplicable")]
    assert "inv_does_not_exist" in listed[0]["error"]
    # A redelivery does not try again.
    await ack_event(pclient, body, "unapplicable", duplicate=True)


async def test_payment_in_another_currency_is_not_applied(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    await ack_event(
        pclient,
        checkout_completed(made["sessionId"], inv["id"], new_payment_intent(), 500, currency="eur"),
        "unapplicable",
    )
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    assert (await payment_row(papp, made["paymentId"])).status == "PENDING"
    (event,) = await payment_events(papp)
    assert event.error and "EUR" in event.error
    assert await balance(pclient, payer) == 0


# --- concurrency -----------------------------------------------------------------------------------------


async def test_two_deliveries_of_one_event_at_once_apply_it_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    body = checkout_completed(made["sessionId"], inv["id"], new_payment_intent(), 800)
    results = await asyncio.gather(*(post_stripe(pclient, body) for _ in range(3)))
    assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
    assert sorted(r.json()["duplicate"] for r in results) == [False, True, True]
    assert {r.json()["outcome"] for r in results} == {"applied"}
    (event,) = await payment_events(papp)
    assert event.attempts == 1 and event.outcome == "applied"
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert await ledger_rows(papp, payer.id) == [(300, "overpayment", made["paymentId"])]
    assert await ledger_and_account(papp, payer.id) == (300, 300)


async def test_two_events_about_the_same_money_at_once_apply_it_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    """A checkout completion and an invoice.paid for one PaymentIntent racing: one of them may have to be
    delivered again (503), but the money is applied exactly once."""
    inv = await subscribe_invoice(pclient, payer, padmin)
    made = await start_checkout(pclient, payer, inv["id"])
    pi = new_payment_intent()
    bodies = [checkout_completed(made["sessionId"], inv["id"], pi, 800), _invoice_paid(inv["id"], pi, 800)]
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
