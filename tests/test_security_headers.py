"""Security headers on every response, HSTS only over HTTPS, and active file types never served as pages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from pockity.errors import install_error_handlers
from pockity.security_headers import SecurityHeadersMiddleware
from tests.fixtures.users import TestUser

BASE = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


@pytest.fixture
async def https(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://pockity.test") as c:
        yield c


def assert_base(r: httpx.Response, *, hsts: bool) -> None:
    for name, value in BASE.items():
        assert r.headers.get_list(name) == [value], (r.request.url, r.headers)
    assert r.headers.get_list("strict-transport-security") == (["max-age=31536000"] if hsts else [])


def sample_requests(user: TestUser) -> list[tuple[str, str, dict[str, object]]]:
    return [
        ("GET", "/api/open/health", {}),
        ("GET", "/api/auth/me", {}),  # 401
        ("GET", "/api/auth/me", {"headers": user.headers}),
        ("GET", "/no/such/route", {}),  # 404
        ("DELETE", "/api/open/health", {}),  # 405
        ("POST", "/api/auth/login", {"json": {"email": 1}}),  # 422
        ("POST", "/api/auth/login", {"content": b"{", "headers": {"Content-Type": "application/json"}}),  # 400
        ("GET", "/api/apikeys/%01", {"headers": user.headers}),  # the guard's own 400
        ("GET", "/api/storage/files/a%ff", {"headers": user.headers}),  # the guard's own 422
        ("GET", "/metrics", {}),
        ("GET", "/docs", {}),
        ("GET", "/openapi.json", {}),
    ]


async def test_every_response_has_the_headers_and_no_hsts_over_http(
    client: httpx.AsyncClient, user: TestUser, subtests: pytest.Subtests
) -> None:
    for method, path, kwargs in sample_requests(user):
        with subtests.test(method=method, path=path):
            assert_base(await client.request(method, path, **kwargs), hsts=False)  # type: ignore[arg-type]


async def test_hsts_over_https(https: httpx.AsyncClient, user: TestUser, subtests: pytest.Subtests) -> None:
    for method, path, kwargs in sample_requests(user):
        with subtests.test(method=method, path=path):
            assert_base(await https.request(method, path, **kwargs), hsts=True)  # type: ignore[arg-type]


async def test_an_unhandled_500_has_the_headers_too(subtests: pytest.Subtests) -> None:
    """The 500 is sent by Starlette's outermost middleware, outside ours; the handler adds them itself."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(SecurityHeadersMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    for scheme, hsts in (("http", False), ("https", True)):
        with subtests.test(scheme=scheme):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://t") as c:
                r = await c.get("/boom")
            assert r.status_code == 500
            assert_base(r, hsts=hsts)


ACTIVE = [
    "text/html",
    "text/html; charset=utf-8",
    "TEXT/HTML",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "application/rss+xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/xsl",
    "multipart/related",
    "message/rfc822",
    "application/x-unknown-thing",
]
PASSIVE = ["image/png", "image/jpeg", "video/mp4", "audio/mpeg", "text/plain", "application/json", "application/pdf"]


async def download(
    client: httpx.AsyncClient, user: TestUser, name: str, ctype: str
) -> tuple[httpx.Response, httpx.Response]:
    put = await client.put(
        f"/api/storage/files/{name}", content=b"<svg onload=alert(1)>", headers={**user.headers, "Content-Type": ctype}
    )
    assert put.status_code == 201, put.text
    content = await client.get(f"/api/storage/files/{name}/content", headers=user.headers)
    link = await client.get(f"/api/storage/files/{name}", headers=user.headers)
    assert content.status_code == 200 and link.status_code == 200, (content.text, link.text)
    signed = await client.get(link.json()["url"].removeprefix("http://localhost:8080"))
    assert signed.status_code == 200, signed.text
    return content, signed


async def test_active_types_are_attachments_in_a_sandbox(
    client: httpx.AsyncClient, user: TestUser, subtests: pytest.Subtests
) -> None:
    for i, ctype in enumerate(ACTIVE):
        with subtests.test(ctype=ctype):
            for r in await download(client, user, f"active/page{i}.html", ctype):
                assert r.headers["content-disposition"].startswith("attachment;"), r.headers
                assert f'filename="page{i}.html"' in r.headers["content-disposition"]
                assert r.headers["content-security-policy"] == "sandbox"
                assert r.headers["x-content-type-options"] == "nosniff"
    ranged = await client.get(
        "/api/storage/files/active/page0.html/content", headers={**user.headers, "Range": "bytes=0-3"}
    )
    assert ranged.status_code == 206 and ranged.headers["content-security-policy"] == "sandbox"


async def test_passive_types_stay_inline(client: httpx.AsyncClient, user: TestUser, subtests: pytest.Subtests) -> None:
    for i, ctype in enumerate(PASSIVE):
        with subtests.test(ctype=ctype):
            content, signed = await download(client, user, f"passive/f{i}", ctype)
            assert "content-disposition" not in content.headers and "content-security-policy" not in content.headers
            # The signed link was made for a download (filename=...), as before; it is not sandboxed.
            assert "content-security-policy" not in signed.headers
