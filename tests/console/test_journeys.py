"""Browser journeys: Playwright driving Debian's chromium (scripts/ensure-browser) against a real `pockity serve`.

Each journey saves a screenshot under var/screenshots/. Every step waits on an event or a state the page reaches
(Playwright's expect / wait_for), never on time.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.fixtures.server import running_server, server_env
from tests.fixtures.users import PASSWORD, TestUser, unique_email

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/ensure-browser)")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def base_url(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = server_env(pg_url, tmp_path_factory.mktemp("console-data"), ENVIRONMENT="test", S3_API_PORT="0")
    with running_server(env) as base:
        yield base


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    p = await context.new_page()
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    await context.close()
    assert not errors, f"browser errors (a CSP violation?): {errors}"


def _is_error(message: ConsoleMessage) -> bool:
    # A 4xx/5xx the journey provokes on purpose is logged by the browser as "Failed to load resource".
    return message.type == "error" and "Failed to load resource" not in message.text


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.goto("/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")


async def drop_file(page: Page, name: str, size: int) -> None:
    """Drag-and-drop as the browser delivers it: a drop event whose DataTransfer holds a File."""
    transfer = await page.evaluate_handle(
        """([name, size]) => {
            const dt = new DataTransfer();
            const bytes = new Uint8Array(size);
            for (let i = 0; i < size; i += 4096) bytes[i] = i % 251;
            dt.items.add(new File([bytes], name, {type: "application/octet-stream"}));
            return dt;
        }""",
        [name, size],
    )
    await page.dispatch_event("#uploader", "dragenter", {"dataTransfer": transfer})
    await page.dispatch_event("#uploader", "drop", {"dataTransfer": transfer})


async def test_sign_up_key_upload_usage_delete(page: Page) -> None:
    email = unique_email("journey")
    await page.goto("/signup")
    await page.get_by_label("Name").fill("Journey <b>User</b>")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Journey <b>User</b>")

    # a key: the secret is shown once, with snippets, and never again
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Name", exact=True).fill("laptop")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_text("it is shown only once")).to_be_visible()
    secret = await page.locator("#secret-key").input_value()
    assert len(secret) == 40
    await expect(page.locator("#snippet-curl")).to_contain_text(secret)
    await page.get_by_role("link", name="Done").click()
    await expect(page.get_by_role("cell", name="laptop")).to_be_visible()
    assert secret not in await page.content()

    # upload 20 MiB by drag-and-drop: per-file progress, then the listing shows it
    await page.get_by_role("link", name="Files").click()
    await drop_file(page, "big.bin", 20 * MIB)
    done = page.locator('.upload[data-state="done"]')
    await expect(done).to_have_count(1, timeout=30_000)
    bar = done.locator("progress")
    maximum = float(await bar.get_attribute("max") or 0)
    assert maximum > 20 * MIB  # set from the XHR's progress events (the multipart body is a little larger)
    assert await bar.evaluate("b => b.value") == maximum
    await expect(page.locator("#listing")).to_contain_text("big.bin")
    await shot(page, "journey-upload")

    # usage changed
    await page.get_by_role("link", name="Dashboard").click()
    await expect(page.locator(".meter").first).to_contain_text("20.0 MiB of")

    # a share link with a chosen expiry downloads the same bytes, without a session
    await page.get_by_role("link", name="Files").click()
    entry = page.locator(".entry", has_text="big.bin")
    await entry.get_by_label("Link expiry").select_option(label="1 day")
    await entry.get_by_role("button", name="Share").click()
    await expect(page.locator("#share-result")).to_contain_text("for 1 day")
    link = urlsplit(await page.locator("#share-url").input_value())
    # The link names the server's PUBLIC_BASE_URL; this test server listens on a free port instead.
    async with httpx.AsyncClient(follow_redirects=True, timeout=60) as anonymous:
        shared = await anonymous.get(urljoin(page.url, f"{link.path}?{link.query}"))
    expected = bytearray(20 * MIB)
    for i in range(0, len(expected), 4096):
        expected[i] = i % 251
    assert shared.status_code == 200 and shared.content == bytes(expected)
    await shot(page, "journey-share")

    # delete with confirmation
    await page.locator(".entry", has_text="big.bin").get_by_role("link", name="Delete").click()
    await expect(page.get_by_role("heading", name="Delete this file?")).to_be_visible()
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("status")).to_have_text("Deleted big.bin.")
    await expect(page.locator("#listing")).to_contain_text("This folder is empty.")
    await page.get_by_role("link", name="Dashboard").click()
    await expect(page.locator(".meter").first).to_contain_text("0 B of")
    await shot(page, "journey-signup-key-upload-delete")


async def test_an_admin_approves_a_tier_request(page: Page, base_url: str, admin: TestUser, user: TestUser) -> None:
    async with httpx.AsyncClient(base_url=base_url) as api:
        r = await api.post(
            "/api/tier-requests", json={"tierId": "tier_starter", "reason": "More room please"}, headers=user.headers
        )
        assert r.status_code == 201, r.text
        request_id = r.json()["id"]
        await log_in(page, admin.email)
        await page.get_by_role("link", name="Admin").click()
        await expect(page.locator("#stat-requests")).to_contain_text("1")
        await page.get_by_role("link", name="Tier requests", exact=True).click()
        item = page.locator(".request", has_text="More room please")
        await expect(item).to_contain_text(user.email)
        await item.get_by_label("Note to the user").fill("Approved for the project")
        await shot(page, "journey-admin-queue")
        await item.get_by_role("button", name="Approve").click()
        await expect(page.get_by_text("No pending requests.")).to_be_visible()
        await page.get_by_role("link", name="Approved").click()
        await expect(page.locator(".request", has_text="More room please")).to_contain_text("Approved for the project")
        mine = (await api.get("/api/tier-requests", headers=user.headers)).json()["items"]
        assert [(m["id"], m["status"]) for m in mine] == [(request_id, "APPROVED")]
        await shot(page, "journey-admin-approved")


async def test_the_phone_layout(browser: Browser, base_url: str, user: TestUser) -> None:
    context = await browser.new_context(base_url=base_url, viewport={"width": 375, "height": 812}, is_mobile=True)
    page = await context.new_page()
    try:
        long_name = "a-very-long-file-name-" * 9 + ".txt"  # 200 characters
        async with httpx.AsyncClient(base_url=base_url) as api:
            r = await api.put(f"/api/storage/files/reports/{long_name}", content=b"x", headers=user.headers)
            assert r.status_code == 201, r.text
        await log_in(page, user.email)
        menu = page.get_by_role("button", name="Menu")
        await expect(menu).to_be_visible()
        await expect(page.get_by_role("link", name="Files")).to_be_hidden()
        await menu.click()  # Alpine's CSP build toggles the menu
        await expect(menu).to_have_attribute("aria-expanded", "true")
        await page.get_by_role("link", name="Files").click()
        await page.get_by_role("link", name="reports/").click()
        await expect(page.locator(".entry.file .name")).to_have_text(long_name)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width}px wide at 375px"
        await shot(page, "journey-phone-files")
        await page.goto("/")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 375
        await shot(page, "journey-phone-dashboard")
    finally:
        await context.close()


async def test_a_user_sees_names_as_text_meets_403_on_admin_pages_and_csrf_refusals(
    page: Page, base_url: str, user: TestUser
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    xss = ["<img src=x onerror=alert(1)>.txt", "<svg onload=alert(2)>.txt", "\"><iframe srcdoc='<b>x'>.txt"]
    async with httpx.AsyncClient(base_url=base_url) as api:
        for name in xss:
            r = await api.put("/api/storage/files/" + quote(name), content=b"x", headers=user.headers)
            assert r.status_code == 201, r.text
    await log_in(page, user.email)
    await page.get_by_role("link", name="Files").click()
    for name in xss:  # shown as the text it is, never run
        await expect(page.locator(".entry.file .name", has_text=name)).to_have_count(1)
    assert await page.locator("#listing img, #listing svg, #listing iframe, #listing b").count() == 0
    await shot(page, "journey-xss-pack")

    # an admin page, as a user: the friendly 403 page
    response = await page.goto("/admin/users")
    assert response is not None and response.status == 403
    await expect(page.get_by_text("This page is for administrators.")).to_be_visible()
    await shot(page, "journey-admin-as-user-403")

    # a state-changing request from this browser without the page's CSRF token is refused, and changes nothing
    await page.goto("/keys")
    status = await page.evaluate(
        """() => fetch("/keys", {method: "POST", credentials: "same-origin",
              headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "name=forged&scopes=read"})
              .then(r => r.status)"""
    )
    assert status == 403
    await page.reload()
    await expect(page.get_by_role("cell", name="forged")).to_have_count(0)
    assert dialogs == []


def test_screenshots_have_a_home() -> None:
    assert re.match(r".*/var/screenshots$", str(SHOTS))
