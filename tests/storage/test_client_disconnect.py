"""A client that hangs up mid-upload is logged and counted as 499 (client closed), not as an unhandled 500,
and what the upload reserved is released."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pockity.observability import REQUESTS
from pockity.storage.backends import ObjectNotFound
from pockity.storage.uploads import physical_key
from tests.fixtures.storage import MIB, local_files, reservation_count, usage
from tests.fixtures.users import TestUser, make_user

CHUNK = b"c" * 65536
ROUTE = "/api/storage/files/{key:path}"


def requests_with(method: str, route: str, status: str) -> float:
    return float(REQUESTS.labels(method, route, status)._value.get())


async def cut_upload(
    app: FastAPI, method: str, path: str, headers: dict[str, str], declared: int | None, chunks: list[bytes]
) -> list[Any]:
    """Drive the ASGI app like a server whose client sends `chunks` and then disconnects."""
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.disconnect"})
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if declared is not None:
        raw.append((b"content-length", str(declared).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"pockity.test"), *raw],
        "client": ("127.0.0.1", 50000),
        "server": ("pockity.test", 80),
        "state": {},
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("declared", [1_000_000, None], ids=["content-length", "chunked"])
async def test_a_cut_upload_is_499_and_releases_its_reservation(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, caplog: pytest.LogCaptureFixture, declared: int | None
) -> None:
    route = "/api/storage/files/{key:path}"
    before = (requests_with("PUT", route, "499"), requests_with("PUT", route, "500"))
    caplog.set_level(logging.INFO, logger="pockity.access")
    sent = await cut_upload(app, "PUT", "/api/storage/files/cut.bin", user.headers, declared, [CHUNK] * 3)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] in ([], [499])
    access = [r for r in caplog.records if r.name == "pockity.access" and getattr(r, "route", None) == route]
    assert [getattr(r, "status", None) for r in access] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert (requests_with("PUT", route, "499"), requests_with("PUT", route, "500")) == (before[0] + 1, before[1])
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)
    assert await reservation_count(app) == 0 and local_files(app, user.id) == {}


async def test_a_cut_form_upload_is_499(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pockity.access")
    headers = {**user.headers, "content-type": "multipart/form-data; boundary=b"}
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n\r\n'
    await cut_upload(app, "POST", "/api/storage/upload", headers, None, [head + CHUNK, CHUNK])
    access = [
        r for r in caplog.records if r.name == "pockity.access" and getattr(r, "route", None) == "/api/storage/upload"
    ]
    assert [getattr(r, "status", None) for r in access] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)
    assert await reservation_count(app) == 0 and local_files(app, user.id) == {}


async def test_a_cut_json_body_is_499(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pockity.access")
    headers = {"content-type": "application/json"}
    await cut_upload(app, "POST", "/api/auth/login", headers, 1000, [b'{"email": "a@example.com", '])
    access = [
        r for r in caplog.records if r.name == "pockity.access" and getattr(r, "route", None) == "/api/auth/login"
    ]
    assert [getattr(r, "status", None) for r in access] == [499]


async def test_a_cut_upload_to_s3_is_499(
    s3_app: FastAPI, s3_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The S3 backend lets the disconnect through as is (and aborts what it started)."""
    s3_user = await make_user(s3_client, "s3cut")
    caplog.set_level(logging.INFO, logger="pockity.access")
    # Past one part (5 MiB here), so a multipart upload is under way when the client goes.
    await cut_upload(s3_app, "PUT", "/api/storage/files/cut.bin", s3_user.headers, 10_000_000, [b"p" * MIB] * 6)
    access = [r for r in caplog.records if r.name == "pockity.access" and getattr(r, "route", None) == ROUTE]
    assert [getattr(r, "status", None) for r in access] == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    u = await usage(s3_client, s3_user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)
    assert await reservation_count(s3_app) == 0
    with pytest.raises(ObjectNotFound):
        await s3_app.state.storage.head(physical_key(s3_user.id, "cut.bin"))


async def test_a_cut_replacement_frees_the_name_at_once(
    s3_app: FastAPI, s3_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading the body failed, so S3 was never asked to store it: the old file stays as it was, and a retry
    right away is not refused as busy (the reservation is not left for the expiry job)."""
    s3_user = await make_user(s3_client, "s3recut")
    r = await s3_client.put("/api/storage/files/doc.bin", content=b"o" * 1000, headers=s3_user.headers)
    assert r.status_code == 201, r.text
    await cut_upload(s3_app, "PUT", "/api/storage/files/doc.bin", s3_user.headers, 10_000_000, [b"n" * MIB] * 6)
    assert await reservation_count(s3_app) == 0
    assert (await s3_app.state.storage.head(physical_key(s3_user.id, "doc.bin"))).size == 1000
    u = await usage(s3_client, s3_user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (1000, 1, 0)
    retry = await s3_client.put("/api/storage/files/doc.bin", content=b"n" * 2000, headers=s3_user.headers)
    assert retry.status_code in (200, 201), retry.text
