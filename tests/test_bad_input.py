"""Hostile and malformed input: always a clear 4xx in the error shape, never a 500 or a leaked trace."""

from __future__ import annotations

import base64
import json
import time
import unicodedata
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI

from tests.fixtures.app import TEST_JWT_SECRET
from tests.fixtures.users import PASSWORD, TestUser, unique_email

LEAK_MARKERS = ("Traceback", 'File "', "sqlalchemy", "asyncpg", "SELECT ", "INSERT ", "[SQL", "psycopg")


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Like `client`, but an unhandled error comes back as the 500 a real client would see."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://pockity.test") as c:
        yield c


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is `status` in the error shape, with no trace or SQL in it."""
    assert r.status_code == status, r.text
    for marker in LEAK_MARKERS:
        assert marker not in r.text, f"{marker!r} leaked: {r.text[:300]}"
    body = r.json()
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


def assert_client_error(r: httpx.Response) -> None:
    """Some 4xx (the exact status is the server's choice), in the error shape."""
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code)


def error_fields(err: dict[str, Any]) -> list[Any]:
    return [d["field"] for d in err["details"]]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(sub: str, pwd: str = "", sid: str = "", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {"sub": sub, "role": "USER", "iat": now, "exp": now + 600, "iss": "pockity", "pwd": pwd}
    return {**values, **({"sid": sid} if sid else {}), **overrides}


def stamp_of(user: TestUser) -> tuple[str, str]:
    """The password stamp and session of the user's real login token, so a hand-made token differs only where
    meant."""
    real = pyjwt.decode(user.token, options={"verify_signature": False})
    return str(real["pwd"]), str(real["sid"])


def unsigned_token(payload: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(c: httpx.AsyncClient, email: str, **extra: Any) -> httpx.Response:
    return await c.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "n", **extra})


# --- malformed bodies -------------------------------------------------------------------------------------


