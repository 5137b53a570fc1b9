"""Storage through the API against a real S3 server (Ceph RGW): streaming, multipart, URLs, faults."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from fastapi import FastAPI

from pockity.storage.backends import InvalidRange, NothingStored, ObjectNotFound, StorageUnavailable
from pockity.storage.backends.s3 import MIN_PART_SIZE, S3Backend, _committing, _note_attempt
from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.s3 import S3Server
from tests.fixtures.storage import MIB, reservation_count, set_quota, stored_rows, usage
from tests.fixtures.tcp_proxy import CuttableProxy
from tests.fixtures.users import TestUser, make_user


async def _chunks(total: int, seed: bytes = b"0123456789abcdef") -> AsyncIterator[bytes]:
    block = seed * (64 * 1024 // len(seed))
    sent = 0
    while sent < total:
        n = min(len(block), total - sent)
        sent += n
        yield block[:n]


def _expected(total: int, seed: bytes = b"0123456789abcdef") -> bytes:
    return (seed * (total // len(seed) + 1))[:total]


async def _bucket_state(app: FastAPI, user_id: str) -> tuple[dict[str, int], list[str]]:
    backend: S3Backend = app.state.storage
    objects = {i.key: i.size async for i in backend.iter_objects(f"users/{user_id}/")}
    pending = await backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=f"users/{user_id}/")
    return objects, [u["Key"] for u in pending.get("Uploads", [])]


async def test_upload_download_and_presigned_url(s3_client: httpx.AsyncClient, s3_app: FastAPI) -> None:
    user = await make_user(s3_client)
    r = await s3_client.put(
        "/api/storage/files/docs/hello.txt", content=b"hello s3", headers={**user.headers, "content-type": "text/plain"}
    )
    assert r.status_code == 201 and r.json()["etag"] == hashlib.md5(b"hello s3").hexdigest()
    meta = (await s3_client.get("/api/storage/files/docs/hello.txt?expiresIn=60", headers=user.headers)).json()
    async with httpx.AsyncClient() as direct:
        fetched = await direct.get(meta["url"])
        assert fetched.status_code == 200 and fetched.content == b"hello s3"
        tampered = meta["url"].replace("hello.txt", "hellp.txt")
        assert (await direct.get(tampered)).status_code == 403
    ranged = await s3_client.get(
        "/api/storage/files/docs/hello.txt/content", headers={**user.headers, "Range": "bytes=-2"}
    )
    assert ranged.status_code == 206 and ranged.content == b"s3"
    objects, _ = await _bucket_state(s3_app, user.id)
    assert objects == {f"users/{user.id}/docs/hello.txt": 8}


async def test_large_chunked_upload_goes_multipart_and_round_trips(
    s3_client: httpx.AsyncClient, s3_app: FastAPI
) -> None:
    user = await make_user(s3_client)
    total = 2 * MIN_PART_SIZE + 123_457
    r = await s3_client.put("/api/storage/files/big.bin", content=_chunks(total), headers=user.headers)
    assert r.status_code == 201, r.text
    assert r.json()["size"] == total and r.json()["etag"].endswith("-3")  # three parts
    body = await s3_client.get("/api/storage/files/big.bin/content", headers=user.headers)
    assert body.content == _expected(total)
    assert (await usage(s3_client, user))["bytesUsed"] == total


async def test_quota_stop_mid_stream_leaves_no_object_and_no_multipart(
    s3_client: httpx.AsyncClient, s3_app: FastAPI
) -> None:
    user = await make_user(s3_client)
    await set_quota(s3_app, user.id, storage_bytes=7 * MIB)
    r = await s3_client.put("/api/storage/files/too-big", content=_chunks(12 * MIB), headers=user.headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "storage_quota_exceeded"
    assert await _bucket_state(s3_app, user.id) == ({}, [])
    u = await usage(s3_client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (0, 0, 0)
    assert await reservation_count(s3_app) == 0


@pytest.fixture
async def proxied_app(
    pg_url: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, CuttableProxy]]:
    proxy = CuttableProxy(s3_server.endpoint_url)
    await proxy.start()
    settings = make_settings(
        pg_url,
        tmp_path,
        storage_backend="s3",
        s3_bucket=s3_bucket,
        s3_endpoint_url=proxy.url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        s3_part_size=MIN_PART_SIZE,
        jobs_enabled=False,
    )
    try:
        async for app in running_app(settings):
            yield app, proxy
    finally:
        await proxy.stop()


async def _assert_nothing_left(app: FastAPI, s3_app: FastAPI, client: httpx.AsyncClient, user: TestUser) -> None:
    assert await _bucket_state(s3_app, user.id) == ({}, [])
    assert await stored_rows(app, user.id) == {}
    assert await reservation_count(app) == 0
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (0, 0, 0)


async def test_s3_down_before_upload_is_503_and_nothing_reserved(
    proxied_app: tuple[FastAPI, CuttableProxy], s3_app: FastAPI
) -> None:
    app, proxy = proxied_app
    async with client_for(app) as client:
        user = await make_user(client)
        kept = await client.put("/api/storage/files/keep.txt", content=b"k" * 10, headers=user.headers)
        assert kept.status_code == 201
        await proxy.stop()
        r = await client.put("/api/storage/files/x.bin", content=b"x" * 1000, headers=user.headers)
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
        assert int(r.headers["Retry-After"]) >= 1  # a client (or balancer) knows when to try again
        for method, path, body in (
            ("DELETE", "/api/storage/files/keep.txt", None),
            ("POST", "/api/storage/files/delete", {"keys": ["keep.txt"]}),
        ):
            r = await client.request(method, path, json=body, headers=user.headers)
            assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
        health = await client.get("/api/open/health")
        assert health.status_code == 503 and health.json()["storage"] == "unavailable"
        # The file whose delete failed is still there and still counted; nothing else was added.
        objects, pending = await _bucket_state(s3_app, user.id)
        assert objects == {f"users/{user.id}/keep.txt": 10} and pending == []
        assert await stored_rows(app, user.id) == {"keep.txt": 10} and await reservation_count(app) == 0
        u = await usage(client, user)
        assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (10, 0, 1)


async def test_s3_dying_during_a_multipart_upload_is_503_and_nothing_stored(
    proxied_app: tuple[FastAPI, CuttableProxy], s3_app: FastAPI
) -> None:
    app, proxy = proxied_app
    async with client_for(app) as client:
        user = await make_user(client)
        proxy.cut_after(MIN_PART_SIZE + MIB)  # the first part gets through, the second is cut off
        r = await client.put("/api/storage/files/y.bin", content=_chunks(3 * MIN_PART_SIZE), headers=user.headers)
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
        # The abort could not reach S3 either: the parts stay until the clean-up job runs once S3 is back.
        _, pending = await _bucket_state(s3_app, user.id)
        assert pending == [f"users/{user.id}/y.bin"]
        assert await s3_app.state.storage.abort_stale_uploads(timedelta(0), prefix=f"users/{user.id}/") == 1
        await _assert_nothing_left(app, s3_app, client, user)


@pytest.mark.parametrize(
    ("attempts", "nothing_stored"),
    [
        ([ConnectTimeoutError(endpoint_url="http://s3")], True),
        ([ConnectTimeoutError(endpoint_url="http://s3"), ConnectTimeoutError(endpoint_url="http://s3")], True),
        # A retry refused after an attempt that may have reached S3 says nothing about the first attempt.
        ([ReadTimeoutError(endpoint_url="http://s3"), ConnectTimeoutError(endpoint_url="http://s3")], False),
        ([ReadTimeoutError(endpoint_url="http://s3")], False),
    ],
)
def test_a_failed_write_is_nothing_stored_only_if_no_attempt_reached_s3(
    attempts: list[Exception], nothing_stored: bool
) -> None:
    request: dict[str, Any] = {"context": {}}
    for exc in attempts:  # botocore calls the hook after every attempt, the last one included
        _note_attempt(request, caught_exception=exc)
    with pytest.raises(StorageUnavailable) as raised, _committing("PutObject"):
        raise attempts[-1]
    assert isinstance(raised.value, NothingStored) is nothing_stored


class _DyingGateway:
    """An S3 endpoint that answers the first PutObject and, on the next one over the same keep-alive connection,
    reads it whole, closes the connection without answering and stops listening — what a stopping gateway does
    to a write it may already have stored. Every later connection is refused."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.gone = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed its idle connection
            lines = head.decode("latin-1").split("\r\n")
            self.requests.append(lines[0])
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
            if fields.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await reader.readexactly(int(fields["content-length"]))
            if len(self.requests) > 1:
                assert self._server is not None
                self._server.close()  # refuse every new connection from now on
                writer.close()
                self.gone.set()
                return
            writer.write(b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n')
            await writer.drain()


@pytest.mark.parametrize("client", ["signed", "botocore"])
async def test_a_write_cut_off_after_it_was_sent_is_never_called_nothing_stored(client: str) -> None:
    # aiohttp retries a PUT on a new connection, out of its caller's sight, when a reused one closes under it;
    # that retry's refused connect must not make the write look as if it never reached S3. Both clients:
    # our own signed requests (small PutObjects) and botocore's (CompleteMultipartUpload, the rest).
    gateway = _DyingGateway()
    endpoint = await gateway.start()
    backend = S3Backend(
        bucket="b", region="us-east-1", endpoint_url=endpoint, access_key="a", secret_key="s" * 40, ensure_bucket=False
    )
    await backend.start()

    async def put(key: str, data: bytes) -> None:
        if client == "signed":
            await backend.signed.put(key, data, "text/plain")
        else:
            with _committing("PutObject"):
                await backend.client.put_object(Bucket="b", Key=key, Body=data)

    try:
        await put("k1", b"one")
        with pytest.raises(StorageUnavailable) as raised:
            await put("k2", b"two")
        assert gateway.gone.is_set()
        assert [r.split()[0] + " " + r.split()[1].partition("?")[0] for r in gateway.requests] == [
            "PUT /b/k1",
            "PUT /b/k2",
        ]
        assert not isinstance(raised.value, NothingStored)
    finally:
        await backend.close()


class _ScriptedGateway:
    """Answers each request with the next of `answers` (status, body); records the request lines."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers = list(answers)
        self.requests: list[str] = []

    async def start(self) -> str:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode("latin-1").split("\r\n")
            self.requests.append(lines[0].split()[0] + " " + lines[0].split()[1].partition("?")[0])
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
            await reader.readexactly(int(fields.get("content-length", "0")))
            status, body = self.answers.pop(0)
            extra = b'ETag: "e"\r\nLast-Modified: Wed, 02 Dec 2026 10:00:00 GMT\r\n' if status < 300 else b""
            writer.write(b"HTTP/1.1 %d X\r\n%sContent-Length: %d\r\n\r\n%s" % (status, extra, len(body), body))
            await writer.drain()


def _error(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


@pytest.mark.parametrize(
    ("answers", "outcome"),
    [
        ([(503, _error("SlowDown")), (200, b"hello")], "ok"),  # a 5xx is retried
        ([(500, b""), (503, b""), (503, _error("ServiceUnavailable"))], StorageUnavailable),  # until the attempts end
        ([(404, _error("NoSuchKey"))], ObjectNotFound),
        ([(404, _error("NoSuchBucket"))], StorageUnavailable),  # our fault, not the object's absence
        ([(416, _error("InvalidRange"))], InvalidRange),
        ([(403, _error("AccessDenied"))], StorageUnavailable),
    ],
)
async def test_signed_get_retries_5xx_and_maps_s3_errors(answers: list[tuple[int, bytes]], outcome: object) -> None:
    gateway = _ScriptedGateway(answers)
    endpoint = await gateway.start()
    backend = S3Backend(
        bucket="b", region="us-east-1", endpoint_url=endpoint, access_key="a", secret_key="s" * 40, ensure_bucket=False
    )
    await backend.start()
    try:
        if outcome == "ok":
            info, body = await backend.open_range("k")
            assert b"".join([c async for c in body]) == b"hello"
            assert (info.size, info.etag, info.last_modified) == (5, "e", datetime(2026, 12, 2, 10, tzinfo=UTC))
        else:
            with pytest.raises(outcome) as raised:  # type: ignore[call-overload]
                await backend.open_range("k")
            assert type(raised.value) is outcome
        assert gateway.requests == ["GET /b/k"] * len(answers) and gateway.answers == []
    finally:
        await backend.close()
