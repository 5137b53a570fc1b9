"""Walk the route table: every route is authenticated unless explicitly public; admin routes need an admin JWT.

These tests read the routes from the application itself, so a route added later without the right
dependency fails here without anyone having to remember to write a test for it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI

from pockity.console.errors import is_console
from tests.console.helpers import console_login, csrf
from tests.fixtures.app import TEST_JWT_SECRET, client_for, make_settings, running_app
from tests.fixtures.users import TestUser, make_key

# (method, path) pairs anyone may call. Keep this list short and deliberate.
PUBLIC = {
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("GET", "/api/open/health"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),  # part of the Swagger UI page
    ("GET", "/openapi.json"),
    ("GET", "/api/tiers"),  # the price list
    # Authorized by what the body carries instead of credentials: a login's second-step challenge, an emailed
    # link's token; and asking for a reset link, which answers the same for every address.
    ("POST", "/api/auth/login/2fa"),
    ("POST", "/api/auth/verify-email"),
    ("POST", "/api/auth/password-reset"),
    ("POST", "/api/auth/password-reset/confirm"),
}
# Routes whose URL carries its own authorization (an HMAC signature) instead of credentials.
SIGNED = {
    ("GET", "/api/storage/signed/{key}"),
    ("POST", "/api/storage/direct/{upload_id}"),
    ("PUT", "/api/storage/parts/{upload_id}/{part_number}"),
    ("GET", "/api/mail/unsubscribe"),  # an email's unsubscribe link: a signed token naming user and kind
    ("POST", "/api/mail/unsubscribe"),
}
# Provider webhooks: no user credentials, the provider's signature over the raw body instead. Unsigned and
# forged calls are refused in tests/payments/test_webhooks.py; here, unconfigured ones must refuse too.
WEBHOOKS = {
    ("POST", "/api/billing/webhooks/stripe"),
    ("POST", "/api/billing/webhooks/razorpay"),
    ("POST", "/api/billing/webhooks/coinbase"),
    ("POST", "/api/billing/webhooks/btcpay"),
}
# The console's pages that need no session (everything else redirects to /login; see the console section).
CONSOLE_PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/login/code"),  # the second step: the form carries the challenge
    ("GET", "/signup"),
    ("POST", "/signup"),
    ("POST", "/logout"),
    ("GET", "/forgot-password"),
    ("POST", "/forgot-password"),
    # Links from emails: the token in the form is the authorization.
    ("GET", "/reset-password"),
    ("POST", "/reset-password"),
    ("GET", "/verify-email"),
    ("POST", "/verify-email"),
    ("GET", "/confirm-email"),
    ("POST", "/confirm-email"),
}
# Open unless METRICS_TOKEN is set; tested separately below.
METRICS = ("GET", "/metrics")
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
BODY_METHODS = {"POST", "PUT", "PATCH"}
PARAM = re.compile(r"\{[^}]+\}")
CONVERTER = re.compile(r"\{(\w+):[^}]+\}")  # "{key:path}" in the route table is "{key}" in the schema


def _random_id() -> str:
    return "01" + secrets.token_hex(12)


def _fill(path: str) -> str:
    return PARAM.sub(lambda _: _random_id(), path)


def schema_operations(app: FastAPI) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in app.openapi()["paths"].items() for m in item if m.upper() in METHODS}


def served_operations(app: FastAPI) -> set[tuple[str, str]]:
    """Every route the app answers, including those left out of the schema (include_in_schema=False)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.16x keeps included routers nested
    except ImportError:  # older FastAPI flattens included routers into app.routes
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    return {
        (m, CONVERTER.sub(r"{\1}", r.path)) for r in routes for m in (getattr(r, "methods", None) or ()) if m in METHODS
    }