async def test_malformed_json_is_400_invalid_json(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for raw in [b'{"email":', b"{'email': 'a@b.co'}", b"\xff\xfe", b"{,}", b"nul\x00"]:
        with subtests.test(raw=raw):
            r = await api.post("/api/auth/login", content=raw, headers={"Content-Type": "application/json"})
            assert_error(r, 400, "invalid_json")


async def test_deeply_nested_json_is_400_not_500(api: httpx.AsyncClient) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    r = await api.post("/api/auth/login", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400)


async def test_non_object_body_is_422(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for body in [[], [{"email": "a@b.co", "password": PASSWORD}], "a@b.co", 42, None]:
        with subtests.test(body=body):
            assert_error(await api.post("/api/auth/login", json=body), 422, "validation_error")


async def test_wrong_types_name_each_field(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/auth/register", json={"email": 1, "password": ["x"], "name": {"a": 1}})
    err = assert_error(r, 422, "validation_error")
    assert sorted(error_fields(err)) == ["email", "name", "password"]


async def test_missing_fields_are_named(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/auth/register", json={"email": unique_email()})
    err = assert_error(r, 422, "validation_error")
    assert sorted(error_fields(err)) == ["name", "password"]


async def test_unknown_extra_fields_are_refused_and_named(api: httpx.AsyncClient) -> None:
    r = await register(api, unique_email(), role="ADMIN", isAdmin=True)
    err = assert_error(r, 422, "validation_error")
    assert sorted(error_fields(err)) == ["isAdmin", "role"]


async def test_unknown_field_on_api_key_create_is_refused(api: httpx.AsyncClient, user: TestUser) -> None:
    r = await api.post("/api/apikeys", json={"name": "k", "userId": "someone-else"}, headers=user.headers)
    err = assert_error(r, 422, "validation_error")
    assert error_fields(err) == ["userId"]


async def test_bad_query_parameter_is_422_naming_it(api: httpx.AsyncClient, admin: TestUser) -> None:
    r = await api.get("/api/admin/users", params={"limit": "lots"}, headers=admin.headers)
    err = assert_error(r, 422, "validation_error")
    assert error_fields(err) == ["limit"] and err["details"][0]["location"] == "query"


# --- body size ----------------------------------------------------------------------------------------------


def padded_login_body(size: int) -> bytes:
    base = json.dumps({"email": unique_email(), "password": "wrong-password"}).encode()
    return base[:-1] + b" " * (size - len(base)) + b"}"


async def test_body_at_the_limit_is_accepted(api: httpx.AsyncClient, app: FastAPI) -> None:
    body = padded_login_body(app.state.settings.max_json_body_bytes)
    r = await api.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 401, "invalid_credentials")


async def test_oversized_body_with_content_length_is_413(api: httpx.AsyncClient, app: FastAPI) -> None:
    limit = app.state.settings.max_json_body_bytes
    body = padded_login_body(limit + 1)
    r = await api.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
    err = assert_error(r, 413, "payload_too_large")
    assert err["details"] == {"limit": limit}


async def test_oversized_chunked_body_without_content_length_is_413(api: httpx.AsyncClient, app: FastAPI) -> None:
    limit = app.state.settings.max_json_body_bytes

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "a@b.co", "password": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    request = api.build_request(
        "POST", "/api/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    r = await api.send(request)
    assert_error(r, 413, "payload_too_large")


# --- emails -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["a'; DROP TABLE users;--@x.com", '" or 1=1 --"@x.com', "x@x.com' OR '1'='1"])
async def test_sql_ish_invalid_emails_are_422_and_harmless(api: httpx.AsyncClient, email: str) -> None:
    err = assert_error(await register(api, email), 422, "validation_error")
    assert error_fields(err) == ["email"]
    r = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert_error(r, 401, "invalid_credentials")
    # The users table is still there and working.
    assert (await register(api, unique_email())).status_code == 201


async def test_sql_ish_but_valid_email_roundtrips_verbatim(api: httpx.AsyncClient) -> None:
    email = f"x'or'1'='1-{uuid.uuid4().hex[:6]}@example.com"
    r = await register(api, email)
    assert r.status_code == 201, r.text
    assert r.json()["email"] == email
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert login.json()["user"]["id"] == r.json()["id"]
    # A wildcard-looking address must not match the other account.
    other = await api.post("/api/auth/login", json={"email": "x'or'1'='1%@example.com", "password": PASSWORD})
    assert_error(other, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "local_domain",
    [
        ("josé", "bücher.de"),
        ("用户", "例子.广告"),
        ("ÅSA", "EXAMPLE.COM"),
        ("ascii", "xn--bcher-kva.de"),  # IDN domain sent in its punycode (ASCII) spelling
        ("jose\u0301", "example.com"),  # decomposed (NFD) accent
    ],
    ids=["latin-idn", "cjk-idn", "uppercase-unicode", "punycode-domain", "nfd-local-part"],
)
async def test_valid_unicode_email_register_login_roundtrip(
    api: httpx.AsyncClient, local_domain: tuple[str, str]
) -> None:
    local, domain = local_domain
    email = f"{local}{uuid.uuid4().hex[:6]}@{domain}"
    r = await register(api, email)
    assert r.status_code == 201, r.text
    stored = r.json()["email"]
    assert unicodedata.normalize("NFC", stored) == stored
    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, f"registered as {email!r} (stored {stored!r}) but cannot log in: {login.text}"
    assert login.json()["user"]["id"] == r.json()["id"]
    # And again with the spelling the server returned.
    again = await api.post("/api/auth/login", json={"email": stored, "password": PASSWORD})
    assert again.status_code == 200, again.text


async def test_invalid_unicode_email_is_422(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for email in ["用户@例子", "a@exa mple.com", "a@bücher..de", "@例子.广告", "josé@", "a@☃.com", "é@\u200bx.com"]:
        with subtests.test(email=email):
            err = assert_error(await register(api, email), 422, "validation_error")
            assert error_fields(err) == ["email"]


# --- long strings and NUL bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "a" * 10_000 + "@example.com"), ("name", "n" * 10_000), ("password", "p" * 100_000)],
)
async def test_extremely_long_register_fields_are_422(api: httpx.AsyncClient, field: str, value: str) -> None:
    body = {"email": unique_email(), "password": PASSWORD, "name": "n", field: value}
    err = assert_error(await api.post("/api/auth/register", json=body), 422, "validation_error")
    assert error_fields(err) == [field]


async def test_extremely_long_login_email_is_422(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/auth/login", json={"email": "a" * 50_000, "password": PASSWORD})
    err = assert_error(r, 422, "validation_error")
    assert error_fields(err) == ["email"]


async def test_nul_in_register_email_is_422(api: httpx.AsyncClient) -> None:
    err = assert_error(await register(api, "n\x00ul@example.com"), 422, "validation_error")
    assert error_fields(err) == ["email"]


async def test_nul_in_password_is_fine(api: httpx.AsyncClient) -> None:
    email, password = unique_email(), "pass\x00word-long"
    r = await api.post("/api/auth/register", json={"email": email, "password": password, "name": "n"})
    assert r.status_code == 201, r.text
    assert (await api.post("/api/auth/login", json={"email": email, "password": password})).status_code == 200
    wrong = await api.post("/api/auth/login", json={"email": email, "password": "pass"})
    assert_error(wrong, 401, "invalid_credentials")


async def test_nul_in_register_name_is_4xx(api: httpx.AsyncClient) -> None:
    assert_client_error(await register(api, unique_email(), name="x\x00y"))


async def test_nul_in_login_email_is_4xx(api: httpx.AsyncClient) -> None:
    r = await api.post("/api/auth/login", json={"email": "n\x00ul@example.com", "password": PASSWORD})
    assert_client_error(r)


async def test_nul_in_api_key_name_is_4xx(api: httpx.AsyncClient, user: TestUser) -> None:
    r = await api.post("/api/apikeys", json={"name": "key\x00"}, headers=user.headers)
    assert_client_error(r)


async def test_nul_in_path_parameter_is_4xx(api: httpx.AsyncClient, user: TestUser) -> None:
    assert_client_error(await api.get("/api/apikeys/%00", headers=user.headers))


@pytest.mark.parametrize("path", ["/api/admin/users/%00", "/api/admin/users?email=%00", "/api/admin/users?cursor=%00"])
async def test_nul_in_admin_parameters_is_4xx(api: httpx.AsyncClient, admin: TestUser, path: str) -> None:
    assert_client_error(await api.get(path, headers=admin.headers))


# --- tokens -------------------------------------------------------------------------------------------------


def assert_unauthorized(r: httpx.Response, code: str) -> None:
    assert_error(r, 401, code)
    assert r.headers.get("WWW-Authenticate") == "Bearer"


async def test_no_credentials_is_not_authenticated(api: httpx.AsyncClient) -> None:
    assert_unauthorized(await api.get("/api/auth/me"), "not_authenticated")


async def test_expired_token_is_token_expired(api: httpx.AsyncClient, user: TestUser) -> None:
    past = int(time.time()) - 3600
    token = pyjwt.encode(claims(user.id, *stamp_of(user), iat=past - 60, exp=past), TEST_JWT_SECRET, algorithm="HS256")
    assert_unauthorized(await api.get("/api/auth/me", headers=bearer(token)), "token_expired")


def _forged_tokens(sub: str, pwd: str, sid: str) -> dict[str, str]:
    good = claims(sub, pwd, sid)
    no_exp = {k: v for k, v in good.items() if k != "exp"}
    no_iss = {k: v for k, v in good.items() if k != "iss"}
    return {
        "other-secret": pyjwt.encode(good, "another-secret-" + "z" * 40, algorithm="HS256"),
        "alg-none": unsigned_token(good),
        "alg-none-with-signature": unsigned_token(good) + b64url(b"sig"),
        "hs512-same-secret": _hs512(good),
        "wrong-issuer": pyjwt.encode(claims(sub, pwd, sid, iss="evil"), TEST_JWT_SECRET, algorithm="HS256"),
        "no-exp": pyjwt.encode(no_exp, TEST_JWT_SECRET, algorithm="HS256"),
        "no-issuer": pyjwt.encode(no_iss, TEST_JWT_SECRET, algorithm="HS256"),
        "unknown-user": pyjwt.encode(claims("01" + "0" * 24), TEST_JWT_SECRET, algorithm="HS256"),
        "empty-sub": pyjwt.encode(claims("", pwd, sid), TEST_JWT_SECRET, algorithm="HS256"),
        "no-password-stamp": pyjwt.encode(claims(sub, sid=sid), TEST_JWT_SECRET, algorithm="HS256"),
        "another-password-stamp": pyjwt.encode(claims(sub, "0" * len(pwd), sid), TEST_JWT_SECRET, algorithm="HS256"),
        "no-session": pyjwt.encode(claims(sub, pwd), TEST_JWT_SECRET, algorithm="HS256"),
        "unknown-session": pyjwt.encode(claims(sub, pwd, "0" * 26), TEST_JWT_SECRET, algorithm="HS256"),
        "session-not-a-string": pyjwt.encode(claims(sub, pwd) | {"sid": 7}, TEST_JWT_SECRET, algorithm="HS256"),
        "tampered-payload": _tampered(pyjwt.encode(good, TEST_JWT_SECRET, algorithm="HS256")),
        "garbage": "not-a-jwt",
        "three-garbage-parts": "a.b.c",
        "huge-garbage": "x" * 10_000,
    }


def _hs512(payload: dict[str, Any]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns that the test secret is short for SHA-512
        return pyjwt.encode(payload, TEST_JWT_SECRET, algorithm="HS512")


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    payload = b64url(json.dumps(claims("01" + "1" * 24, role="ADMIN")).encode())
    return f"{header}.{payload}.{signature}"


async def test_forged_or_broken_token_is_invalid_token(
    api: httpx.AsyncClient, user: TestUser, subtests: pytest.Subtests
) -> None:
    for kind, token in _forged_tokens(user.id, *stamp_of(user)).items():
        with subtests.test(kind=kind):
            assert_unauthorized(await api.get("/api/auth/me", headers=bearer(token)), "invalid_token")


async def test_hs256_control_token_is_accepted(api: httpx.AsyncClient, user: TestUser) -> None:
    # The forged-token cases differ from this one only in what they break.
    token = pyjwt.encode(claims(user.id, *stamp_of(user)), TEST_JWT_SECRET, algorithm="HS256")
    r = await api.get("/api/auth/me", headers=bearer(token))
    assert r.status_code == 200 and r.json()["id"] == user.id


async def test_non_bearer_authorization_is_invalid_token(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for value in ["Basic YWxpY2U6c2VjcmV0", "Token abc", "Bearer", "Bearer ", "bearer-ish x"]:
        with subtests.test(authorization=value):
            r = await api.get("/api/auth/me", headers={"Authorization": value})
            assert_unauthorized(r, "invalid_token")


@pytest.mark.parametrize("header", ["X-Access-Key-Id", "X-Secret-Key"])
async def test_only_one_api_key_header_is_invalid_api_key(api: httpx.AsyncClient, user: TestUser, header: str) -> None:
    r = await api.get("/api/auth/me", headers={header: "PKAAAAAAAAAAAAAAAAAA"})
    assert_unauthorized(r, "invalid_api_key")
    # Not even with a valid JWT alongside: a half key pair is refused, not ignored.
    r = await api.get("/api/auth/me", headers={header: "PKAAAAAAAAAAAAAAAAAA", **user.headers})
    assert_unauthorized(r, "invalid_api_key")


# --- routing ------------------------------------------------------------------------------------------------


async def test_unknown_route_is_404_not_found(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for method, path in [
        ("GET", "/api/nope"),
        ("GET", "/api/auth/nope"),
        ("POST", "/api/x/y"),
        ("GET", "/api/open/health/x"),
    ]:
        with subtests.test(route=f"{method} {path}"):
            assert_error(await api.request(method, path), 404, "not_found")
    page = await api.get("/nope")  # outside /api: the console's own 404 page
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


async def test_wrong_method_is_405_method_not_allowed(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    cases = [
        ("GET", "/api/auth/login", "POST"),
        ("GET", "/api/auth/register", "POST"),
        ("DELETE", "/api/auth/me", "GET"),
        ("POST", "/api/open/health", "GET"),
    ]
    for method, path, allowed in cases:
        with subtests.test(route=f"{method} {path}"):
            r = await api.request(method, path)
            assert_error(r, 405, "method_not_allowed")
            assert allowed in r.headers["Allow"]
