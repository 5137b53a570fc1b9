"""Console account security pages, driven over httpx like a browser: sessions (list, sign out one or the
others, logout ends the session on the server), forgotten password by email, links from emails, two-factor
set-up and the second step of a login, and the pages that wait for a verified address."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from pockity.console.sessions import SESSION_COOKIE
from pockity.kit import jwt, totp
from tests.accounts.conftest import emailed_token, strict, strict_app  # noqa: F401 - fixtures
from tests.console.helpers import console_login, csrf, post
from tests.fixtures.app import TEST_JWT_SECRET, client_for
from tests.fixtures.users import PASSWORD, TestUser, make_admin, make_user
from tests.mail.conftest import SmtpServer, smtp_server  # noqa: F401 - the fixture

NEW = "a fresh passphrase 77"


@pytest.fixture
async def browser_b(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser (its own cookie jar)."""
    async with client_for(app) as c:
        yield c


async def account_page(client: httpx.AsyncClient) -> httpx.Response:
    r = await client.get("/account")
    assert r.status_code == 200, r.text[:300]
    return r


async def test_the_account_page_lists_sessions_and_signs_out_another(
    client: httpx.AsyncClient, browser_b: httpx.AsyncClient, user: TestUser
) -> None:
    await console_login(client, user.email, PASSWORD)
    await console_login(browser_b, user.email, PASSWORD)
    page = (await account_page(client)).text
    ids = re.findall(r'action="/account/sessions/([0-9a-z]{26})/sign-out"', page)
    assert len(ids) == 3  # the API login of the fixture, and two browsers
    assert page.count("(this browser)") == 1
    mine = browser_b.cookies[SESSION_COOKIE]
    other_id = jwt.decode_token(mine, TEST_JWT_SECRET).session_id
    r = await post(client, f"/account/sessions/{other_id}/sign-out", {}, "/account")
    assert r.status_code == 303 and r.headers["location"] == "/account?done=signed_out#sessions"
    gone = await browser_b.get("/account")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    assert (await account_page(client)).text.count('/sign-out"') == 2 + 1  # two rows and "every other session"


async def test_sign_out_every_other_session(
    client: httpx.AsyncClient, browser_b: httpx.AsyncClient, user: TestUser
) -> None:
    await console_login(client, user.email, PASSWORD)
    await console_login(browser_b, user.email, PASSWORD)
    r = await post(client, "/account/sessions/others/sign-out", {}, "/account")
    assert r.status_code == 303
    assert (await browser_b.get("/account")).status_code == 303
    assert (await client.get("/api/auth/me", headers=user.headers)).json()["error"]["code"] == "session_ended"
    assert "Every other session was signed out." in (await client.get("/account?done=signed_out_others")).text


async def test_logout_ends_the_session_on_the_server(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, PASSWORD)
    cookie = client.cookies[SESSION_COOKIE]
    r = await post(client, "/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    stolen = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {cookie}"})
    assert stolen.status_code == 401 and stolen.json()["error"]["code"] == "session_ended"


