"""Browser journeys of issue 16, in Debian's chromium against a real `pockity serve`, at phone and desktop
widths: forgot password → the email (sent by the mail job to a real SMTP server) → new password → signed in;
turn on two-factor sign-in → sign in with a code from the authenticator."""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are redefined as parameters
from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from pockity.kit import totp
from pockity.mail.delivery import send_due
from pockity.mail.links import action_key
from pockity.mail.rendering import Identity
from pockity.mail.smtp import SmtpConfig
from tests.accounts.conftest import link_token, texts_to
from tests.console.test_journeys import _is_error, base_url, browser, log_in, shot  # noqa: F401 - fixtures
from tests.fixtures.app import TEST_JWT_SECRET
from tests.fixtures.users import PASSWORD, make_user
from tests.mail.conftest import SmtpServer, smtp_server  # noqa: F401 - the fixture

NEW = "journey passphrase 2026"
WIDTHS = [375, 1280]


@pytest.fixture(params=WIDTHS)
async def page(request: pytest.FixtureRequest, browser: Browser, base_url: str) -> AsyncIterator[Page]:
    context = await browser.new_context(base_url=base_url, viewport={"width": request.param, "height": 900})
    p = await context.new_page()
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    await context.close()
    assert not errors, f"browser errors (a CSP violation?): {errors}"


def width_of(page: Page) -> int:
    assert page.viewport_size is not None
    return page.viewport_size["width"]


async def send_mail(app: FastAPI, server: SmtpServer, base: str) -> None:
    """The mail job's run, as the server would do it (same database, the server's key and console address)."""
    identity = Identity(
        product_name="Pockity",
        console_url=base,
        email_from="Pockity <mail@pockity.test>",
        api_url=base,
        action_key=action_key(TEST_JWT_SECRET),
    )
    config = SmtpConfig(host=server.host, port=server.port, security="none", timeout=10)
    result = await send_due(app.state.db, config, identity)
    assert result.sent and not result.failed


async def no_sideways_scroll(page: Page) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= width_of(page)


async def test_forgot_password_email_new_password_signed_in(
    page: Page,
    base_url: str,
    app: FastAPI,
    smtp_server: SmtpServer,
) -> None:
    async with httpx.AsyncClient(base_url=base_url) as api:
        user = await make_user(api, "forgetful")
    width = width_of(page)
    await page.goto("/login")
    await page.get_by_role("link", name="Forgot your password?").click()
    await page.get_by_label("Email").fill(user.email)
    await page.get_by_role("button", name="Email me a link").click()
    await expect(page.get_by_role("status")).to_contain_text("a link to choose a new password is on its way")
    await shot(page, f"forgot-sent-{width}")
    await send_mail(app, smtp_server, base_url)
    [text] = texts_to(smtp_server, user.email, "Reset your password")
    link = re.search(r"http\S+/reset-password\?token=\S+", text)
    assert link and link.group(0).startswith(base_url)
    assert link_token(text, "/reset-password")
    await page.goto(link.group(0))
    await page.get_by_label("New password", exact=False).first.fill(NEW)
    await page.get_by_label("New password again").fill(NEW)
    await no_sideways_scroll(page)
    await shot(page, f"reset-form-{width}")
    await page.get_by_role("button", name="Set the new password").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")
    await shot(page, f"reset-signed-in-{width}")
    async with httpx.AsyncClient(base_url=base_url) as api:
        old = await api.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
        assert old.status_code == 401
        assert (await api.post("/api/auth/login", json={"email": user.email, "password": NEW})).status_code == 200


async def test_turn_on_two_factor_and_sign_in_with_a_code(page: Page, base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as api:
        user = await make_user(api, "twofactor")
    width = width_of(page)
    await log_in(page, user.email)
    await page.goto("/account")
    await page.get_by_role("button", name="Set up two-factor sign-in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-factor sign-in")
    await expect(page.locator("figure.qr svg")).to_have_count(1)
    await no_sideways_scroll(page)
    await shot(page, f"two-factor-setup-{width}")
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    step = totp.step_at(time.time())
    await page.get_by_label("Code from your app").fill(totp.hotp(secret, step))
    await page.get_by_role("button", name="Turn on").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Two-factor sign-in is on")
    await expect(page.locator("#recovery-codes li")).to_have_count(10)
    await no_sideways_scroll(page)
    await shot(page, f"two-factor-codes-{width}")
    await page.get_by_role("link", name="I have saved them").click()
    await expect(page.locator("#two-factor")).to_contain_text("On.")
    await expect(page.locator("#sessions")).to_contain_text("(this browser)")
    await no_sideways_scroll(page)
    await shot(page, f"account-security-{width}")
    menu = page.get_by_role("button", name="Menu")
    if await menu.is_visible():  # the phone layout folds the navigation
        await menu.click()
    await page.get_by_role("button", name=re.compile("Log out")).click()
    await page.get_by_label("Email").fill(user.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Enter your code")
    await page.get_by_label("Code").fill("000000")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not right")
    await page.get_by_label("Code").fill(totp.hotp(secret, step + 1))  # the next step: a used code is refused
    await shot(page, f"two-factor-code-{width}")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")