def all_operations(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(schema_operations(app) | served_operations(app))


def api_operations(app: FastAPI) -> list[tuple[str, str]]:
    return [op for op in all_operations(app) if not is_console(op[1])]


def console_operations(app: FastAPI) -> list[tuple[str, str]]:
    return [op for op in all_operations(app) if is_console(op[1])]


def protected_operations(app: FastAPI) -> list[tuple[str, str]]:
    return [op for op in api_operations(app) if op not in PUBLIC | SIGNED | WEBHOOKS and op != METRICS]


def admin_operations(app: FastAPI) -> list[tuple[str, str]]:
    # Every route with an `admin` path segment: /api/admin/..., /api/tiers/admin/..., /api/tier-requests/admin/...
    return [op for op in api_operations(app) if "admin" in op[1].split("/")]


def console_admin_operations(app: FastAPI) -> list[tuple[str, str]]:
    return [op for op in console_operations(app) if op[1].split("/")[1] == "admin"]


async def call(c: httpx.AsyncClient, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {} if method in BODY_METHODS else None
    return await c.request(method, _fill(path), json=body, headers=headers or {})


def assert_error(r: httpx.Response, status: int, codes: set[str], where: str) -> None:
    assert r.status_code == status, f"{where}: {r.status_code} {r.text}"
    err = r.json()["error"]
    assert set(err) == {"code", "message", "details"}, f"{where}: {r.text}"
    assert err["code"] in codes, f"{where}: {r.text}"


# --- the route table itself --------------------------------------------------------------------------------


async def test_route_walk_sees_the_real_api(app: FastAPI) -> None:
    served, in_schema = served_operations(app), schema_operations(app)
    # Guard against the walk silently finding nothing (e.g. a FastAPI upgrade changing app.routes).
    assert in_schema <= served
    for expected in [("GET", "/api/auth/me"), ("POST", "/api/apikeys"), ("GET", "/api/admin/users"), METRICS]:
        assert expected in served
    assert len(admin_operations(app)) >= 6
    assert ("GET", "/files") in served and len(console_admin_operations(app)) >= 3


async def test_public_allowlist_has_no_stale_entries(app: FastAPI) -> None:
    assert PUBLIC | SIGNED | WEBHOOKS | CONSOLE_PUBLIC <= served_operations(app)


# --- no credentials ----------------------------------------------------------------------------------------


async def test_every_non_public_route_needs_credentials(client: httpx.AsyncClient, app: FastAPI) -> None:
    failures = []
    for method, path in protected_operations(app):
        r = await call(client, method, path)
        ok = (
            r.status_code == 401
            and r.json().get("error", {}).get("code") == "not_authenticated"
            and r.headers.get("WWW-Authenticate") == "Bearer"
        )
        if not ok:
            failures.append(f"{method} {path} -> {r.status_code} {r.text[:120]}")
    assert not failures, "unprotected routes:\n" + "\n".join(failures)


async def test_every_non_public_route_refuses_a_garbage_token(client: httpx.AsyncClient, app: FastAPI) -> None:
    for method, path in protected_operations(app):
        r = await call(client, method, path, {"Authorization": "Bearer not-a-token"})
        assert_error(r, 401, {"invalid_token"}, f"{method} {path}")


@pytest.mark.parametrize(("method", "path"), sorted(WEBHOOKS))
async def test_webhooks_of_unconfigured_providers_refuse(client: httpx.AsyncClient, method: str, path: str) -> None:
    r = await client.request(
        method, path, content=b'{"id": "evt_1", "type": "x"}', headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "provider_not_configured"


@pytest.mark.parametrize(("method", "path"), sorted(SIGNED))
async def test_signed_routes_refuse_a_missing_or_forged_signature(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    url = _fill(path)
    if method == "POST":  # a presigned form upload: the signature travels in the form fields
        forged_form = {
            "key": "users/x/y",
            "Content-Type": "text/plain",
            "x-pockity-max-size": "10",
            "x-pockity-expires": str(int(time.time()) + 600),
            "x-pockity-signature": secrets.token_hex(32),
        }
        for data in ({}, forged_form):
            r = await client.post(url, data=data, files={"file": ("f", b"x")})
            assert_error(r, 403, {"invalid_signature"}, f"{method} {path}")
        return
    assert_error(await client.request(method, url), 403, {"invalid_signature"}, f"{method} {path}")
    forged = {"expires": str(int(time.time()) + 600), "signature": secrets.token_hex(32)}
    assert_error(await client.request(method, url, params=forged), 403, {"invalid_signature"}, f"{method} {path}")


@pytest.mark.parametrize(("method", "path"), sorted(op for op in PUBLIC if op[1].startswith("/api/auth/")))
async def test_public_auth_routes_answer_without_credentials(client: httpx.AsyncClient, method: str, path: str) -> None:
    r = await client.request(method, path, json={})
    assert r.status_code == 422  # reached validation: no authentication was asked for


@pytest.mark.parametrize("path", ["/api/open/health", "/docs", "/openapi.json", "/metrics"])
async def test_public_get_routes_answer_without_credentials(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200


# --- admin routes ------------------------------------------------------------------------------------------


async def test_admin_routes_refuse_a_normal_users_jwt(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    for method, path in admin_operations(app):
        r = await call(client, method, path, user.headers)
        assert_error(r, 403, {"admin_required"}, f"{method} {path}")


async def test_admin_routes_ignore_a_forged_role_claim(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    # Correctly signed, but claiming ADMIN for a USER account: the role comes from the database.
    now = int(time.time())
    real = pyjwt.decode(user.token, options={"verify_signature": False})
    claims = {"sub": user.id, "role": "ADMIN", "iat": now, "exp": now + 600, "iss": "pockity"}
    token = pyjwt.encode({**claims, "pwd": real["pwd"], "sid": real["sid"]}, TEST_JWT_SECRET)
    for method, path in admin_operations(app):
        r = await call(client, method, path, {"Authorization": f"Bearer {token}"})
        assert_error(r, 403, {"admin_required"}, f"{method} {path}")


async def test_admin_routes_refuse_an_admins_api_key(client: httpx.AsyncClient, app: FastAPI, admin: TestUser) -> None:
    key = await make_key(client, admin)
    me = await client.get("/api/auth/me", headers=key["headers"])
    assert me.status_code == 200 and me.json()["role"] == "ADMIN"  # the key itself works
    for method, path in admin_operations(app):
        r = await call(client, method, path, key["headers"])
        assert_error(r, 403, {"jwt_required", "admin_required"}, f"{method} {path}")


async def test_admin_jwt_passes_the_guard_on_every_admin_route(
    client: httpx.AsyncClient, app: FastAPI, admin: TestUser
) -> None:
    for method, path in admin_operations(app):
        r = await call(client, method, path, admin.headers)
        assert r.status_code not in (401, 403), f"{method} {path}: {r.status_code} {r.text}"
        assert r.status_code < 500, f"{method} {path}: {r.status_code} {r.text}"


async def test_api_key_routes_need_a_jwt_not_an_api_key(client: httpx.AsyncClient, user: TestUser) -> None:
    key = await make_key(client, user)
    r = await client.post("/api/apikeys", json={"name": "minted by a key"}, headers=key["headers"])
    assert_error(r, 403, {"jwt_required"}, "POST /api/apikeys")
    r = await client.delete(f"/api/apikeys/{key['id']}", headers=key["headers"])
    assert_error(r, 403, {"jwt_required"}, "DELETE /api/apikeys/{id}")


# --- console pages (a session cookie instead of credentials) ---------------------------------------------


async def test_every_console_page_needs_a_session(client: httpx.AsyncClient, app: FastAPI) -> None:
    token = await csrf(client)  # an anonymous visitor's token: the CSRF check passes, the session check must not
    failures = []
    for method, path in console_operations(app):
        if (method, path) in CONSOLE_PUBLIC:
            continue
        data = {"csrf_token": token} if method in BODY_METHODS else None
        r = await client.request(method, _fill(path), data=data)
        if r.status_code != 303 or not r.headers["location"].startswith("/login?next="):
            failures.append(f"{method} {path} -> {r.status_code} {r.text[:120]}")
    assert not failures, "console pages without a session:\n" + "\n".join(failures)


async def test_console_admin_pages_refuse_a_user(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    token = await csrf(client, "/")
    for method, path in console_admin_operations(app):
        data = {"csrf_token": token, "decision": "approve"} if method in BODY_METHODS else None
        r = await client.request(method, _fill(path), data=data)
        assert r.status_code == 403, f"{method} {path}: {r.status_code}"
        assert "This page is for administrators." in r.text and "text/html" in r.headers["content-type"]


async def test_console_admin_pages_let_an_admin_in(client: httpx.AsyncClient, app: FastAPI, admin: TestUser) -> None:
    await console_login(client, admin.email, admin.password)
    token = await csrf(client, "/")
    for method, path in console_admin_operations(app):
        data = {"csrf_token": token, "decision": "approve"} if method in BODY_METHODS else None
        r = await client.request(method, _fill(path), data=data)
        assert r.status_code not in (401, 403) and r.status_code < 500, f"{method} {path}: {r.status_code}"


# --- /metrics with METRICS_TOKEN ---------------------------------------------------------------------------

METRICS_TOKEN = "metrics-" + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
async def metrics_client(pg_url: str, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for application in running_app(make_settings(pg_url, data_dir, metrics_token=METRICS_TOKEN)):
        async with client_for(application) as c:
            yield c


async def test_metrics_with_token_refuses_without_it(
    metrics_client: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    attempts = {
        "none": {},
        "wrong-token": {"Authorization": "Bearer wrong"},
        "basic-scheme": {"Authorization": f"Basic {METRICS_TOKEN}"},
        "other-header": {"X-Metrics-Token": METRICS_TOKEN},
    }
    for name, headers in attempts.items():
        with subtests.test(attempt=name):
            r = await metrics_client.get("/metrics", headers=headers)
            assert_error(r, 401, {"not_authenticated"}, f"/metrics ({name})")
            assert "pockity_http_requests_total" not in r.text


async def test_metrics_with_token_accepts_the_bearer(metrics_client: httpx.AsyncClient) -> None:
    r = await metrics_client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200
    assert "pockity_http_requests_total" in r.text


async def test_metrics_without_token_setting_is_open(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200 and "pockity_http_requests_total" in r.text
