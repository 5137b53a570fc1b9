"""The admin's money pages: the crypto queue (confirm with the amount received, reject) and invoices (mark paid,
void). Each action is checked through the API and the audit log, as the admin API's would be."""

from __future__ import annotations

import html
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.console.helpers import console_login, csrf, post
from tests.fixtures.app import client_for
from tests.fixtures.payments import audits, invoice, subscribe_invoice
from tests.fixtures.users import TestUser

XSS = "<img src=x onerror=alert(1)>"


async def _submit_crypto(client: httpx.AsyncClient, user: TestUser, invoice_id: str) -> dict[str, str]:
    tx = "0x" + uuid.uuid4().hex * 2
    r = await client.post(
        f"/api/billing/invoices/{invoice_id}/crypto",
        json={"asset": "USDC", "txHash": tx},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
async def admin_browser(papp: FastAPI, padmin: TestUser) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(papp) as client:
        await console_login(client, padmin.email, padmin.password)
        yield client


async def test_an_admin_confirms_a_crypto_payment_and_the_invoice_is_paid(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, admin_browser: httpx.AsyncClient
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    paid = await _submit_crypto(pclient, payer, inv["id"])
    browser = admin_browser
    queue = await browser.get("/admin/payments")
    assert queue.status_code == 200
    assert paid["txHash"] in queue.text and f'action="/admin/payments/{paid["id"]}"' in queue.text
    assert 'value="5.00"' in queue.text  # the quoted amount, prefilled
    bad = await post(browser, f"/admin/payments/{paid['id']}", {"action": "confirm", "amount_received": "lots"})
    assert bad.status_code == 422 and "Amount received: a decimal number" in bad.text
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PENDING"
    r = await post(browser, f"/admin/payments/{paid['id']}", {"action": "confirm", "amount_received": "5.00"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/payments?done=confirm"
    assert "The payment is confirmed" in (await browser.get(r.headers["location"])).text
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    again = await post(browser, f"/admin/payments/{paid['id']}", {"action": "reject"})
    assert again.status_code == 409  # resolved once
    assert (await invoice(pclient, payer, inv["id"]))["status"] == "PAID"
    done = await browser.get("/admin/payments", params={"status": "CONFIRMED", "provider": "crypto"})
    assert paid["txHash"] in done.text and f'action="/admin/payments/{paid["id"]}"' not in done.text
    assert [e.target_id for e in await audits(papp, "invoice.paid", inv["id"])] == [inv["id"]]


async def test_an_admin_rejects_a_payment_and_voids_or_marks_invoices(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, admin_browser: httpx.AsyncClient
) -> None:
    first = await subscribe_invoice(pclient, payer, padmin)
    submitted = await _submit_crypto(pclient, payer, first["id"])
    browser = admin_browser
    r = await post(browser, f"/admin/payments/{submitted['id']}", {"action": "reject", "note": f"no {XSS}"})
    assert r.status_code == 303
    assert len(await audits(papp, "payment.rejected", submitted["id"])) == 1
    rejected = await browser.get("/admin/payments", params={"status": "REJECTED", "provider": "crypto"})
    assert html.escape(f"no {XSS}", quote=False) in rejected.text and XSS not in rejected.text
    assert (await invoice(pclient, payer, first["id"]))["status"] == "PENDING"
    listed = await browser.get("/admin/invoices", params={"user": payer.id})
    assert first["id"] in listed.text and f'action="/admin/invoices/{first["id"]}"' in listed.text
    r = await post(browser, f"/admin/invoices/{first['id']}", {"status": "VOID", "note": "by mistake"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/invoices?done=void"
    assert (await invoice(pclient, payer, first["id"]))["status"] == "VOID"
    assert len(await audits(papp, "invoice.voided", first["id"])) == 1
    late = await post(browser, f"/admin/invoices/{first['id']}", {"status": "PAID"})
    assert late.status_code == 409 and (await invoice(pclient, payer, first["id"]))["status"] == "VOID"
    odd = await post(browser, f"/admin/invoices/{first['id']}", {"status": "MAYBE"})
    assert odd.status_code == 422 and "Choose paid or void." in odd.text
    voided = await browser.get("/admin/invoices", params={"status": "VOID", "user": payer.id})
    assert first["id"] in voided.text and f'action="/admin/invoices/{first["id"]}"' not in voided.text
    token = await csrf(browser, "/admin/invoices")
    assert token  # the page has one; the request below leaves it out
    no_token = await browser.post(f"/admin/payments/{submitted['id']}", data={"action": "confirm"})
    assert no_token.status_code == 403


async def test_money_pages_refuse_users(pclient: httpx.AsyncClient, payer: TestUser, papp: FastAPI) -> None:
    async with client_for(papp) as browser:
        await console_login(browser, payer.email, payer.password)
        for path in ("/admin/payments", "/admin/invoices"):
            r = await browser.get(path)
            assert r.status_code == 403 and "<h1>" in r.text, path
