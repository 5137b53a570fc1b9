"""Browser journey on a phone (375 px): request a paid plan, an admin approves (API), credits are granted (API), the
user pays with credits in the browser, and the quota changes. Screenshots under var/screenshots/."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.console.test_journeys import CHROMIUM, _is_error, base_url, browser, log_in, shot  # noqa: F401
from tests.fixtures.users import TestUser

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/ensure-browser)")
GIB = 1024**3


async def fits(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{page.url} is {width}px wide at 375px"


async def test_pay_a_plan_with_credits_on_a_phone(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    user: TestUser,
    admin: TestUser,
) -> None:
    context = await browser.new_context(base_url=base_url, viewport={"width": 375, "height": 812}, is_mobile=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        async with httpx.AsyncClient(base_url=base_url) as api:
            await log_in(page, user.email)
            await page.get_by_role("button", name="Menu").click()
            await page.get_by_role("link", name="Plans & billing").click()
            await expect(page.get_by_role("heading", level=1)).to_have_text("Plans")
            await page.get_by_role("combobox").select_option("tier_starter")  # the one select: "Plan"
            await page.get_by_label("Reason").fill("Room for the photo archive")
            await page.get_by_role("button", name="Send request").click()
            await expect(page.get_by_role("status")).to_contain_text("Your request was sent.")
            await fits(page)
            await shot(page, "journey-phone-plans")

            (asked,) = (await api.get("/api/tier-requests", headers=user.headers)).json()["items"]
            r = await api.patch(
                f"/api/tier-requests/admin/{asked['id']}/approve", json={"approved": True}, headers=admin.headers
            )
            assert r.status_code == 200, r.text
            r = await api.post(
                f"/api/admin/users/{user.id}/credits",
                json={"amountCents": 700, "reason": "welcome"},
                headers=admin.headers,
            )
            assert r.status_code == 201, r.text

            await page.get_by_role("link", name="Invoices and credits").click()
            await expect(page.locator(".tier")).to_have_text("7.00 USD")
            await fits(page)
            await shot(page, "journey-phone-billing")
            await page.get_by_role("link", name="Pay").click()
            await expect(page.get_by_text("Your balance: 7.00 USD.")).to_be_visible()
            await fits(page)
            await page.get_by_role("button", name="Pay 5.00 USD from credits").click()
            await expect(page.get_by_role("status")).to_have_text("The invoice is paid.")
            await shot(page, "journey-phone-invoice-paid")
            usage = (await api.get("/api/storage/usage", headers=user.headers)).json()
            assert (usage["tier"]["id"], usage["storageLimitBytes"]) == ("tier_starter", 50 * GIB)
            await page.goto("/")
            await expect(page.locator(".tier")).to_have_text("Starter")
    finally:
        await context.close()
    assert not errors, f"browser errors (a CSP violation?): {errors}"
