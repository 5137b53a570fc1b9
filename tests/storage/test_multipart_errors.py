"""Every malformed multipart body, on every route that parses one, is a 400 in the error shape, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from pockity.kit import multipart
from tests.fixtures.storage import local_files, reservation_count, usage
from tests.fixtures.users import TestUser

B = "mp-boundary"
GOOD_HEAD = f'--{B}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n\r\n'.encode()
CTYPE = f"multipart/form-data; boundary={B}"

# (what it is, Content-Type header, body)
MALFORMED: list[tuple[str, str, bytes]] = [
    ("boundary over 256 characters", "multipart/form-data; boundary=" + "b" * 300, b"--" + b"b" * 300 + b"\r\n"),
    ("boundary of 257 characters", "multipart/form-data; boundary=" + "b" * 257, b"--" + b"b" * 257 + b"\r\n"),
    ("quoted boundary over 256", 'multipart/form-data; boundary="' + "q" * 300 + '"', b"--" + b"q" * 300 + b"\r\n"),
    ("boundary with a space", "multipart/form-data; boundary=a b", b"--a b\r\n"),
    ("boundary with a non-ASCII byte", "multipart/form-data; boundary=\xe9", b"--\xe9\r\n"),
    ("garbage before the first boundary", CTYPE, b"garbage without a boundary at all"),
    ("wrong boundary", CTYPE, b"--other\r\n" + GOOD_HEAD[len(B) + 4 :] + b"x\r\n--other--\r\n"),
    ("no CRLF after the boundary", CTYPE, f"--{B}XX".encode() + GOOD_HEAD[len(B) + 4 :] + b"x"),
    ("a header without a colon", CTYPE, f"--{B}\r\nno colon here\r\n\r\nx\r\n--{B}--\r\n".encode()),
    ("a part without a name", CTYPE, f"--{B}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{B}--\r\n".encode()),
    ("a header line over 8 KiB", CTYPE, f"--{B}\r\nX-Long: ".encode() + b"h" * 20_000 + b"\r\n\r\nx"),
    ("a header name over 8 KiB", CTYPE, f"--{B}\r\n".encode() + b"H" * 20_000 + b": v\r\n\r\nx"),
    ("the body ends inside the file", CTYPE, GOOD_HEAD + b"partial data"),
    ("the body ends inside the headers", CTYPE, f"--{B}\r\nContent-Disposition: form-da".encode()),
    ("no file part", CTYPE, f'--{B}\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n--{B}--\r\n'.encode()),
    (
        "a non-UTF-8 part name",
        CTYPE,
        f'--{B}\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nx\r\n--{B}--\r\n'.encode("latin-1"),
    ),
]
NOT_MULTIPART = [
    ("no Content-Type", "", b"x"),
    ("JSON", "application/json", b"{}"),
    ("multipart without a boundary", "multipart/form-data", b"x"),
    ("an empty boundary", 'multipart/form-data; boundary=""', b"x"),
]


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An unhandled error comes back as the 500 a real client would see."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://pockity.test") as c:
        yield c


def raw_headers(ctype: str, extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """Headers as bytes, so a Content-Type can carry any Latin-1 byte (httpx would refuse a non-ASCII str)."""
    return [*((k.encode(), v.encode()) for k, v in (extra or {}).items()), (b"content-type", ctype.encode("latin-1"))]


def assert_error(r: httpx.Response, statuses: set[int], codes: set[str]) -> None:
    assert r.status_code in statuses, r.text
    error = r.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] in codes, error


async def test_upload_form_refuses_malformed_bodies(
    api: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    for what, ctype, body in MALFORMED:
        with subtests.test(what=what):
            headers = raw_headers(ctype, user.headers)
            r = await api.post("/api/storage/upload", params={"key": "m.bin"}, content=body, headers=headers)
            assert_error(r, {400, 422}, {"invalid_multipart", "missing_file"})
    for what, ctype, body in NOT_MULTIPART:
        with subtests.test(what=what):
            headers = raw_headers(ctype, user.headers)
            r = await api.post("/api/storage/upload", params={"key": "m.bin"}, content=body, headers=headers)
            assert_error(r, {415}, {"unsupported_media_type"})
    u = await usage(api, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)
    assert local_files(app, user.id) == {} and await reservation_count(app) == 0


async def test_local_direct_post_refuses_malformed_bodies(
    api: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    start = await api.post("/api/storage/uploads", json={"key": "d.bin", "size": 100}, headers=user.headers)
    assert start.status_code == 201, start.text
    url = start.json()["url"].removeprefix("http://localhost:8080")
    for what, ctype, body in MALFORMED + NOT_MULTIPART:
        with subtests.test(what=what):
            r = await api.post(url, content=body, headers=raw_headers(ctype))
            # A file part that comes before the signed fields fails the signature check at once.
            assert_error(r, {400, 403, 422}, {"invalid_multipart", "missing_file", "invalid_signature"})
    assert local_files(app, user.id) == {}


async def test_endless_part_headers_stop_the_parser_early() -> None:
    """Headers are bounded: the parser gives up long before an endless header line has been read."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield f"--{B}\r\nX-Endless: ".encode()
        while sent < 100 * 1024 * 1024:
            sent += 4096
            yield b"h" * 4096

    with pytest.raises(multipart.MultipartError):  # python-multipart's own line limit, or ours on the total
        async for _ in multipart.events(body(), B.encode()):
            pass
    assert 0 < sent <= multipart.MAX_HEADER_BYTES + 4096
