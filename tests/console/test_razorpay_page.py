"""Paying an invoice with Razorpay in the console: its widget on a page of ours, the proof checked by the server.

Razorpay cannot be reached from here: orders go to the local ProviderStub (tests/fixtures/payments.py), and in
the browser Playwright answers the request for Razorpay's checkout.js with a stand-in that behaves as the
widget's documented contract says (`new Razorpay(options).open()` calls `options.handler` with the order id,
a payment id and the signature HMAC-SHA256(key secret, "order_id|payment_id")). What runs for real: our page,
its CSP, our script, the form it posts, and the server's verification with the official package.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Route, async_playwright, expect

from tests.console.helpers import console_login, post
from tests.fixtures.payments import (
    RAZORPAY_KEY_ID,
    ProviderStub,
    audits,
    invoice,
    payment_settings,
    razorpay_payment_signature,
    subscribe_invoice,
)
from tests.fixtures.server import running_server, server_env
from tests.fixtures.users import TestUser, make_admin, make_user

CHROMIUM = shutil.which("chromium")
SHOTS = Path("var/screenshots")


async def _start(client: httpx.AsyncClient, invoice_id: str) -> httpx.Response:
    return await post(client, f"/billing/invoices/{invoice_id}/checkout", {"provider": "razorpay"}, "/")


async def test_the_razorpay_page_carries_the_order_and_a_csp_for_razorpay_alone(
    pclient: httpx.AsyncClient, payer: TestUser, padmin: TestUser, provider_stub: ProviderStub
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    await console_login(pclient, payer.email, payer.password)
    invoice_page = await pclient.get(f"/billing/invoices/{inv['id']}")
    assert "Pay with Razorpay" in invoice_page.text
    assert "checkout.razorpay.com" not in invoice_page.headers["content-security-policy"]  # other pages: 'self'
    r = await _start(pclient, inv["id"])
    assert r.status_code == 200, r.text
    order = re.search(r'data-order="(order_\w+)"', r.text)
    assert order is not None and f'data-key="{RAZORPAY_KEY_ID}"' in r.text and 'data-amount="500"' in r.text
    sent = [q for q in provider_stub.requests if q.path == "/v1/orders"]
    assert sent and sent[-1].json["amount"] == 500  # the order is for exactly the invoice
    csp = r.headers["content-security-policy"]
    assert "script-src 'self' https://checkout.razorpay.com;" in csp and "'unsafe-inline'" not in csp.split(";")[1]
    assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
    assert '<script src="https://checkout.razorpay.com/v1/checkout.js"' in r.text and "<script>" not in r.text


async def test_a_valid_proof_pays_the_invoice_once_and_a_forged_one_pays_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, other_payer: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    unpaid = (await invoice(pclient, payer, inv["id"]))["status"]
    assert unpaid == "PENDING"
    await console_login(pclient, payer.email, payer.password)
    page = await _start(pclient, inv["id"])
    order = re.search(r'data-order="(order_\w+)"', page.text)
    assert order is not None
    order_id, pay_id = order.group(1), "pay_" + uuid.uuid4().hex[:14]
    proof = {"razorpay_order_id": order_id, "razorpay_payment_id": pay_id}
    forged = await post(
        pclient, f"/billing/invoices/{inv['id']}/razorpay", {**proof, "razorpay_signature": "0" * 64}, "/"
    )
    assert forged.status_code == 400 and "signature" in forged.text.lower()
    assert (await invoice(pclient, payer, inv["id"]))["status"] == unpaid
    signature = razorpay_payment_signature(order_id, pay_id)
    # Another user cannot spend this proof, even with its valid signature.
    async with httpx.AsyncClient(transport=pclient._transport, base_url=str(pclient.base_url)) as other:
        await console_login(other, other_payer.email, other_payer.password)
        stolen = await post(
            other, f"/billing/invoices/{inv['id']}/razorpay", {**proof, "razorpay_signature": signature}, "/"
        )
        assert stolen.status_code == 404
    assert (await invoice(pclient, payer, inv["id"]))["status"] == unpaid
    ok = await post(pclient, f"/billing/invoices/{inv['id']}/razorpay", {**proof, "razorpay_signature": signature}, "/")
    assert ok.status_code == 303 and ok.headers["location"] == f"/billing/invoices/{inv['id']}?done=paid"
    paid = await invoice(pclient, payer, inv["id"])
    assert paid["status"] == "PAID"
    again = await post(
        pclient, f"/billing/invoices/{inv['id']}/razorpay", {**proof, "razorpay_signature": signature}, "/"
    )
    assert again.status_code == 303  # the same proof twice: still one payment
    payments = (await pclient.get("/api/billing/payments", headers=payer.headers)).json()["items"]
    assert [(p["provider"], p["status"]) for p in payments if p["invoiceId"] == inv["id"]] == [
        ("razorpay", "CONFIRMED")
    ]
    assert len(await audits(papp, "payment.received")) >= 1


# --- in the browser -------------------------------------------------------------------------------------------

STAND_IN = """
window.Razorpay = function (options) {
  this.open = async function () {
    const payment = "pay_browser" + Date.now();
    const signature = await window.signProof(options.order_id, payment);
    window.razorpayOptions = {key: options.key, order_id: options.order_id, amount: options.amount};
    options.handler({razorpay_order_id: options.order_id, razorpay_payment_id: payment, razorpay_signature: signature});
  };
};
"""


@pytest.fixture(scope="module")
def rzp_url(pg_url: str, tmp_path_factory: pytest.TempPathFactory, provider_stub: ProviderStub) -> Iterator[str]:
    extra = {k.upper(): str(v) for k, v in payment_settings(provider_stub.url).items()}
    env = server_env(pg_url, tmp_path_factory.mktemp("rzp-data"), ENVIRONMENT="test", S3_API_PORT="0", **extra)
    with running_server(env) as base:
        yield base


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM, "scripts/ensure-browser installs chromium"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


@pytest.mark.parametrize("width", [375, 1280])
async def test_paying_with_razorpay_in_the_browser(browser: Browser, rzp_url: str, papp: FastAPI, width: int) -> None:
    async with httpx.AsyncClient(base_url=rzp_url) as api:
        user = await make_user(api, "rzp")
        admin = await make_admin(papp, api)
        inv = await subscribe_invoice(api, user, admin)
        context = await browser.new_context(base_url=rzp_url, viewport={"width": width, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        served: list[str] = []

        async def widget(route: Route) -> None:
            served.append(route.request.url)
            await route.fulfill(status=200, content_type="application/javascript", body=STAND_IN)

        await page.route("https://checkout.razorpay.com/v1/checkout.js", widget)
        await page.expose_function("signProof", razorpay_payment_signature)
        try:
            await page.goto("/login")
            await page.get_by_label("Email").fill(user.email)
            await page.get_by_label("Password").fill(user.password)
            await page.get_by_role("button", name="Log in").click()
            await page.goto(f"/billing/invoices/{inv['id']}")
            await page.get_by_role("button", name="Pay with Razorpay").click()
            await expect(page.get_by_role("status")).to_have_text("The invoice is paid.")
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / f"razorpay-paid-{width}.png"), full_page=True)
            assert served == ["https://checkout.razorpay.com/v1/checkout.js"]
            assert (await invoice(api, user, inv["id"]))["status"] == "PAID"
            width_now = await page.evaluate("document.documentElement.scrollWidth")
            assert width_now <= width
        finally:
            await context.close()
    assert not errors, errors
