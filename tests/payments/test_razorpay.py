"""Razorpay: orders at the provider stub, the checkout's signed proof of payment, and signed webhooks.

The browser's proof (`razorpay_signature` = HMAC-SHA256(key secret, "order_id|payment_id")) and the
webhook (`X-Razorpay-Signature` = HMAC-SHA256(webhook secret, body)) are both real signatures from the
fixture helpers. Verify and webhook report the same money, in either order: it is applied once.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.models import CreditEntry, Payment, PaymentEvent
from tests.fixtures.payments import (
    RAZORPAY_KEY_ID,
    RAZORPAY_SECRET,
    RAZORPAY_WEBHOOK_SECRET,
    ProviderStub,
    audits,
    balance,
    billing_hold,
    checkout,
    current_subscription,
    hmac_hex,
    invoice,
    ledger_and_account,
    payment_events,
    payment_row,
    payments_of,
    post_razorpay,
    razorpay_event,
    razorpay_payment_signature,
    row_count,
    subscribe_invoice,
    subscription,
    topup_invoice,
)
from tests.fixtures.storage import usage
from tests.fixtures.users import TestUser

GIB = 1024**3


# --- helpers ---------------------------------------------------------------------------------------------


def _pay_id() -> str:
    return f"pay_{uuid.uuid4().hex[:14]}"


def _event_id() -> str:
    return f"evt_rzp_{uuid.uuid4().hex[:14]}"


async def _checkout(client: httpx.AsyncClient, user: TestUser, invoice_id: str) -> dict[str, Any]:
    return await checkout(client, user, invoice_id, "razorpay")


async def _verify(
    client: httpx.AsyncClient, user: TestUser, order_id: str, payment_id: str, signature: str | None = None
) -> httpx.Response:
    return await client.post(
        "/api/billing/razorpay/verify",
        json={
            "razorpayOrderId": order_id,
            "razorpayPaymentId": payment_id,
            "razorpaySignature": signature or razorpay_payment_signature(order_id, payment_id),
        },
        headers=user.headers,
    )


def _payment_entity(payment_id: str, order_id: str, invoice_id: str, amount: int = 500, **extra: Any) -> dict[str, Any]:
    return {
        "id": payment_id,
        "entity": "payment",
        "amount": amount,
        "currency": "USD",
        "status": "captured",
        "order_id": order_id,
        "notes": {"invoiceId": invoice_id},
        **extra,
    }


async def _ack(
    client: httpx.AsyncClient, body: bytes, outcome: str, *, event_id: str | None = None, duplicate: bool = False
) -> None:
    r = await post_razorpay(client, body, event_id=event_id)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "duplicate": duplicate, "outcome": outcome}


async def _entries(app: FastAPI, user_id: str) -> list[tuple[int, str]]:
    async with app.state.db.sessions() as s:
        rows = await s.execute(
            select(CreditEntry.amount_cents, CreditEntry.reason)
            .where(CreditEntry.user_id == user_id)
            .order_by(CreditEntry.id)
        )
    return [(int(a), str(r)) for a, r in rows.all()]


# --- checkout --------------------------------------------------------------------------------------------


async def test_checkout_creates_an_order_for_exactly_the_invoice(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, provider_stub: ProviderStub
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    order_id = out["orderId"]
    assert order_id.startswith("order_")
    assert (out["provider"], out["invoiceId"], out["keyId"]) == ("razorpay", inv["id"], RAZORPAY_KEY_ID)
    assert (out["amountCents"], out["currency"]) == (500, "USD")
    assert out["sessionId"] is None and out["url"] is None

    assert len(provider_stub.requests) == 1
    sent = provider_stub.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/orders")  # RAZORPAY_API_BASE includes /v1, as documented
    expected_auth = base64.b64encode(f"{RAZORPAY_KEY_ID}:{RAZORPAY_SECRET}".encode()).decode()
    assert sent.headers["authorization"] == f"Basic {expected_auth}"
    body = sent.json
    assert (body["amount"], body["currency"], body["receipt"]) == (500, "USD", inv["id"])
    assert body["notes"] == {"invoiceId": inv["id"], "userId": payer.id}

    (payment,) = await payments_of(papp, payer.id)
    assert (payment.id, payment.provider, payment.status) == (out["paymentId"], "razorpay", "PENDING")
    assert (payment.checkout_ref, payment.invoice_id, payment.amount_cents) == (order_id, inv["id"], 500)
    assert payment.provider_payment_id is None
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"


async def test_provider_error_is_502_and_records_no_order(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, provider_stub: ProviderStub
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    provider_stub.fail_next = (400, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The amount is invalid"}})
    r = await pclient.post(
        f"/api/billing/invoices/{inv['id']}/checkout", json={"provider": "razorpay"}, headers=payer.headers
    )
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_error" and err["details"]["provider"] == "razorpay"
    assert "amount is invalid" in err["details"]["message"]
    (attempt,) = await payments_of(papp, payer.id)
    assert attempt.checkout_ref is None and attempt.status != "CONFIRMED"
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    again = await _checkout(pclient, payer, inv["id"])
    assert (await payment_row(papp, again["paymentId"])).checkout_ref == again["orderId"]


async def test_checkout_of_another_users_invoice_is_404(
    pclient: httpx.AsyncClient,
    papp: FastAPI,
    payer: TestUser,
    other_payer: TestUser,
    padmin: TestUser,
    provider_stub: ProviderStub,
) -> None:
    theirs = await subscribe_invoice(pclient, other_payer, padmin)
    r = await pclient.post(
        f"/api/billing/invoices/{theirs['id']}/checkout", json={"provider": "razorpay"}, headers=payer.headers
    )
    assert (r.status_code, r.json()["error"]["code"]) == (404, "invoice_not_found")
    assert provider_stub.requests == [] and await row_count(papp, Payment) == 0


# --- the checkout's proof of payment ---------------------------------------------------------------------


async def test_verify_pays_the_invoice_once_and_the_later_webhook_changes_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    order_id, pay_id = out["orderId"], _pay_id()
    r = await _verify(pclient, payer, order_id, pay_id)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["id"], got["status"], got["provider"]) == (out["paymentId"], "CONFIRMED", "razorpay")
    assert (got["providerPaymentId"], got["checkoutRef"], got["receivedCents"]) == (pay_id, order_id, 500)
    assert got["creditedCents"] == 0 and got["resolvedAt"]

    paid = await invoice(pclient, payer, inv["id"])
    assert (paid["status"], paid["provider"], paid["providerRef"]) == ("PAID", "razorpay", out["paymentId"])
    sub = await subscription(pclient, payer)
    assert (sub["current"]["tierId"], sub["current"]["status"], sub["current"]["provider"]) == (
        "tier_starter",
        "ACTIVE",
        "razorpay",
    )
    u = await usage(pclient, payer)
    assert u["tier"]["id"] == "tier_starter" and u["storageLimitBytes"] == 50 * GIB  # type: ignore[index]
    (received,) = await audits(papp, "payment.received", out["paymentId"])
    assert (received.actor_type, received.actor_id) == ("user", payer.id)
    assert await balance(pclient, payer) == 0

    # The browser posting its proof again changes nothing.
    r = await _verify(pclient, payer, order_id, pay_id)
    assert r.status_code == 200 and r.json()["status"] == "CONFIRMED"
    # Neither does the webhook for the same payment.
    body = razorpay_event("payment.captured", payment=_payment_entity(pay_id, order_id, inv["id"]))
    await _ack(pclient, body, "already_applied", event_id=_event_id())
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert [(p.status, p.received_cents) for p in await payments_of(papp, payer.id)] == [("CONFIRMED", 500)]
    assert await _entries(papp, payer.id) == [] and await balance(pclient, payer) == 0
    (event,) = await payment_events(papp)
    assert (event.provider, event.event_type, event.outcome) == ("razorpay", "payment.captured", "already_applied")


async def test_webhook_first_then_verify_pays_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    order_id, pay_id = out["orderId"], _pay_id()
    body = razorpay_event("payment.captured", payment=_payment_entity(pay_id, order_id, inv["id"]))
    await _ack(pclient, body, "applied", event_id=_event_id())
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    payment = await payment_row(papp, out["paymentId"])
    assert (payment.status, payment.provider_payment_id, payment.received_cents) == ("CONFIRMED", pay_id, 500)

    r = await _verify(pclient, payer, order_id, pay_id)
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["status"]) == (out["paymentId"], "CONFIRMED")
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert len(await payments_of(papp, payer.id)) == 1
    assert await balance(pclient, payer) == 0 and await _entries(papp, payer.id) == []


@pytest.mark.parametrize("case", ["wrong_secret", "other_payment", "other_order", "garbage", "non_ascii"])
async def test_verify_with_a_wrong_signature_is_400_and_pays_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, case: str
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    order_id, pay_id = out["orderId"], _pay_id()
    signature = {
        "wrong_secret": razorpay_payment_signature(order_id, pay_id, secret="rzp_secret_guessed"),
        "other_payment": razorpay_payment_signature(order_id, _pay_id()),
        "other_order": razorpay_payment_signature("order_9999", pay_id),
        "garbage": "0" * 64,
        "non_ascii": "é" * 64,
    }[case]
    r = await _verify(pclient, payer, order_id, pay_id, signature)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_signature"
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    payment = await payment_row(papp, out["paymentId"])
    assert (payment.status, payment.provider_payment_id) == ("PENDING", None)
    assert await audits(papp, "payment.received") == []
    assert (await subscription(pclient, payer))["current"]["tierId"] == "tier_free"


async def test_verify_of_another_users_order_is_404(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, other_payer: TestUser, padmin: TestUser
) -> None:
    theirs = await subscribe_invoice(pclient, other_payer, padmin)
    out = await _checkout(pclient, other_payer, theirs["id"])
    for order_id in (out["orderId"], "order_unknown"):
        r = await _verify(pclient, payer, order_id, _pay_id())  # correctly signed, but not this user's order
        assert (r.status_code, r.json()["error"]["code"]) == (404, "payment_not_found")
    assert (await invoice(pclient, other_payer, theirs["id"]))["status"] == "PENDING"
    assert (await payment_row(papp, out["paymentId"])).status == "PENDING"
    assert [p.status for p in await payments_of(papp, payer.id)] == []
    assert await audits(papp, "payment.received") == []


async def test_verify_and_webhook_at_once_apply_the_payment_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    order_id, pay_id = out["orderId"], _pay_id()
    body = razorpay_event("payment.captured", payment=_payment_entity(pay_id, order_id, inv["id"]))
    verified, hooked = await asyncio.gather(
        _verify(pclient, payer, order_id, pay_id), post_razorpay(pclient, body, event_id=_event_id())
    )
    assert verified.status_code == 200 and verified.json()["status"] == "CONFIRMED", verified.text
    # Whichever came second found the money applied.
    assert hooked.status_code == 200 and hooked.json()["outcome"] in ("applied", "already_applied"), hooked.text
    assert [(p.status, p.provider_payment_id) for p in await payments_of(papp, payer.id)] == [("CONFIRMED", pay_id)]
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert await balance(pclient, payer) == 0


async def test_top_up_paid_with_razorpay_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, provider_stub: ProviderStub
) -> None:
    top = await topup_invoice(pclient, payer, 1500)
    out = await _checkout(pclient, payer, top["id"])
    assert provider_stub.requests[-1].json["amount"] == 1500
    r = await _verify(pclient, payer, out["orderId"], _pay_id())
    assert r.status_code == 200 and r.json()["creditedCents"] == 1500, r.text
    assert (await invoice(pclient, payer, top["id"]))["status"] == "PAID"
    assert await _entries(papp, payer.id) == [(1500, "topup")]
    assert await balance(pclient, payer) == 1500
    assert await ledger_and_account(papp, payer.id) == (1500, 1500)


# --- webhooks --------------------------------------------------------------------------------------------


async def test_event_id_replay_is_a_duplicate(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    event_id = _event_id()
    body = razorpay_event("payment.captured", payment=_payment_entity(_pay_id(), out["orderId"], inv["id"]))
    await _ack(pclient, body, "applied", event_id=event_id)
    await _ack(pclient, body, "applied", event_id=event_id, duplicate=True)
    (event,) = await payment_events(papp)
    assert (event.event_id, event.attempts, event.outcome) == (event_id, 1, "applied")
    assert len(await audits(papp, "payment.received")) == 1
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1


async def test_without_an_event_id_header_the_entity_names_the_event(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    pay_id = _pay_id()
    body = razorpay_event("payment.captured", payment=_payment_entity(pay_id, out["orderId"], inv["id"]))
    await _ack(pclient, body, "applied")
    await _ack(pclient, body, "applied", duplicate=True)
    (event,) = await payment_events(papp)
    assert event.event_id == f"payment.captured:{pay_id}"
    assert len(await audits(papp, "payment.received")) == 1


async def test_two_deliveries_of_one_event_at_once_apply_it_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    event_id = _event_id()
    body = razorpay_event("payment.captured", payment=_payment_entity(_pay_id(), out["orderId"], inv["id"]))
    results = await asyncio.gather(post_razorpay(pclient, body, event_id), post_razorpay(pclient, body, event_id))
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    assert sorted(r.json()["duplicate"] for r in results) == [False, True]
    (event,) = await payment_events(papp)
    assert event.attempts == 1
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1


@pytest.mark.parametrize("case", ["forged", "wrong_secret", "other_body", "missing", "non_ascii"])
async def test_bad_webhook_signature_is_400_and_stores_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, case: str
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    body = razorpay_event("payment.captured", payment=_payment_entity(_pay_id(), out["orderId"], inv["id"]))
    headers: dict[str, str | bytes] = {"X-Razorpay-Event-Id": _event_id()}
    if case == "forged":
        headers["X-Razorpay-Signature"] = "ab" * 32
    elif case == "wrong_secret":
        headers["X-Razorpay-Signature"] = hmac_hex("rzp_webhook_guessed", body)
    elif case == "other_body":
        headers["X-Razorpay-Signature"] = hmac_hex(
            RAZORPAY_WEBHOOK_SECRET, body.replace(b'"amount": 500', b'"amount": 5')
        )
    elif case == "non_ascii":
        headers["X-Razorpay-Signature"] = ("é" * 64).encode("latin-1")
    raw_headers = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()]
    r = await pclient.post("/api/billing/webhooks/razorpay", content=body, headers=raw_headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_signature")
    assert await payment_events(papp) == []
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    assert (await payment_row(papp, out["paymentId"])).status == "PENDING"


async def test_a_signed_body_that_is_not_json_is_400(pclient: httpx.AsyncClient, papp: FastAPI) -> None:
    raw = b"payment.captured pay_123"
    r = await post_razorpay(pclient, raw, event_id=_event_id())
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_payload")
    assert await payment_events(papp) == []


async def test_unknown_event_types_are_stored_and_ignored(pclient: httpx.AsyncClient, papp: FastAPI) -> None:
    body = razorpay_event("order.notification.delivered")
    await _ack(pclient, body, "ignored", event_id="evt_rzp_unknown_kind")
    (event,) = await payment_events(papp)
    assert (event.event_type, event.outcome, event.processed_at is not None) == (
        "order.notification.delivered",
        "ignored",
        True,
    )
    assert await row_count(papp, Payment) == 0


async def test_payment_for_an_unknown_invoice_is_unapplicable(pclient: httpx.AsyncClient, papp: FastAPI) -> None:
    body = razorpay_event("payment.captured", payment=_payment_entity(_pay_id(), "order_nowhere", "inv_nowhere"))
    await _ack(pclient, body, "unapplicable", event_id=_event_id())
    (event,) = await payment_events(papp)
    assert event.outcome == "unapplicable" and event.error and "inv_nowhere" in event.error
    assert await row_count(papp, Payment) == 0 and await row_count(papp, CreditEntry) == 0


async def test_failed_payment_marks_the_invoice_failed_but_still_payable(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    failed_pay = _pay_id()
    body = razorpay_event(
        "payment.failed",
        payment=_payment_entity(
            failed_pay, out["orderId"], inv["id"], status="failed", error_description="Payment was declined by bank"
        ),
    )
    await _ack(pclient, body, "invoice_failed", event_id=_event_id())
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "FAILED"
    assert (await payment_row(papp, out["paymentId"])).status == "FAILED"
    (audit,) = await audits(papp, "invoice.payment_failed", inv["id"])
    assert audit.details == {"provider": "razorpay", "reason": "Payment was declined by bank"}
    assert (await subscription(pclient, payer))["current"]["tierId"] == "tier_free"

    # The customer retries in the same checkout and succeeds.
    r = await _verify(pclient, payer, out["orderId"], _pay_id())
    assert r.status_code == 200 and r.json()["status"] == "CONFIRMED", r.text
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    assert (await subscription(pclient, payer))["current"]["tierId"] == "tier_starter"


async def test_refund_processed_puts_the_refunded_period_past_due(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    pay_id = _pay_id()
    assert (await _verify(pclient, payer, out["orderId"], pay_id)).status_code == 200
    refund = {"id": "rfnd_test_1", "entity": "refund", "amount": 500, "currency": "USD", "payment_id": pay_id}
    body = razorpay_event(
        "refund.processed",
        payment=_payment_entity(pay_id, out["orderId"], inv["id"], status="refunded", amount_refunded=500),
        refund=refund,
    )
    await _ack(pclient, body, "refunded", event_id=_event_id())
    refunded = await invoice(pclient, payer, inv["id"])
    assert (refunded["status"], refunded["refundedCents"]) == ("REFUNDED", 500)
    payment = await payment_row(papp, out["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("REFUNDED", 500)
    sub = await current_subscription(papp, payer.id)
    assert (sub.status, sub.tier_id) == ("PAST_DUE", "tier_starter") and sub.grace_ends_at is not None
    assert await billing_hold(papp, payer.id) == "past_due"
    r = await pclient.put("/api/storage/files/x.txt", content=b"hello", headers=payer.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    invoices = (await pclient.get("/api/billing/invoices", headers=payer.headers)).json()["items"]
    reissued = [i for i in invoices if i["id"] != inv["id"]]
    assert [(i["status"], i["amountCents"]) for i in reissued] == [("PENDING", 500)]
    assert await balance(pclient, payer) == 0

    # Paying the re-issued invoice with Razorpay restores the subscription.
    again = await _checkout(pclient, payer, reissued[0]["id"])
    assert (await _verify(pclient, payer, again["orderId"], _pay_id())).status_code == 200
    sub = await current_subscription(papp, payer.id)
    assert (sub.status, sub.grace_ends_at) == ("ACTIVE", None)
    assert await billing_hold(papp, payer.id) is None
    r = await pclient.put("/api/storage/files/x.txt", content=b"hello", headers=payer.headers)
    assert r.status_code == 201, r.text


async def test_refund_events_without_a_payment_entity_add_up(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    """Two partial refunds, each reported only by its refund entity: the second completes the refund."""
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    pay_id = _pay_id()
    assert (await _verify(pclient, payer, out["orderId"], pay_id)).status_code == 200
    first = razorpay_event(
        "refund.processed", refund={"id": "rfnd_a", "entity": "refund", "amount": 200, "payment_id": pay_id}
    )
    await _ack(pclient, first, "refunded")
    await _ack(pclient, first, "refunded", duplicate=True)  # named by the refund id: a replay is a duplicate
    payment = await payment_row(papp, out["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("CONFIRMED", 200)
    paid = await invoice(pclient, payer, inv["id"])
    assert (paid["status"], paid["refundedCents"]) == ("PAID", 200)
    assert (await current_subscription(papp, payer.id)).status == "ACTIVE"

    second = razorpay_event(
        "refund.processed", refund={"id": "rfnd_b", "entity": "refund", "amount": 300, "payment_id": pay_id}
    )
    await _ack(pclient, second, "refunded")
    payment = await payment_row(papp, out["paymentId"])
    assert (payment.status, payment.refunded_cents) == ("REFUNDED", 500)
    refunded = await invoice(pclient, payer, inv["id"])
    assert (refunded["status"], refunded["refundedCents"]) == ("REFUNDED", 500)
    assert (await current_subscription(papp, payer.id)).status == "PAST_DUE"
    assert await ledger_and_account(papp, payer.id) == (0, 0)


# --- a server without Razorpay keys ----------------------------------------------------------------------


async def test_without_keys_razorpay_is_unavailable(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser
) -> None:
    methods = {m["id"]: m for m in (await client.get("/api/billing/methods", headers=user.headers)).json()["methods"]}
    assert methods["razorpay"] == {
        "id": "razorpay",
        "available": False,
        "kind": "checkout",
        "keyId": None,
        "address": None,
    }
    inv = await subscribe_invoice(client, user, admin)
    r = await client.post(
        f"/api/billing/invoices/{inv['id']}/checkout", json={"provider": "razorpay"}, headers=user.headers
    )
    assert (r.status_code, r.json()["error"]["code"]) == (503, "provider_not_configured")
    r = await _verify(client, user, "order_1", "pay_1")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "provider_not_configured")
    body = razorpay_event("payment.captured", payment=_payment_entity("pay_1", "order_1", inv["id"]))
    r = await post_razorpay(client, body, event_id=_event_id())
    assert (r.status_code, r.json()["error"]["code"]) == (503, "provider_not_configured")
    assert await row_count(app, Payment) == 0 and await row_count(app, PaymentEvent) == 0
    assert (await invoice(client, user, inv["id"]))["status"] == "PENDING"
