"""Checkout (payments/checkout.py): the methods a server offers, and a Stripe Checkout Session created at the
provider stub for exactly one open invoice of one's own — a provider error records no checkout.

Every webhook here is signed with Stripe's documented scheme by the fixture helpers; what the server sent to
the stub and what it stored (payments, the event inbox, the credit ledger, invoices, subscriptions, audit) is
read back and asserted, not just the status code.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from pockity.models import Payment, PaymentEvent
from tests.fixtures.payments import (
    ProviderStub,
    invoice,
    payment_row,
    payments_of,
    post_stripe,
    row_count,
    subscribe_invoice,
    subscription,
)
from tests.fixtures.stripe import checkout_completed, new_payment_intent, start_checkout
from tests.fixtures.users import TestUser

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
    again = await start_checkout(pclient, payer, inv["id"])
    assert again["paymentId"] != attempt.id
    assert provider_stub.requests[-1].headers["idempotency-key"] == f"pockity-checkout-{again['paymentId']}"
    assert (await payment_row(papp, again["paymentId"])).checkout_ref == again["sessionId"]


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
    body = checkout_completed("cs_test_x", inv["id"], new_payment_intent())
    r = await post_stripe(client, body)
    assert (r.status_code, r.json()["error"]["code"]) == (503, "provider_not_configured")
    assert await row_count(app, PaymentEvent) == 0


async def test_with_provider_keys_card_methods_are_available(pclient: httpx.AsyncClient, payer: TestUser) -> None:
    methods = {m["id"]: m for m in (await pclient.get("/api/billing/methods", headers=payer.headers)).json()["methods"]}
    assert methods["stripe"]["available"] is True
    assert methods["razorpay"]["available"] is True and methods["razorpay"]["keyId"] == "rzp_test_pockity"
