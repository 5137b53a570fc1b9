"""axe-core (4.x, shipped inside axe-playwright-python) run in chromium over the console's pages, signed out,
as a user and as an admin, at phone and desktop widths: no serious or critical violation (labels, contrast,
names of buttons and links, landmarks, ARIA)."""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are redefined as parameters
from __future__ import annotations

from typing import Any

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from fastapi import FastAPI
from playwright.async_api import Browser, Page

from tests.console.test_journeys import base_url, browser, log_in  # noqa: F401 - fixtures
from tests.fixtures.users import make_admin, make_user

PUBLIC = ["/login", "/signup", "/forgot-password", "/reset-password?token=x", "/verify-email?token=x"]
USER = ["/", "/files", "/keys", "/plans", "/billing", "/account"]
ADMIN = [
    "/admin",
    "/admin/users",
    "/admin/tier-requests",
    "/admin/tiers",
    "/admin/invoices",
    "/admin/payments",
    "/admin/crypto-rates",
    "/admin/subscriptions",
    "/admin/payment-events",
    "/admin/reconciliation",
    "/admin/audit",
    "/admin/outbox",
]
SEVERE = {"serious", "critical"}


def severe(results: Any) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in SEVERE
    ]


async def check(page: Page, paths: list[str]) -> dict[str, list[str]]:
    axe = Axe()
    found = {}
    for path in paths:
        r = await page.goto(path)
        assert r is not None and r.status < 500, path
        problems = severe(await axe.run(page))
        if problems:
            found[path] = problems
    return found


@pytest.mark.parametrize("width", [375, 1280])
async def test_console_pages_have_no_serious_accessibility_violations(
    browser: Browser, base_url: str, app: FastAPI, width: int
) -> None:
    async with httpx.AsyncClient(base_url=base_url) as api:
        user = await make_user(api, "a11y")
        admin = await make_admin(app, api)
    found: dict[str, list[str]] = {}
    for who, paths in ((None, PUBLIC), (user, USER), (admin, ADMIN)):
        context = await browser.new_context(base_url=base_url, viewport={"width": width, "height": 900})
        try:
            page = await context.new_page()
            if who is not None:
                await log_in(page, who.email)
            found.update(await check(page, paths))
        finally:
            await context.close()
    assert found == {}
