"""Content types are media types by RFC 9110's grammar wherever they arrive, and downloads never break on one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from pockity.kit.media_types import is_media_type
from pockity.models import StorageObject
from tests.fixtures.storage import local_files, reservation_count, usage
from tests.fixtures.users import TestUser

VALID = [
    "text/plain",
    "text/plain; charset=utf-8",
    "text/plain;charset=utf-8",
    'multipart/mixed; boundary="a b; c"',
    'text/plain; title="say \\"hi\\""',
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",
    "image/png;",  # RFC 9110 allows an empty parameter
    "TEXT/Plain",
]
INVALID = [
    "text/html\r\nSet-Cookie: a=b",
    "text/html\nX: y",
    "text/plain\r",
    "text/plain\x01",
    "text/plain\x7f",
    "text/plain\x1f",
    "text/plain\x00",
    "text/plain; a=\x0b",
    'text/plain; a="b\nc"',
    'text/plain; a="unterminated',
    "tëxt/plain",
    "text/plain; name=zoë",
    "text",
    "text/",
    "/plain",
    "text/plain/extra",
    "text/plain; charset",
    "text/plain; =utf-8",
    "text /plain",
    " text/plain",
    "text/plain ",
    "x/" + "a" * 300,
]


def test_grammar(subtests: pytest.Subtests) -> None:
    for value in VALID:
        with subtests.test(value=value):
            assert is_media_type(value)
    for value in INVALID:
        with subtests.test(value=value):
            assert not is_media_type(value)


def multipart_with_type(ctype: str, data: bytes = b"hello") -> tuple[bytes, str]:
    boundary = "ctype-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\n'.encode()
        + b"Content-Type: "
        + ctype.encode("utf-8")
        + b"\r\n\r\n"
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def assert_nothing_stored(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)
    assert local_files(app, user.id) == {} and await reservation_count(app) == 0


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_content_type"


# Values a form part header can carry (a header line ends at CR/LF, so those cannot be in one).
HEADER_INVALID = [v for v in INVALID if "\r" not in v and "\n" not in v and v.strip(" \t") == v]


async def test_put_refuses_a_bad_content_type_header(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    for value in HEADER_INVALID:
        with subtests.test(value=value):
            headers = [*((k.encode(), v.encode()) for k, v in user.headers.items()), (b"Content-Type", value.encode())]
            assert_refused(await client.put("/api/storage/files/a.txt", content=b"hello", headers=headers))
    await assert_nothing_stored(client, app, user)


async def test_form_upload_refuses_a_bad_part_content_type(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    for value in HEADER_INVALID:
        with subtests.test(value=value):
            body, ctype = multipart_with_type(value)
            r = await client.post("/api/storage/upload", content=body, headers={**user.headers, "Content-Type": ctype})
            assert_refused(r)
    await assert_nothing_stored(client, app, user)


async def test_direct_upload_refuses_a_bad_content_type(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    # JSON strings are trimmed by the input schemas (so "text/plain\r" arrives as "text/plain"), NUL is refused
    # by them for every field (validation_error), and more than 255 characters is a schema error too.
    refused = [v for v in INVALID if not is_media_type(v.strip()) and "\x00" not in v and len(v) <= 255]
    assert len(refused) >= 15
    for value in refused:
        for multipart in (False, True):
            with subtests.test(value=value, multipart=multipart):
                body = {"key": "d.txt", "size": 10, "contentType": value, "multipart": multipart}
                assert_refused(await client.post("/api/storage/uploads", json=body, headers=user.headers))
    await assert_nothing_stored(client, app, user)


async def test_valid_content_types_round_trip(
    client: httpx.AsyncClient, user: TestUser, subtests: pytest.Subtests
) -> None:
    for i, value in enumerate(["application/vnd.api+json", 'multipart/mixed; boundary="a b; c"', "image/png;"]):
        with subtests.test(value=value):
            put = await client.put(
                f"/api/storage/files/p{i}", content=b"x", headers={**user.headers, "Content-Type": value}
            )
            assert put.status_code == 201 and put.json()["contentType"] == value, put.text
            body, ctype = multipart_with_type(value)
            form = await client.post(
                "/api/storage/upload",
                params={"key": f"f{i}"},
                content=body,
                headers={**user.headers, "Content-Type": ctype},
            )
            assert form.status_code == 201 and form.json()["contentType"] == value, form.text
            got = await client.get(f"/api/storage/files/f{i}/content", headers=user.headers)
            assert got.status_code == 200 and got.headers["content-type"] == value


async def test_a_bad_stored_type_cannot_break_a_download(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    """Rows written before validation (or adopted from a bucket) are served as binary, not echoed."""
    put = await client.put(
        "/api/storage/files/old.txt", content=b"old", headers={**user.headers, "Content-Type": "text/plain"}
    )
    assert put.status_code == 201, put.text
    async with app.state.db.sessions() as s, s.begin():
        result = await s.execute(
            update(StorageObject)
            .where(StorageObject.user_id == user.id, StorageObject.name == "old.txt")
            .values(content_type="text/html\r\nSet-Cookie: a=b")
        )
        assert result.rowcount == 1  # type: ignore[attr-defined]
    got = await client.get("/api/storage/files/old.txt/content", headers=user.headers)
    assert got.status_code == 200 and got.content == b"old"
    assert got.headers["content-type"] == "application/octet-stream"
    assert "set-cookie" not in got.headers
    # The local backend's signed URL reads the type from its own metadata file.
    meta = Path(app.state.settings.storage_dir) / "meta" / "users" / user.id / "old.txt"
    stored = json.loads(meta.read_bytes())
    assert stored["content_type"] == "text/plain"
    meta.write_text(json.dumps({**stored, "content_type": "text/plain\x01"}))
    link = await client.get("/api/storage/files/old.txt", headers=user.headers)
    assert link.status_code == 200, link.text
    signed = await client.get(link.json()["url"].removeprefix("http://localhost:8080"))
    assert signed.status_code == 200 and signed.content == b"old"
    assert signed.headers["content-type"] == "application/octet-stream"
