"""Browser journey: a user pays an invoice in crypto (the transaction hash), an admin confirms it with the amount
received on the payments page, and the user's invoice shows paid — at phone and desktop widths."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from tests.console.test_journeys import _is_error
from tests.console.test_razorpay_page import browser, rzp_url  # noqa: F401 - fixtures: chromium, a paid-setup server
from tests.fixtures.payments import USDC_ADDRESS, invoice, subscribe_invoice
from tests.fixtures.users import TestUser, make_admin, make_user

SHOTS = Path("var/screenshots")


async def _log_in(page: Page, user: TestUser) -> None:
    await page.goto("/login")
    await page.get_by_label("Email").fill(user.email)
    await page.get_by_label("Password").fill(user.password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")


@pytest.mark.parametrize("width", [375, 1280])
async def test_an_admin_confirms_a_crypto_payment_and_the_invoice_is_paid(
    browser: Browser,  # noqa: F811
    rzp_url: str,  # noqa: F811
    papp: FastAPI,
    width: int,
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=rzp_url) as api:
        user = await make_user(api, "crypto-journey")
        admin = await make_admin(papp, api)
        inv = await subscribe_invoice(api, user, admin)
        contexts = [await browser.new_context(base_url=rzp_url, viewport={"width": width, "height": 900}) for _ in "ab"]
        try:
            payer, checker = [await c.new_page() for c in contexts]
            for p in (payer, checker):
                p.on("pageerror", lambda e: errors.append(str(e)))
                p.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
            await _log_in(payer, user)
            await payer.goto(f"/billing/invoices/{inv['id']}")
            await expect(payer.locator("#address-USDC")).to_have_value(USDC_ADDRESS)
            await expect(payer.locator("figure.qr svg")).to_have_count(1)  # USDC only: no rates set on this server
            tx = "0x" + uuid.uuid4().hex * 2
            await payer.get_by_label("Asset").select_option("USDC")
            await payer.get_by_label("Transaction hash").fill(tx)
            await payer.get_by_role("button", name="Submit transaction").click()
            await expect(payer.get_by_role("status")).to_contain_text("waits for an administrator")
            await payer.screenshot(path=str(SHOTS / f"crypto-submitted-{width}.png"), full_page=True)

            await _log_in(checker, admin)
            await checker.goto("/admin/payments")
            item = checker.locator("li.payment", has_text=tx)
            await expect(item).to_be_visible()
            await expect(item.get_by_label("Amount received (USDC)")).to_have_value("5.00")
            await checker.screenshot(path=str(SHOTS / f"admin-payments-{width}.png"), full_page=True)
            await item.get_by_role("button", name="Confirm").click()
            await expect(checker.get_by_role("status")).to_contain_text("The payment is confirmed")
            assert await checker.evaluate("document.documentElement.scrollWidth") <= width

            await payer.reload()
            await expect(payer.get_by_text("Paid", exact=False).first).to_be_visible()
            await payer.screenshot(path=str(SHOTS / f"crypto-paid-{width}.png"), full_page=True)
            assert (await invoice(api, user, inv["id"]))["status"] == "PAID"
        finally:
            for c in contexts:
                await c.close()
    assert not errors, errors
