"""The Coinbase Commerce and BTCPay Server webhooks (payments/providers/crypto_processors.py): signed events
pay our invoice once, over- and under-payments and late payments become credit, forged events store
nothing, and events that cannot be applied are recorded for an admin."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.models import PaymentEvent
from tests.fixtures.crypto import (
    current_subscription_row,
    error_of,
    expire_rates,
    ledger_is,
    ledger_rows,
    new_tx_hash,
    payment_rows,
    set_rates,
)
from tests.fixtures.payments import (
    BTCPAY_SECRET,
    COINBASE_SECRET,
    audits,
    hmac_hex,
    invoice_row,
    post_btcpay,
    post_coinbase,
    subscribe_invoice,
    topup_invoice,
)
from tests.fixtures.users import TestUser

# --- helpers -------------------------------------------------------------------------------------------------


async def _events(app: FastAPI, provider: str) -> list[PaymentEvent]:
    async with app.state.db.sessions() as s:
        stmt = select(PaymentEvent).where(PaymentEvent.provider == provider).order_by(PaymentEvent.received_at)
        return list((await s.scalars(stmt)).all())


async def _all_events(app: FastAPI) -> list[PaymentEvent]:
    async with app.state.db.sessions() as s:
        return list((await s.scalars(select(PaymentEvent))).all())


def coinbase_body(
    kind: str,
    invoice_id: str | None,
    charge_id: str,
    *,
    price: str = "5.00",
    paid: list[str] | None = None,
    currency: str = "USD",
    event_id: str | None = None,
) -> bytes:
    payments = [
        {
            "network": "ethereum",
            "transaction_id": "0x" + new_tx_hash(),
            "status": "CONFIRMED",
            "value": {
                "local": {"amount": amount, "currency": currency},
                "crypto": {"amount": "0.1", "currency": "ETH"},
            },
        }
        for amount in (paid if paid is not None else [price])
    ]
    charge = {
        "id": charge_id,
        "code": charge_id[-8:].upper(),
        "resource": "charge",
        "name": "Pockity",
        "metadata": {"invoiceId": invoice_id} if invoice_id else {},
        "pricing": {"local": {"amount": price, "currency": currency}},
        "payments": payments,
    }
    return json.dumps(
        {
            "id": int(time.time_ns() % 1_000_000_000),
            "scheduled_for": "2024-01-01T00:00:00Z",
            "event": {
                "id": event_id or f"cc_evt_{secrets.token_hex(8)}",
                "resource": "event",
                "type": kind,
                "api_version": "2018-03-22",
                "created_at": "2024-01-01T00:00:00Z",
                "data": charge,
            },
        }
    ).encode()


def btcpay_body(
    kind: str,
    store_invoice: str,
    invoice_id: str | None,
    *,
    delivery_id: str | None = None,
    original: str | None = None,
    **extra: Any,
) -> bytes:
    delivery = delivery_id or f"dlv_{secrets.token_hex(8)}"
    body: dict[str, Any] = {
        "deliveryId": delivery,
        "webhookId": "wh_pockity",
        "originalDeliveryId": original or delivery,
        "isRedelivery": original is not None,
        "type": kind,
        "timestamp": int(time.time()),
        "storeId": "store_pockity",
        "invoiceId": store_invoice,
        "metadata": {"invoiceId": invoice_id} if invoice_id else {},
    }
    body.update(extra)
    return json.dumps(body).encode()


def _ack(r: httpx.Response, outcome: str, duplicate: bool = False) -> None:
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "duplicate": duplicate, "outcome": outcome}


# --- Coinbase Commerce -----------------------------------------------------------------------------------


async def test_coinbase_confirmed_charge_pays_once_despite_replays_and_later_events(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    charge = f"charge_{secrets.token_hex(6)}"
    body = coinbase_body("charge:confirmed", inv["id"], charge, event_id="cc_evt_first")
    _ack(await post_coinbase(pclient, body), "applied")
    rows = await payment_rows(papp)
    assert len(rows) == 1
    p = rows[0]
    assert (p.provider, p.provider_payment_id, p.status, p.received_cents, p.credited_cents, p.invoice_id) == (
        "coinbase",
        charge,
        "CONFIRMED",
        500,
        0,
        inv["id"],
    )
    paid = await invoice_row(papp, inv["id"])
    assert (paid.status, paid.provider, paid.provider_ref) == ("PAID", "coinbase", p.id)
    assert (await current_subscription_row(papp, payer.id)).status == "ACTIVE"
    events = await _events(papp, "coinbase")
    assert [(e.event_id, e.event_type, e.outcome, e.error, e.attempts) for e in events] == [
        ("cc_evt_first", "charge:confirmed", "applied", None, 1)
    ]
    assert events[0].processed_at is not None and json.loads(events[0].payload)["event"]["data"]["id"] == charge

    _ack(await post_coinbase(pclient, body), "applied", duplicate=True)  # a replay of the same event
    resolved = coinbase_body("charge:resolved", inv["id"], charge, event_id="cc_evt_resolved")
    _ack(await post_coinbase(pclient, resolved), "already_applied")  # another event about the same money
    assert len(await payment_rows(papp)) == 1
    assert [e.event_id for e in await _events(papp, "coinbase")] == ["cc_evt_first", "cc_evt_resolved"]
    assert len(await audits(papp, "payment.received")) == 1
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    assert await ledger_rows(papp, payer.id) == []
    await ledger_is(papp, pclient, payer, 0)


async def test_coinbase_overpayment_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    charge = f"charge_{secrets.token_hex(6)}"
    _ack(
        await post_coinbase(pclient, coinbase_body("charge:resolved", inv["id"], charge, paid=["5.00", "2.50"])),
        "applied",
    )
    p = (await payment_rows(papp))[0]
    assert (p.received_cents, p.credited_cents) == (750, 250)
    assert (await invoice_row(papp, inv["id"])).status == "PAID"
    assert await ledger_rows(papp, payer.id) == [(250, "overpayment", p.id)]
    await ledger_is(papp, pclient, payer, 250)


async def test_coinbase_underpayment_is_credit_and_the_invoice_stays_open(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    charge = f"charge_{secrets.token_hex(6)}"
    _ack(await post_coinbase(pclient, coinbase_body("charge:resolved", inv["id"], charge, paid=["3.10"])), "applied")
    p = (await payment_rows(papp))[0]
    assert (p.status, p.received_cents, p.credited_cents) == ("CONFIRMED", 310, 310)
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"
    assert await ledger_rows(papp, payer.id) == [(310, "partial_payment", p.id)]
    await ledger_is(papp, pclient, payer, 310)


async def test_coinbase_forged_or_unsigned_events_are_refused_and_not_stored(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    body = coinbase_body("charge:confirmed", inv["id"], "charge_forged")
    tampered = body.replace(b'"5.00"', b'"500.00"')
    for content, signature in (
        (body, hmac_hex("not-the-secret", body)),
        (tampered, hmac_hex(COINBASE_SECRET, body)),  # the signature of another body
        (body, "sha256=" + hmac_hex(COINBASE_SECRET, body)),
        (body, ""),
    ):
        r = await post_coinbase(pclient, content, signature=signature or " ")
        assert error_of(r) == (400, "invalid_signature")
    r = await pclient.post("/api/billing/webhooks/coinbase", content=body)  # no header at all
    assert error_of(r) == (400, "invalid_signature")
    assert await _all_events(papp) == []
    assert await payment_rows(papp) == []
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"


async def test_coinbase_top_up_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    top = await topup_invoice(pclient, payer, 2000)
    charge = f"charge_{secrets.token_hex(6)}"
    _ack(await post_coinbase(pclient, coinbase_body("charge:confirmed", top["id"], charge, price="20.00")), "applied")
    p = (await payment_rows(papp))[0]
    assert (p.provider, p.received_cents, p.credited_cents) == ("coinbase", 2000, 2000)
    paid = await invoice_row(papp, top["id"])
    assert (paid.status, paid.provider) == ("PAID", "coinbase")
    assert await ledger_rows(papp, payer.id) == [(2000, "topup", p.id)]
    await ledger_is(papp, pclient, payer, 2000)
    details = (await audits(papp, "payment.received", p.id))[0].details
    assert details["creditReason"] == "topup"


async def test_coinbase_events_that_cannot_be_applied_are_recorded(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    unknown = coinbase_body("charge:confirmed", "01NOSUCHINVOICE0000000000", "charge_unknown", event_id="cc_unknown")
    _ack(await post_coinbase(pclient, unknown), "unapplicable")
    euros = coinbase_body("charge:confirmed", inv["id"], "charge_eur", currency="EUR", event_id="cc_eur")
    _ack(await post_coinbase(pclient, euros), "unapplicable")
    failed = coinbase_body("charge:failed", inv["id"], "charge_failed", event_id="cc_failed")
    _ack(await post_coinbase(pclient, failed), "noted")
    events = {e.event_id: e for e in await _events(papp, "coinbase")}
    assert {k: e.outcome for k, e in events.items()} == {
        "cc_unknown": "unapplicable",
        "cc_eur": "unapplicable",
        "cc_failed": "noted",
    }
    assert all(e.processed_at is not None for e in events.values())
    assert "01NOSUCHINVOICE0000000000" in (events["cc_unknown"].error or "")
    assert "EUR" in (events["cc_eur"].error or "")
    assert await payment_rows(papp) == []  # the EUR payment row was rolled back with the failed handling
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"
    await ledger_is(papp, pclient, payer, 0)


# --- BTCPay Server ---------------------------------------------------------------------------------------


async def test_btcpay_settled_invoice_pays_ours_and_a_redelivery_is_a_duplicate(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    store_invoice = f"BTCPAY{secrets.token_hex(6)}"
    body = btcpay_body("InvoiceSettled", store_invoice, inv["id"], delivery_id="dlv_first")
    _ack(await post_btcpay(pclient, body), "applied")
    rows = await payment_rows(papp)
    assert len(rows) == 1
    p = rows[0]
    assert (p.provider, p.provider_payment_id, p.status, p.received_cents, p.credited_cents) == (
        "btcpay",
        store_invoice,
        "CONFIRMED",
        500,
        0,
    )
    paid = await invoice_row(papp, inv["id"])
    assert (paid.status, paid.provider, paid.provider_ref) == ("PAID", "btcpay", p.id)
    assert (await current_subscription_row(papp, payer.id)).status == "ACTIVE"

    again = btcpay_body("InvoiceSettled", store_invoice, inv["id"], delivery_id="dlv_second", original="dlv_first")
    _ack(await post_btcpay(pclient, again), "applied", duplicate=True)
    events = await _events(papp, "btcpay")
    assert [(e.event_id, e.event_type, e.outcome, e.attempts) for e in events] == [
        ("dlv_first", "InvoiceSettled", "applied", 1)
    ]
    assert len(await payment_rows(papp)) == 1
    assert len(await audits(papp, "payment.received")) == 1
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    await ledger_is(papp, pclient, payer, 0)


async def test_btcpay_received_payment_before_settlement_is_only_noted(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"BTC": "100000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    body = btcpay_body(
        "InvoiceReceivedPayment",
        "BTCPAYnoted",
        inv["id"],
        delivery_id="dlv_noted",
        afterExpiration=False,
        payment={"id": "pay_1", "value": "0.00005", "status": "Settled"},
    )
    _ack(await post_btcpay(pclient, body), "noted")
    assert await payment_rows(papp) == []
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"
    assert [(e.event_id, e.outcome) for e in await _events(papp, "btcpay")] == [("dlv_noted", "noted")]
    await ledger_is(papp, pclient, payer, 0)


async def test_btcpay_payment_after_expiration_is_credited_at_our_rate(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"BTC": "30000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    body = btcpay_body(
        "InvoiceReceivedPayment",
        "BTCPAYlate",
        inv["id"],
        delivery_id="dlv_late",
        afterExpiration=True,
        payment={"id": "pay_late", "value": "0.0001", "status": "Settled"},
    )
    _ack(await post_btcpay(pclient, body), "applied_late")
    p = (await payment_rows(papp))[0]
    # 0.0001 BTC at 30000 USD = 3.00 USD: less than the invoice, so all of it is credit.
    assert (p.provider, p.provider_payment_id, p.status) == ("btcpay", "BTCPAYlate:pay_late", "CONFIRMED")
    assert (p.received_cents, p.credited_cents) == (300, 300)
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"
    assert await ledger_rows(papp, payer.id) == [(300, "partial_payment", p.id)]
    await ledger_is(papp, pclient, payer, 300)
    _ack(await post_btcpay(pclient, body), "applied_late", duplicate=True)
    assert len(await payment_rows(papp)) == 1
    await ledger_is(papp, pclient, payer, 300)


async def test_btcpay_late_payment_after_our_invoice_was_paid_is_all_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"BTC": "100000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    await pclient.patch(f"/api/admin/invoices/{inv['id']}", json={"status": "PAID"}, headers=padmin.headers)
    body = btcpay_body(
        "InvoiceReceivedPayment",
        "BTCPAYafter",
        inv["id"],
        afterExpiration=True,
        payment={"id": "pay_after", "value": "0.0001"},
    )
    _ack(await post_btcpay(pclient, body), "applied_late")
    [p] = await payment_rows(papp, provider="btcpay")
    assert (p.received_cents, p.credited_cents) == (1000, 1000)  # 0.0001 BTC at 100000 USD
    assert await ledger_rows(papp, payer.id) == [(1000, "unapplied_payment", p.id)]
    await ledger_is(papp, pclient, payer, 1000)


async def test_btcpay_late_payment_without_a_current_rate_is_left_for_an_admin(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)

    def late(delivery: str) -> bytes:
        return btcpay_body(
            "InvoiceReceivedPayment",
            "BTCPAYnorate",
            inv["id"],
            delivery_id=delivery,
            afterExpiration=True,
            payment={"id": "pay_x", "value": "0.0001"},
        )

    _ack(await post_btcpay(pclient, late("dlv_norate")), "unapplicable")
    # An expired rate is no current rate either: a stale price must not value money.
    await set_rates(pclient, padmin, {"BTC": "100000"})
    await expire_rates(papp)
    _ack(await post_btcpay(pclient, late("dlv_stale")), "unapplicable")
    events = {e.event_id: e for e in await _events(papp, "btcpay")}
    assert {k: e.outcome for k, e in events.items()} == {"dlv_norate": "unapplicable", "dlv_stale": "unapplicable"}
    assert all("rate" in (e.error or "") for e in events.values())
    assert await payment_rows(papp) == []
    await ledger_is(papp, pclient, payer, 0)


async def test_btcpay_forged_events_are_refused_and_not_stored(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    body = btcpay_body("InvoiceSettled", "BTCPAYforged", inv["id"])
    for signature in (
        "sha256=" + hmac_hex("not-the-secret", body),
        hmac_hex(BTCPAY_SECRET, body),  # the right HMAC without the "sha256=" prefix
        "sha256=" + hmac_hex(BTCPAY_SECRET, body + b" "),
        "sha256=",
    ):
        r = await post_btcpay(pclient, body, signature=signature)
        assert error_of(r) == (400, "invalid_signature"), signature
    r = await pclient.post("/api/billing/webhooks/btcpay", content=body)
    assert error_of(r) == (400, "invalid_signature")
    assert await _all_events(papp) == []
    assert await payment_rows(papp) == []
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"


async def test_btcpay_event_for_an_unknown_invoice_is_recorded_as_unapplicable(
    pclient: httpx.AsyncClient, papp: FastAPI, padmin: TestUser
) -> None:
    unknown = btcpay_body("InvoiceSettled", "BTCPAYunknown", "01NOSUCHINVOICE0000000000", delivery_id="dlv_unknown")
    _ack(await post_btcpay(pclient, unknown), "unapplicable")
    nometa = btcpay_body("InvoiceSettled", "BTCPAYnometa", None, delivery_id="dlv_nometa")
    _ack(await post_btcpay(pclient, nometa), "unapplicable")
    events = {e.event_id: e for e in await _events(papp, "btcpay")}
    assert set(events) == {"dlv_unknown", "dlv_nometa"}
    assert all(e.outcome == "unapplicable" and e.processed_at is not None and e.attempts == 1 for e in events.values())
    assert "01NOSUCHINVOICE0000000000" in (events["dlv_unknown"].error or "")
    assert await payment_rows(papp) == []
    listed = await pclient.get("/api/admin/payment-events?provider=btcpay", headers=padmin.headers)
    assert listed.status_code == 200
    assert {(i["eventId"], i["outcome"]) for i in listed.json()["items"]} == {
        ("dlv_unknown", "unapplicable"),
        ("dlv_nometa", "unapplicable"),
    }
    # Processed, so the unprocessed view is empty, and a redelivery does not try again.
    assert (await pclient.get("/api/admin/payment-events?unprocessed=true", headers=padmin.headers)).json()[
        "items"
    ] == []
    _ack(await post_btcpay(pclient, unknown), "unapplicable", duplicate=True)


@pytest.mark.parametrize(
    "payment",
    [
        {"id": "pay_bad", "value": "abc"},
        {"id": "pay_nan", "value": "NaN"},
        {"id": "pay_zero", "value": "0"},
        {"id": "pay_neg", "value": "-0.0001"},
        {"value": "0.0001"},
        {"id": "pay_novalue"},
    ],
)
async def test_btcpay_late_payment_without_a_usable_value_or_id_is_left_for_an_admin(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, payment: dict[str, Any]
) -> None:
    """Permanent: recorded as unapplicable, not a 503 that makes BTCPay redeliver it for ever."""
    await set_rates(pclient, padmin, {"BTC": "100000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    body = btcpay_body(
        "InvoiceReceivedPayment", "BTCPAYbad", inv["id"], delivery_id="dlv_bad", afterExpiration=True, payment=payment
    )
    _ack(await post_btcpay(pclient, body), "unapplicable")
    [event] = await _events(papp, "btcpay")
    assert (event.outcome, event.attempts) == ("unapplicable", 1) and event.processed_at is not None
    assert await payment_rows(papp) == []
    await ledger_is(papp, pclient, payer, 0)
