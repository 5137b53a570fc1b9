"""Crypto payments confirmed by an admin (payments/crypto.py): submitting a transaction hash (unique, normalised,
for an open invoice of one's own), and confirming or rejecting it once — exact, partial and over-payments,
top-ups, races between admins, the credit ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.crypto import (
    current_subscription_row,
    error_of,
    ledger_is,
    ledger_rows,
    new_tx_hash,
    payment_rows,
    quotes_of,
    set_rates,
    submit_tx,
)
from tests.fixtures.payments import (
    BTC_ADDRESS,
    audits,
    invoice,
    invoice_row,
    subscribe_invoice,
    topup_invoice,
)
from tests.fixtures.users import TestUser, make_admin

# --- helpers -------------------------------------------------------------------------------------------------


async def _submitted(
    client: httpx.AsyncClient, user: TestUser, invoice_id: str, asset: str, tx_hash: str
) -> dict[str, Any]:
    r = await submit_tx(client, user, invoice_id, asset, tx_hash)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _resolve(
    client: httpx.AsyncClient,
    admin: TestUser,
    payment_id: str,
    action: str = "confirm",
    amount: str | None = None,
    note: str = "",
) -> httpx.Response:
    body: dict[str, Any] = {"action": action, "note": note}
    if amount is not None:
        body["amountReceived"] = amount
    return await client.patch(f"/api/admin/payments/{payment_id}", json=body, headers=admin.headers)


# --- submitting a transaction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asset", "tx_hash", "code"),
    [
        ("ETH", "0x1234", "invalid_tx_hash"),
        ("ETH", "0x" + "g" * 64, "invalid_tx_hash"),
        ("ETH", "0x" + "a" * 66, "invalid_tx_hash"),
        ("USDC", "0x" + "a" * 63, "invalid_tx_hash"),
        ("USDC", "hello", "invalid_tx_hash"),
        ("BTC", "0x" + "a" * 64, "invalid_tx_hash"),  # a BTC txid has no 0x prefix
        ("BTC", "a" * 63, "invalid_tx_hash"),
        ("BTC", "a" * 64 + " b", "invalid_tx_hash"),
    ],
)
async def test_a_malformed_tx_hash_is_refused(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, asset: str, tx_hash: str, code: str
) -> None:
    await set_rates(pclient, padmin, {"ETH": "3000", "BTC": "100000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    r = await submit_tx(pclient, payer, inv["id"], asset, tx_hash)
    assert error_of(r) == (422, code)
    assert r.json()["error"]["details"] == {"asset": asset}
    assert await payment_rows(papp) == []
    assert await audits(papp, "payment.crypto_submitted") == []


async def test_bad_asset_or_sending_address_is_refused(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    r = await submit_tx(pclient, payer, inv["id"], "DOGE", new_tx_hash())
    assert r.status_code == 422
    r = await submit_tx(pclient, payer, inv["id"], "USDC", new_tx_hash(), from_address="not-an-address")
    assert error_of(r) == (422, "invalid_address")
    r = await submit_tx(pclient, payer, inv["id"], "USDC", new_tx_hash(), from_address=BTC_ADDRESS)  # wrong chain
    assert error_of(r) == (422, "invalid_address")
    assert await payment_rows(papp) == []


async def test_submission_is_normalised_queued_for_admins_and_audited(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"ETH": "3000", "BTC": "100000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    raw = new_tx_hash()
    sender = "0x" + "Ef" * 20
    r = await submit_tx(pclient, payer, inv["id"], "USDC", "  " + raw.upper() + " ", from_address=sender)
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["txHash"] == "0x" + raw  # upper-case, no prefix, padded → the canonical form
    assert (p["status"], p["provider"], p["invoiceId"], p["userId"]) == ("PENDING", "crypto", inv["id"], payer.id)
    assert (p["amountCents"], p["currency"], p["asset"], p["assetAmount"], p["rate"]) == (
        500,
        "USD",
        "USDC",
        "5.00",
        "1",
    )
    assert (p["receivedCents"], p["creditedCents"], p["fromAddress"], p["resolvedAt"]) == (None, 0, sender, None)

    eth_raw = new_tx_hash()
    eth = await _submitted(pclient, payer, inv["id"], "ETH", "0X" + eth_raw.upper())
    assert (eth["txHash"], eth["assetAmount"], eth["rate"]) == ("0x" + eth_raw, "0.00166667", "3000")
    btc_raw = new_tx_hash()
    btc = await _submitted(pclient, payer, inv["id"], "BTC", btc_raw.upper())
    assert (btc["txHash"], btc["assetAmount"], btc["rate"]) == (btc_raw, "0.00005000", "100000")

    rows = {row.id: row for row in await payment_rows(papp)}
    assert {row.tx_hash for row in rows.values()} == {"0x" + raw, "0x" + eth_raw, btc_raw}
    assert rows[p["id"]].asset_amount == "5.00" and rows[p["id"]].from_address == sender
    assert all(row.status == "PENDING" and row.received_cents is None for row in rows.values())

    queue = await pclient.get("/api/admin/payments?status=PENDING&provider=crypto", headers=padmin.headers)
    assert queue.status_code == 200
    queued = [i["id"] for i in queue.json()["items"]]
    assert set(queued) == {btc["id"], eth["id"], p["id"]} and queued == sorted(queued, reverse=True)  # newest first
    assert (await pclient.get("/api/admin/payments?status=CONFIRMED", headers=padmin.headers)).json()["items"] == []
    assert (await pclient.get("/api/admin/payments?provider=coinbase", headers=padmin.headers)).json()["items"] == []
    assert (await pclient.get("/api/admin/payments", headers=payer.headers)).status_code == 403
    mine = (await pclient.get("/api/billing/payments", headers=payer.headers)).json()["items"]
    assert {m["id"] for m in mine} == set(rows)

    audit = await audits(papp, "payment.crypto_submitted", p["id"])
    assert len(audit) == 1 and audit[0].actor_id == payer.id
    assert audit[0].details == {"invoiceId": inv["id"], "asset": "USDC", "txHash": "0x" + raw, "amount": "5.00"}
    assert len(await audits(papp, "payment.crypto_submitted")) == 3
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"  # nothing paid until confirmed
    await ledger_is(papp, pclient, payer, 0)


async def test_a_tx_hash_pays_one_invoice_only(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, other_payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"ETH": "3000"})
    first = await subscribe_invoice(pclient, payer, padmin)
    raw = new_tx_hash()
    made = await _submitted(pclient, payer, first["id"], "ETH", "0x" + raw)
    second = await topup_invoice(pclient, payer, 1000)
    theirs = await subscribe_invoice(pclient, other_payer, padmin)
    for user, inv_id, asset, tx_hash in (
        (payer, first["id"], "ETH", "0x" + raw),  # the same invoice again
        (payer, second["id"], "ETH", "0x" + raw),
        (payer, second["id"], "USDC", raw),  # another asset on the same chain, no prefix
        (other_payer, theirs["id"], "ETH", "0x" + raw.upper()),  # another user, differing in case
        (other_payer, theirs["id"], "USDC", "0X" + raw.upper()),
    ):
        r = await submit_tx(pclient, user, inv_id, asset, tx_hash)
        assert error_of(r) == (409, "tx_hash_used"), (asset, tx_hash)
        assert r.json()["error"]["details"] == {"txHash": "0x" + raw}
    rows = await payment_rows(papp)
    assert [(row.id, row.invoice_id, row.tx_hash) for row in rows] == [(made["id"], first["id"], "0x" + raw)]
    assert len(await audits(papp, "payment.crypto_submitted")) == 1


async def test_two_users_submitting_one_hash_at_once_one_wins(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, other_payer: TestUser, padmin: TestUser
) -> None:
    mine = await subscribe_invoice(pclient, payer, padmin)
    theirs = await subscribe_invoice(pclient, other_payer, padmin)
    raw = new_tx_hash()
    results = await asyncio.gather(
        submit_tx(pclient, payer, mine["id"], "USDC", "0x" + raw),
        submit_tx(pclient, other_payer, theirs["id"], "USDC", raw.upper()),
    )
    assert sorted(r.status_code for r in results) == [201, 409]
    assert [error_of(r) for r in results if r.status_code == 409] == [(409, "tx_hash_used")]
    rows = await payment_rows(papp)
    assert len(rows) == 1 and rows[0].tx_hash == "0x" + raw


async def test_submitting_for_someone_elses_or_a_closed_invoice(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, other_payer: TestUser, padmin: TestUser
) -> None:
    theirs = await subscribe_invoice(pclient, other_payer, padmin)
    r = await submit_tx(pclient, payer, theirs["id"], "USDC", new_tx_hash())
    assert error_of(r) == (404, "invoice_not_found")
    r = await submit_tx(pclient, payer, "01NOSUCHINVOICE0000000000", "USDC", new_tx_hash())
    assert error_of(r) == (404, "invoice_not_found")
    r = await pclient.get(f"/api/billing/invoices/{theirs['id']}", headers=payer.headers)
    assert error_of(r) == (404, "invoice_not_found")  # nor can the quotes be read

    mine = await subscribe_invoice(pclient, payer, padmin)
    await pclient.patch(f"/api/admin/invoices/{mine['id']}", json={"status": "PAID"}, headers=padmin.headers)
    r = await submit_tx(pclient, payer, mine["id"], "USDC", new_tx_hash())
    assert error_of(r) == (409, "invoice_not_payable") and r.json()["error"]["details"] == {"status": "PAID"}
    r = await pclient.post(
        f"/api/billing/invoices/{mine['id']}/crypto", json={"asset": "USDC", "txHash": new_tx_hash()}
    )
    assert r.status_code == 401
    assert await payment_rows(papp, provider="crypto") == []  # (marking it paid recorded a `manual` one)


# --- admin confirmation ----------------------------------------------------------------------------------


async def test_confirm_without_amount_pays_the_invoice_exactly(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    r = await _resolve(pclient, padmin, p["id"], note="seen on etherscan")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["receivedCents"], body["creditedCents"], body["note"]) == (
        "CONFIRMED",
        500,
        0,
        "seen on etherscan",
    )
    assert body["resolvedAt"]
    row = (await payment_rows(papp))[0]
    assert (row.status, row.received_cents, row.credited_cents, row.resolved_by) == ("CONFIRMED", 500, 0, padmin.id)
    paid = await invoice_row(papp, inv["id"])
    assert (paid.status, paid.provider, paid.provider_ref) == ("PAID", "crypto", p["id"])
    assert (await invoice(pclient, payer, inv["id"]))["crypto"] == []
    sub = await current_subscription_row(papp, payer.id)
    assert (sub.tier_id, sub.status) == ("tier_starter", "ACTIVE")
    assert await ledger_rows(papp, payer.id) == []
    await ledger_is(papp, pclient, payer, 0)
    received = await audits(papp, "payment.received", p["id"])
    assert len(received) == 1 and received[0].actor_id == padmin.id
    assert received[0].details | {"creditReason": None} == {
        "provider": "crypto",
        "invoiceId": inv["id"],
        "receivedCents": 500,
        "creditedCents": 0,
        "creditReason": None,
    }
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1
    queue = await pclient.get("/api/admin/payments?status=PENDING&provider=crypto", headers=padmin.headers)
    assert queue.json()["items"] == []


async def test_confirming_exactly_the_quoted_eth_amount_pays_exactly(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"ETH": "3000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "ETH", new_tx_hash())
    assert p["assetAmount"] == "0.00166667"  # worth 500.001 cents: the rounding-up is not credit
    await set_rates(pclient, padmin, {"ETH": "1000"})  # the rate quoted on submission still applies
    r = await _resolve(pclient, padmin, p["id"], amount="0.00166667")
    assert r.status_code == 200 and (r.json()["receivedCents"], r.json()["creditedCents"]) == (500, 0)
    assert (await invoice_row(papp, inv["id"])).status == "PAID"
    await ledger_is(papp, pclient, payer, 0)


async def test_partial_payments_become_credit_until_they_cover_the_invoice(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"ETH": "3000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    first = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    r = await _resolve(pclient, padmin, first["id"], amount="2.00")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["receivedCents"], r.json()["creditedCents"]) == ("CONFIRMED", 200, 200)
    still = await invoice(pclient, payer, inv["id"])
    assert still["status"] == "PENDING" and quotes_of(still)["USDC"]["amount"] == "5.00"
    assert await ledger_rows(papp, payer.id) == [(200, "partial_payment", first["id"])]
    await ledger_is(papp, pclient, payer, 200)
    assert (await audits(papp, "payment.received", first["id"]))[0].details["creditReason"] == "partial_payment"
    assert (await current_subscription_row(papp, payer.id)).status == "PENDING_PAYMENT"

    # The rest arrives in ETH: 0.001 ETH at the quoted 3000 USD is 300 cents, which with the 200 covers 500.
    second = await _submitted(pclient, payer, inv["id"], "ETH", new_tx_hash())
    r = await _resolve(pclient, padmin, second["id"], amount="0.001")
    assert r.status_code == 200, r.text
    assert (r.json()["receivedCents"], r.json()["creditedCents"]) == (300, 300)
    paid = await invoice_row(papp, inv["id"])
    assert (paid.status, paid.provider) == ("PAID", "credits")
    assert await ledger_rows(papp, payer.id) == sorted(
        [(200, "partial_payment", first["id"]), (300, "partial_payment", second["id"]), (-500, "invoice", inv["id"])]
    )
    await ledger_is(papp, pclient, payer, 0)
    assert (await current_subscription_row(papp, payer.id)).status == "ACTIVE"
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1


async def test_an_overpayment_pays_the_invoice_and_the_rest_is_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"ETH": "3000"})
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "ETH", new_tx_hash())
    r = await _resolve(pclient, padmin, p["id"], amount="0.002")  # 6.00 USD
    assert r.status_code == 200, r.text
    assert (r.json()["receivedCents"], r.json()["creditedCents"]) == (600, 100)
    paid = await invoice_row(papp, inv["id"])
    assert (paid.status, paid.provider, paid.provider_ref) == ("PAID", "crypto", p["id"])
    assert await ledger_rows(papp, payer.id) == [(100, "overpayment", p["id"])]
    await ledger_is(papp, pclient, payer, 100)
    details = (await audits(papp, "payment.received", p["id"]))[0].details
    assert (details["receivedCents"], details["creditedCents"], details["creditReason"]) == (600, 100, "overpayment")


async def test_a_crypto_top_up_becomes_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    top = await topup_invoice(pclient, payer, 2000)
    assert quotes_of(await invoice(pclient, payer, top["id"]))["USDC"]["amount"] == "20.00"
    p = await _submitted(pclient, payer, top["id"], "USDC", new_tx_hash())
    r = await _resolve(pclient, padmin, p["id"])
    assert r.status_code == 200 and r.json()["creditedCents"] == 2000
    assert (await invoice_row(papp, top["id"])).status == "PAID"
    assert await ledger_rows(papp, payer.id) == [(2000, "topup", p["id"])]
    await ledger_is(papp, pclient, payer, 2000)


async def test_reject_leaves_the_invoice_open_and_a_payment_is_resolved_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    r = await _resolve(pclient, padmin, p["id"], action="reject", note="no such transaction")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["note"], r.json()["receivedCents"]) == (
        "REJECTED",
        "no such transaction",
        None,
    )
    row = (await payment_rows(papp))[0]
    assert (row.status, row.resolved_by, row.credited_cents) == ("REJECTED", padmin.id, 0) and row.resolved_at
    detail = await invoice(pclient, payer, inv["id"])
    assert detail["status"] == "PENDING" and quotes_of(detail)["USDC"]["available"] is True
    rejected = await audits(papp, "payment.rejected", p["id"])
    assert len(rejected) == 1 and rejected[0].actor_id == padmin.id
    assert rejected[0].details == {"note": "no such transaction"}

    for action in ("confirm", "reject"):
        again = await _resolve(pclient, padmin, p["id"], action=action)
        assert error_of(again) == (409, "payment_not_pending")
        assert again.json()["error"]["details"] == {"status": "REJECTED"}
    assert (await payment_rows(papp))[0].status == "REJECTED"
    assert await audits(papp, "payment.received") == []
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"
    await ledger_is(papp, pclient, payer, 0)

    # The user can submit the right transaction and have it confirmed; confirming it twice changes nothing.
    good = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    assert (await _resolve(pclient, padmin, good["id"], amount="6.00")).status_code == 200
    twice = await _resolve(pclient, padmin, good["id"], amount="6.00")
    assert error_of(twice) == (409, "payment_not_pending") and twice.json()["error"]["details"] == {
        "status": "CONFIRMED"
    }
    assert (await _resolve(pclient, padmin, good["id"], action="reject")).status_code == 409
    assert (await payment_rows(papp, id=good["id"]))[0].status == "CONFIRMED"
    assert await ledger_rows(papp, payer.id) == [(100, "overpayment", good["id"])]
    await ledger_is(papp, pclient, payer, 100)
    assert len(await audits(papp, "payment.received")) == 1


async def test_resolve_input_rules(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    r = await _resolve(pclient, padmin, p["id"], amount="0")
    assert error_of(r) == (422, "invalid_amount")
    r = await _resolve(pclient, padmin, p["id"], amount="0.001")  # less than a cent is nothing received
    assert error_of(r) == (422, "invalid_amount")
    for bad in ("-1", "1e3", "abc", "1.2.3"):
        assert (await _resolve(pclient, padmin, p["id"], amount=bad)).status_code == 422, bad
    assert (
        await pclient.patch(f"/api/admin/payments/{p['id']}", json={"action": "pay"}, headers=padmin.headers)
    ).status_code == 422
    r = await _resolve(pclient, padmin, "01NOSUCHPAYMENT0000000000")
    assert error_of(r) == (404, "payment_not_found")
    r = await _resolve(pclient, payer, p["id"])
    assert error_of(r) == (403, "admin_required")
    row = (await payment_rows(papp))[0]
    assert (row.status, row.received_cents) == ("PENDING", None)
    assert (await invoice_row(papp, inv["id"])).status == "PENDING"
    assert await audits(papp, "payment.received") == [] and await audits(papp, "payment.rejected") == []


async def test_two_admins_confirming_at_once_apply_it_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    other_admin = await make_admin(papp, pclient)
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    results = await asyncio.gather(
        _resolve(pclient, padmin, p["id"], amount="7.00"), _resolve(pclient, other_admin, p["id"], amount="7.00")
    )
    assert sorted(r.status_code for r in results) == [200, 409]
    assert [error_of(r) for r in results if r.status_code == 409] == [(409, "payment_not_pending")]
    row = (await payment_rows(papp))[0]
    assert (row.status, row.received_cents, row.credited_cents) == ("CONFIRMED", 700, 200)
    assert await ledger_rows(papp, payer.id) == [(200, "overpayment", p["id"])]
    await ledger_is(papp, pclient, payer, 200)
    assert len(await audits(papp, "payment.received")) == 1
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1


async def test_confirm_and_reject_racing_one_wins(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    other_admin = await make_admin(papp, pclient)
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    results = await asyncio.gather(
        _resolve(pclient, padmin, p["id"], amount="2.00"), _resolve(pclient, other_admin, p["id"], action="reject")
    )
    assert sorted(r.status_code for r in results) == [200, 409]
    winner = next(r for r in results if r.status_code == 200).json()["status"]
    row = (await payment_rows(papp))[0]
    assert row.status == winner
    expected = 200 if winner == "CONFIRMED" else 0
    await ledger_is(papp, pclient, payer, expected)
    assert len(await audits(papp, "payment.received")) + len(await audits(papp, "payment.rejected")) == 1


async def test_two_partial_payments_confirmed_at_once_pay_the_invoice_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    other_admin = await make_admin(papp, pclient)
    inv = await subscribe_invoice(pclient, payer, padmin)
    a = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    b = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    results = await asyncio.gather(
        _resolve(pclient, padmin, a["id"], amount="3.00"), _resolve(pclient, other_admin, b["id"], amount="3.00")
    )
    assert [r.status_code for r in results] == [200, 200]
    paid = await invoice_row(papp, inv["id"])
    assert (paid.status, paid.provider) == ("PAID", "credits")
    entries = await ledger_rows(papp, payer.id)
    assert entries == sorted(
        [(300, "partial_payment", a["id"]), (300, "partial_payment", b["id"]), (-500, "invoice", inv["id"])]
    )
    await ledger_is(papp, pclient, payer, 100)
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1


async def test_confirming_after_the_invoice_was_paid_otherwise_makes_it_all_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    p = await _submitted(pclient, payer, inv["id"], "USDC", new_tx_hash())
    await pclient.patch(f"/api/admin/invoices/{inv['id']}", json={"status": "PAID"}, headers=padmin.headers)
    r = await _resolve(pclient, padmin, p["id"])
    assert r.status_code == 200 and (r.json()["receivedCents"], r.json()["creditedCents"]) == (500, 500)
    paid = await invoice_row(papp, inv["id"])
    assert (paid.status, paid.provider) == ("PAID", "manual")  # money is never dropped: it became credit
    assert await ledger_rows(papp, payer.id) == [(500, "unapplied_payment", p["id"])]
    await ledger_is(papp, pclient, payer, 500)
    assert len(await audits(papp, "invoice.paid", inv["id"])) == 1


async def test_a_top_up_paid_in_parts_closes_once_covered(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    """KNOWN BUG (left failing on purpose): apply_received closes a top-up only when ONE payment covers it
    ("the top-up invoice closes once it is covered"); two parts that cover it leave it open and payable again."""
    top = await topup_invoice(pclient, payer, 2000)
    a = await _submitted(pclient, payer, top["id"], "USDC", new_tx_hash())
    b = await _submitted(pclient, payer, top["id"], "USDC", new_tx_hash())
    assert (await _resolve(pclient, padmin, a["id"], amount="10.00")).status_code == 200
    assert (await invoice_row(papp, top["id"])).status == "PENDING"  # half of it: still open
    assert (await _resolve(pclient, padmin, b["id"], amount="10.00")).status_code == 200
    assert await ledger_rows(papp, payer.id) == sorted([(1000, "topup", a["id"]), (1000, "topup", b["id"])])
    await ledger_is(papp, pclient, payer, 2000)
    assert (await invoice_row(papp, top["id"])).status == "PAID"


async def test_a_non_usd_invoice_has_no_crypto_quote(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    await set_rates(pclient, padmin, {"ETH": "3000", "BTC": "100000"})
    r = await pclient.post(
        "/api/billing/credits/top-up", json={"amountCents": 1000, "currency": "EUR"}, headers=payer.headers
    )
    assert r.status_code == 201, r.text
    q = quotes_of(await invoice(pclient, payer, r.json()["id"]))
    assert {a: (x["available"], x["reason"], x["amount"]) for a, x in q.items()} == {
        a: (False, "currency_not_supported", None) for a in ("ETH", "USDC", "BTC")
    }
    sub = await submit_tx(pclient, payer, r.json()["id"], "USDC", new_tx_hash())
    assert error_of(sub) == (409, "quote_unavailable")
    assert sub.json()["error"]["details"] == {"asset": "USDC", "reason": "currency_not_supported"}
    assert await payment_rows(papp) == []
