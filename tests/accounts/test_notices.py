"""The account and billing notices issue 16 lists that come from other domains: API key created, tier request
approved or rejected, payment received (a receipt with amount and method), payment failed. Each is a
notification and an email to its user, written in the same unit of work as its event."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.accounts.conftest import deliver, texts_to
from tests.fixtures.crypto import new_tx_hash, submit_tx
from tests.fixtures.payments import razorpay_event, subscribe_invoice
from tests.fixtures.users import TestUser, make_key
from tests.mail.conftest import SmtpServer
from tests.payments.test_razorpay import _ack, _checkout, _event_id, _pay_id, _payment_entity


async def notices(client: httpx.AsyncClient, user: TestUser) -> dict[str, dict[str, object]]:
    r = await client.get("/api/notifications", headers=user.headers)
    assert r.status_code == 200, r.text
    return {n["kind"]: n for n in r.json()["items"]}


async def test_a_new_api_key_is_notified_and_emailed(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, other_user: TestUser, smtp_server: SmtpServer
) -> None:
    key = await make_key(client, user, name="deploy bot")
    created = (await notices(client, user))["apikey.created"]
    assert key["accessKeyId"] in str(created["body"]) and created["data"] == {"keyId": key["id"]}
    assert "apikey.created" not in await notices(client, other_user)
    await deliver(app, smtp_server)
    [text] = texts_to(smtp_server, user.email, "A new API key was created")
    assert '"deploy bot"' in text and key["accessKeyId"] in text and key["secretKey"] not in text


async def test_tier_requests_tell_their_user_how_they_ended(
    papp: FastAPI, pclient: httpx.AsyncClient, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    approved = (await notices(pclient, payer))["tier_request.approved"]
    assert "Starter" in str(approved["body"]) and inv["id"] in str(approved["body"])
    assert approved["data"] == {"tierName": "Starter", "invoiceId": inv["id"]}
    r = await pclient.post("/api/tier-requests", json={"tierId": "tier_pro", "reason": "more"}, headers=payer.headers)
    assert r.status_code == 201, r.text
    r = await pclient.patch(
        f"/api/tier-requests/admin/{r.json()['id']}/approve",
        json={"approved": False, "note": "not this month"},
        headers=padmin.headers,
    )
    assert r.status_code == 200, r.text
    rejected = (await notices(pclient, payer))["tier_request.rejected"]
    assert "not this month" in str(rejected["body"])


async def test_a_confirmed_payment_sends_a_receipt_with_amount_and_method(
    pclient: httpx.AsyncClient, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    submitted = await submit_tx(pclient, payer, inv["id"], "USDC", new_tx_hash())
    assert submitted.status_code == 201, submitted.text
    payment_id = submitted.json()["id"]
    r = await pclient.patch(
        f"/api/admin/payments/{payment_id}",
        json={"action": "confirm", "amountReceived": "7.25"},
        headers=padmin.headers,
    )
    assert r.status_code == 200, r.text
    receipt = (await notices(pclient, payer))["billing.payment_received"]
    assert receipt["title"] == "Payment received: 7.25 USD"
    assert "by crypto" in str(receipt["body"]) and "2.25 USD of it was added to your credit balance" in str(
        receipt["body"]
    )
    assert receipt["data"] == {
        "paymentId": payment_id,
        "invoiceId": inv["id"],
        "amountCents": 725,
        "currency": "USD",
        "method": "crypto",
        "creditedCents": 225,
    }


async def test_a_failed_payment_is_notified(pclient: httpx.AsyncClient, payer: TestUser, padmin: TestUser) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    out = await _checkout(pclient, payer, inv["id"])
    body = razorpay_event(
        "payment.failed",
        payment=_payment_entity(_pay_id(), out["orderId"], inv["id"], status="failed", error_description="declined"),
    )
    await _ack(pclient, body, "invoice_failed", event_id=_event_id())
    failed = (await notices(pclient, payer))["billing.payment_failed"]
    assert inv["id"] in str(failed["body"]) and "5.00 USD" in str(failed["body"])
    assert failed["data"] == {"invoiceId": inv["id"], "method": "razorpay"}