async def test_forgot_password_email_new_password_signed_in(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: TestUser,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    r = await client.post(
        "/forgot-password", data={"email": user.email, "csrf_token": await csrf(client, "/forgot-password")}
    )
    assert r.status_code == 200 and "a link to choose a new password is on its way" in r.text
    token = await emailed_token(app, smtp_server, user.email, "Reset your password", "/reset-password")
    form = await client.get(f"/reset-password?token={token}")
    assert form.status_code == 200 and f'value="{token}"' in form.text
    mismatch = await post(
        client,
        "/reset-password",
        {"token": token, "new_password": NEW, "confirm_password": NEW + "x"},
        "/forgot-password",
    )
    assert mismatch.status_code == 422 and "differ" in mismatch.text
    r = await post(
        client, "/reset-password", {"token": token, "new_password": NEW, "confirm_password": NEW}, "/forgot-password"
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "Hello" in (await client.get("/")).text  # signed in
    assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 401
    used = await post(client, "/reset-password", {"token": token, "new_password": NEW, "confirm_password": NEW}, "/")
    assert used.status_code == 403 and "not valid" in used.text


async def test_the_verification_link_opens_a_page_whose_button_verifies(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: TestUser,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    token = await emailed_token(app, smtp_server, user.email, "Verify your email", "/verify-email")
    page = await client.get(f"/verify-email?token={token}")
    assert page.status_code == 200 and "Verify my address" in page.text
    assert (await client.get("/api/auth/me", headers=user.headers)).json()["emailVerified"] is False  # GET used nothing
    r = await client.post("/verify-email", data={"token": token, "csrf_token": await csrf(client, "/login")})
    assert r.status_code == 200 and f"{user.email} is verified" in r.text
    assert (await client.get("/api/auth/me", headers=user.headers)).json()["emailVerified"] is True
    again = await client.post("/verify-email", data={"token": token, "csrf_token": await csrf(client, "/login")})
    assert again.status_code == 403 and "already used" in again.text


async def test_changing_the_email_from_the_account_page(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: TestUser,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await console_login(client, user.email, PASSWORD)
    wrong = await post(client, "/account/email", {"new_email": "n@example.com", "password": "nope nope"}, "/account")
    assert wrong.status_code == 403 and "current password is not correct" in wrong.text
    new = "moved-" + user.email
    r = await post(client, "/account/email", {"new_email": new, "password": PASSWORD}, "/account")
    assert r.status_code == 303 and r.headers["location"] == "/account?done=email_change"
    token = await emailed_token(app, smtp_server, new, "Confirm your new email", "/confirm-email")
    done = await client.post("/confirm-email", data={"token": token, "csrf_token": await csrf(client, "/account")})
    assert done.status_code == 200 and f"now {new}" in done.text
    assert new in (await account_page(client)).text


async def test_two_factor_set_up_and_sign_in_with_a_code(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, PASSWORD)
    setup = await post(client, "/account/2fa/setup", {}, "/account")
    assert setup.status_code == 200 and "<svg" in setup.text
    secret = re.search(r'<code class="secret" id="totp-secret">([A-Z2-7 ]+)</code>', setup.text)
    assert secret
    key = secret.group(1).replace(" ", "")
    bad = await post(client, "/account/2fa/enable", {"code": "000000"}, "/account")
    assert bad.status_code == 401 and "<svg" in bad.text and key[:4] in bad.text  # the same set-up, shown again
    step = totp.step_at(time.time())
    enabled = await post(client, "/account/2fa/enable", {"code": totp.hotp(key, step)}, "/account")
    assert enabled.status_code == 200
    codes = re.findall(r"<li><code>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code></li>", enabled.text)
    assert len(codes) == 10
    assert (await post(client, "/logout", {})).status_code == 303
    token = await csrf(client)
    first = await client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert first.status_code == 200 and "Enter your code" in first.text and SESSION_COOKIE not in client.cookies
    challenge = re.search(r'name="challenge" value="([^"]+)"', first.text)
    assert challenge
    wrong = await post(
        client, "/login/code", {"challenge": challenge.group(1), "code": "000000", "next": "/"}, "/login"
    )
    assert wrong.status_code == 401 and "not right" in wrong.text
    ok = await post(
        client, "/login/code", {"challenge": challenge.group(1), "code": codes[0], "next": "/files"}, "/login"
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/files" and SESSION_COOKIE in client.cookies
    assert (
        "1 recovery code" not in (await account_page(client)).text
        and "9 recovery codes left" in (await account_page(client)).text
    )


async def test_files_and_keys_pages_wait_for_a_verified_address_when_required(
    strict: httpx.AsyncClient,  # noqa: F811
) -> None:
    user = await make_user(strict, "unverified-console")
    await console_login(strict, user.email, PASSWORD)
    for path in ("/files", "/keys"):
        r = await strict.get(path)
        assert r.status_code == 403 and "Verify your email address first" in r.text, path
    account = await strict.get("/account")
    assert account.status_code == 200 and "not verified yet" in account.text and "Send the link again" in account.text


async def test_admin_pages_need_two_factor_when_required(
    strict_app: FastAPI,  # noqa: F811
    strict: httpx.AsyncClient,  # noqa: F811
) -> None:
    admin = await make_admin(strict_app, strict)
    await console_login(strict, admin.email, PASSWORD)
    r = await strict.get("/admin")
    assert r.status_code == 403 and "Administrators must use two-factor sign-in" in r.text
