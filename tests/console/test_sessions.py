"""Sign-up, login, logout, sessions and CSRF through the console's pages."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from pockity.console.sessions import SESSION_COOKIE, safe_next
from tests.console.helpers import console_login, csrf, csrf_of, post
from tests.fixtures.users import PASSWORD, TestUser, unique_email


async def test_sign_up_logs_in_and_shows_the_dashboard(client: httpx.AsyncClient) -> None:
    email = unique_email("signup")
    token = await csrf(client, "/signup")
    r = await client.post("/signup", data={"email": email, "name": "Ada", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # not production
    page = await client.get("/")
    assert page.status_code == 200 and "Hello, Ada" in page.text
    # the account is the API's too: the same password logs in there
    api = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert api.status_code == 200


async def test_sign_up_shows_the_services_refusal(client: httpx.AsyncClient, user: TestUser) -> None:
    token = await csrf(client, "/signup")
    r = await client.post("/signup", data={"email": user.email, "name": "x", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 409 and "already" in r.text.lower()
    r = await client.post(
        "/signup", data={"email": unique_email(), "name": "x", "password": "short", "csrf_token": token}
    )
    assert r.status_code == 422 and "Password" in r.text
    assert SESSION_COOKIE not in client.cookies


async def test_login_wrong_password_and_logout(client: httpx.AsyncClient, user: TestUser) -> None:
    token = await csrf(client)
    r = await client.post("/login", data={"email": user.email, "password": "wrong-password", "csrf_token": token})
    assert r.status_code == 401 and "Invalid email or password." in r.text
    await console_login(client, user.email, user.password)
    assert (await client.get("/")).status_code == 200
    r = await post(client, "/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = await client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/"


async def test_a_disabled_account_is_refused_and_its_session_ends(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    await console_login(client, user.email, user.password)
    r = await client.patch(f"/api/admin/users/{user.id}", json={"isActive": False}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert (await client.get("/files")).status_code == 303  # the session's JWT is checked on every request
    client.cookies.clear()
    token = await csrf(client)
    r = await client.post("/login", data={"email": user.email, "password": user.password, "csrf_token": token})
    assert r.status_code == 401


async def test_login_is_throttled_like_the_api(app: FastAPI, client: httpx.AsyncClient, user: TestUser) -> None:
    token = await csrf(client)
    limit = app.state.login_policy.max_failures_per_email
    for _ in range(limit):
        await client.post("/login", data={"email": user.email, "password": "nope-nope", "csrf_token": token})
    r = await client.post("/login", data={"email": user.email, "password": user.password, "csrf_token": token})
    assert r.status_code == 429 and "Too many failed logins" in r.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/files?prefix=a/", "/files?prefix=a/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
    ],
)
def test_next_only_goes_to_local_paths(value: str, expected: str) -> None:
    assert safe_next(value) == expected


async def test_login_refuses_an_open_redirect(client: httpx.AsyncClient, user: TestUser) -> None:
    page = await client.get("/login", params={"next": "https://evil.example/steal"})
    assert "evil.example" not in page.text
    r = await client.post(
        "/login",
        data={"email": user.email, "password": user.password, "next": "//evil.example", "csrf_token": csrf_of(page)},
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    client.cookies.clear()
    page = await client.get("/login", params={"next": "/keys"})
    r = await client.post(
        "/login", data={"email": user.email, "password": user.password, "next": "/keys", "csrf_token": csrf_of(page)}
    )
    assert r.headers["location"] == "/keys"


async def test_state_changing_requests_without_the_token_are_refused(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser
) -> None:
    r = await client.post("/login", data={"email": user.email, "password": user.password})
    assert r.status_code == 403 and "text/html" in r.headers["content-type"]
    assert SESSION_COOKIE not in client.cookies
    await console_login(client, user.email, user.password)
    for path, data in [
        ("/logout", {}),
        ("/keys", {"name": "k", "scopes": "read"}),
        ("/files/delete", {"name": "a.txt"}),
    ]:
        r = await client.post(path, data=data)
        assert r.status_code == 403, path
        assert "did not come from this site" in r.text
        r = await client.post(path, data={**data, "csrf_token": "0" * 64})
        assert r.status_code == 403, path
    r = await client.post("/files/upload?name=x.txt", files={"file": ("x.txt", b"x")})
    assert r.status_code == 403
    # another session's token is not this session's
    client.cookies.clear()
    await console_login(client, other_user.email, other_user.password)
    other = await csrf(client, "/")
    client.cookies.clear()
    await console_login(client, user.email, user.password)
    assert await csrf(client, "/") != other
    r = await client.post("/keys", data={"name": "k", "scopes": "read", "csrf_token": other})
    assert r.status_code == 403
    keys = await client.get("/api/apikeys", headers=user.headers)
    assert keys.json()["items"] == []


async def test_console_pages_carry_the_security_headers(client: httpx.AsyncClient) -> None:
    r = await client.get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert "<script>" not in r.text and " style=" not in r.text  # nothing inline for the CSP to allow
