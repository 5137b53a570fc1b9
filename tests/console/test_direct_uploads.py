"""Large files from the console go straight to storage in parts (the direct-upload API): the size is reserved
first, so a quota refusal comes before any byte; parts are PUT to their presigned URLs; the server assembles
them. Browser journey against a real `pockity serve` (local backend, so the part URLs are this origin)."""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are redefined as parameters
from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect
from sqlalchemy import func, select

from pockity.models import Reservation
from pockity.storage.backends.s3 import S3Backend
from tests.console.helpers import console_login, csrf
from tests.console.test_journeys import _is_error, browser, drop_file, log_in, shot  # noqa: F401 - fixtures
from tests.fixtures.s3 import S3Server, empty_bucket
from tests.fixtures.server import running_server, server_env
from tests.fixtures.users import PASSWORD, TestUser, make_user

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def direct_url(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = server_env(
        pg_url,
        tmp_path_factory.mktemp("direct-data"),
        ENVIRONMENT="test",
        S3_API_PORT="0",
        CONSOLE_DIRECT_UPLOAD_MIN_BYTES=str(5 * MIB),
        CONSOLE_DIRECT_PART_BYTES=str(5 * MIB),
    )
    with running_server(env) as base:
        yield base


@pytest.fixture(params=[375, 1280])
async def page(request: pytest.FixtureRequest, browser: Browser, direct_url: str) -> AsyncIterator[Page]:
    context = await browser.new_context(base_url=direct_url, viewport={"width": request.param, "height": 900})
    p = await context.new_page()
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    await context.close()
    assert not errors, f"browser errors (a CSP violation?): {errors}"


async def test_a_large_file_goes_straight_to_storage_in_parts(page: Page, direct_url: str) -> None:
    async with httpx.AsyncClient(base_url=direct_url) as api:
        user = await make_user(api, "direct")
    await log_in(page, user.email)
    await page.goto("/files")
    await expect(page.locator("#uploader")).to_have_attribute("data-direct-min", str(5 * MIB))
    parts: list[str] = []
    page.on("request", lambda r: parts.append(r.method) if "/api/storage/parts/" in r.url else None)
    size = 11 * MIB + 123  # three parts: 5 MiB, 5 MiB and the rest
    await drop_file(page, "video.bin", size)
    done = page.locator('.upload[data-state="done"]')
    await expect(done).to_have_count(1, timeout=60_000)
    assert parts == ["PUT", "PUT", "PUT"]  # through the part URLs, not the streaming upload
    await expect(page.locator("#listing")).to_contain_text("video.bin")
    await shot(page, f"direct-upload-{page.viewport_size['width'] if page.viewport_size else 0}")
    async with httpx.AsyncClient(base_url=direct_url) as api:
        meta = await api.get("/api/storage/files/video.bin", headers=user.headers)
        assert meta.status_code == 200 and meta.json()["size"] == size
        body = await api.get("/api/storage/files/video.bin/content", headers=user.headers)
        expected = bytearray(size)
        for i in range(0, size, 4096):
            expected[i] = i % 251
        assert hashlib.sha256(body.content).digest() == hashlib.sha256(bytes(expected)).digest()
        usage = await api.get("/api/storage/usage", headers=user.headers)
        assert usage.json()["bytesUsed"] == size and usage.json()["bytesReserved"] == 0


async def test_a_quota_refusal_comes_before_any_byte(app: FastAPI, client: httpx.AsyncClient, user: TestUser) -> None:
    # The app fixture's defaults: direct uploads on (local backend), from 64 MiB.
    await console_login(client, user.email, PASSWORD)
    token = await csrf(client, "/files")
    headers = {"X-CSRF-Token": token, "Accept": "text/plain"}
    r = await client.post("/files/direct", json={"name": "huge.iso", "size": 3 * 1024**3}, headers=headers)
    assert r.status_code == 413 and r.text.startswith("This upload needs more than the"), r.text  # the sentence
    async with app.state.db.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Reservation)) == 0
    ok = await client.post("/files/direct", json={"name": "fits.bin", "size": 6 * MIB}, headers=headers)
    assert ok.status_code == 200, ok.text
    plan = ok.json()
    assert [p["size"] for p in plan["parts"]] == [6 * MIB]  # parts of 16 MiB by default: one
    cancelled = await client.post(f"/files/direct/{plan['uploadId']}/cancel", headers=headers)
    assert cancelled.status_code == 200
    no_token = await client.post("/files/direct", json={"name": "x.bin", "size": 1}, headers={"Accept": "text/plain"})
    assert no_token.status_code == 403


async def test_with_s3_the_parts_go_to_the_bucket_across_origins(
    browser: Browser, s3_server: S3Server, pg_url: str, tmp_path: Path
) -> None:
    """RGW as the bucket, its CORS set as the README says: the browser PUTs the parts to RGW's origin (allowed
    by the files page's CSP), reads their ETags, and the server assembles the file."""
    bucket = f"pockity-cors-{uuid.uuid4().hex[:10]}"
    backend = S3Backend(bucket=bucket, create_bucket=True, **s3_server.backend_kwargs())
    await backend.start()
    env = server_env(
        pg_url,
        tmp_path,
        ENVIRONMENT="test",
        S3_API_PORT="0",
        STORAGE_BACKEND="s3",
        S3_BUCKET=bucket,
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        CONSOLE_DIRECT_UPLOADS="on",
        CONSOLE_DIRECT_UPLOAD_MIN_BYTES=str(5 * MIB),
        CONSOLE_DIRECT_PART_BYTES=str(5 * MIB),
    )
    try:
        with running_server(env) as base:
            await backend.client.put_bucket_cors(
                Bucket=bucket,
                CORSConfiguration={
                    "CORSRules": [
                        {
                            "AllowedOrigins": [base],
                            "AllowedMethods": ["PUT"],
                            "AllowedHeaders": ["*"],
                            "ExposeHeaders": ["ETag"],
                        }
                    ]
                },
            )
            async with httpx.AsyncClient(base_url=base) as api:
                user = await make_user(api, "cors")
            context = await browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            try:
                page = await context.new_page()
                page.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
                await log_in(page, user.email)
                await page.goto("/files")
                origin = s3_server.endpoint_url.rstrip("/")
                puts: list[str] = []
                page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
                size = 6 * MIB + 7
                await drop_file(page, "across.bin", size)
                await expect(page.locator('.upload[data-state="done"]')).to_have_count(1, timeout=60_000)
                assert len(puts) == 2 and all(u.startswith(origin + "/" + bucket + "/") for u in puts), puts
            finally:
                await context.close()
            assert not errors, errors
            async with httpx.AsyncClient(base_url=base) as api:
                meta = await api.get("/api/storage/files/across.bin", headers=user.headers)
                assert meta.status_code == 200 and meta.json()["size"] == size
    finally:
        await empty_bucket(backend)
        await backend.client.delete_bucket(Bucket=bucket)
        await backend.close()
