"""File previews in the console: images and PDFs from this origin under a sandbox, text shown escaped (the first
64 KiB), and active types (SVG, HTML) never shown inline whatever their name."""

from __future__ import annotations

import httpx
import pytest

from tests.console.helpers import console_login
from tests.fixtures.users import PASSWORD, TestUser

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


async def put(client: httpx.AsyncClient, user: TestUser, name: str, body: bytes, content_type: str) -> None:
    r = await client.put(
        f"/api/storage/files/{name}", content=body, headers={**user.headers, "Content-Type": content_type}
    )
    assert r.status_code == 201, r.text


async def test_an_image_is_previewed_from_this_origin_under_a_sandbox(
    client: httpx.AsyncClient, user: TestUser
) -> None:
    await put(client, user, "pics/dot.png", PNG, "image/png")
    await console_login(client, user.email, PASSWORD)
    listing = await client.get("/files?prefix=pics/")
    assert 'href="/files/preview?name=pics/dot.png"' in listing.text
    page = await client.get("/files/preview?name=pics/dot.png")
    assert page.status_code == 200 and '<img class="preview" src="/files/raw?name=pics%2Fdot.png"' in page.text
    raw = await client.get("/files/raw?name=pics/dot.png")
    assert raw.status_code == 200 and raw.content == PNG and raw.headers["content-type"] == "image/png"
    assert raw.headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    assert raw.headers["x-frame-options"] == "SAMEORIGIN" and raw.headers["x-content-type-options"] == "nosniff"


async def test_a_pdf_is_framed_by_the_preview_page_only(client: httpx.AsyncClient, user: TestUser) -> None:
    pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    await put(client, user, "q3.pdf", pdf, "application/pdf")
    await console_login(client, user.email, PASSWORD)
    page = await client.get("/files/preview?name=q3.pdf")
    assert '<iframe class="preview pdf" src="/files/raw?name=q3.pdf"' in page.text
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    raw = await client.get("/files/raw?name=q3.pdf")
    assert (
        raw.status_code == 200
        and raw.content == pdf
        and "frame-ancestors 'self'" in raw.headers["content-security-policy"]
    )


async def test_text_is_shown_escaped_and_cut_at_64_kib(client: httpx.AsyncClient, user: TestUser) -> None:
    await put(client, user, "notes.txt", b"<script>alert(1)</script>\nline two\n", "text/plain")
    await put(client, user, "big.txt", b"a" * (64 * 1024) + b"TAIL", "text/plain")
    await console_login(client, user.email, PASSWORD)
    page = await client.get("/files/preview?name=notes.txt")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\nline two" in page.text and "<script>alert" not in page.text
    big = await client.get("/files/preview?name=big.txt")
    assert "TAIL" not in big.text and "Only the first 64 KiB are shown" in big.text
    assert big.text.count("a" * 1000) >= 60
    refused = await client.get("/files/raw?name=notes.txt")  # text is shown in the page, never served raw here
    assert refused.status_code == 422


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("x.svg", "image/svg+xml"),
        ("page.html", "text/html"),
        ("fake.png", "text/html"),
        ("data.bin", "application/zip"),
    ],
)
async def test_active_or_unknown_types_get_no_inline_preview(
    client: httpx.AsyncClient, user: TestUser, name: str, content_type: str
) -> None:
    await put(client, user, name, b"<svg onload='alert(1)'></svg>", content_type)
    await console_login(client, user.email, PASSWORD)
    page = await client.get(f"/files/preview?name={name}")
    assert page.status_code == 200 and "There is no preview for this type" in page.text
    assert "onload" not in page.text
    assert (await client.get(f"/files/raw?name={name}")).status_code == 422


async def test_another_users_file_has_no_preview(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser
) -> None:
    await put(client, other_user, "secret.png", PNG, "image/png")
    await console_login(client, user.email, PASSWORD)
    assert (await client.get("/files/preview?name=secret.png")).status_code == 404
    assert (await client.get("/files/raw?name=secret.png")).status_code == 404
