"""Quotas on the local backend: reservations, limits, replacement, chunked uploads, key tiers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from tests.fixtures.storage import MIB, local_files, reservation_count, set_quota, stored_rows, usage
from tests.fixtures.users import TestUser, make_key, make_user


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"z" * n


async def test_usage_counts_exactly(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    for name, size in (("a.txt", 10), ("dir/b.bin", 2048), ("dir/c", 0)):
        r = await client.put(f"/api/storage/files/{name}", content=b"x" * size, headers=user.headers)
        assert r.status_code == 201, r.text
        assert r.json()["size"] == size
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (2058, 3, 0)
    assert u["storageLimitBytes"] == 1024**3 and u["maxObjects"] == 1000 and u["overQuota"] is False
    assert u["tier"]["id"] == "tier_free"
    assert local_files(app, user.id) == {"a.txt": 10, "dir/b.bin": 2048, "dir/c": 0}


async def test_over_quota_upload_is_refused_and_leaves_nothing(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await set_quota(app, user.id, storage_bytes=1000)
    assert (await client.put("/api/storage/files/a", content=b"a" * 600, headers=user.headers)).status_code == 201
    r = await client.put("/api/storage/files/b", content=b"b" * 401, headers=user.headers)
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "storage_quota_exceeded"
    assert err["details"]["limitBytes"] == 1000 and err["details"]["remainingBytes"] == 400
    assert (await client.put("/api/storage/files/b", content=b"b" * 400, headers=user.headers)).status_code == 201
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (1000, 2, 0)
    assert local_files(app, user.id) == {"a": 600, "b": 400}
    assert await reservation_count(app) == 0


async def test_object_count_limit(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await set_quota(app, user.id, storage_bytes=MIB, max_objects=2)
    for name in ("one", "two"):
        assert (await client.put(f"/api/storage/files/{name}", content=b"1", headers=user.headers)).status_code == 201
    r = await client.put("/api/storage/files/three", content=b"1", headers=user.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "object_quota_exceeded"
    assert r.json()["error"]["details"]["limit"] == 2
    # Replacing an existing file is not a new object.
    assert (await client.put("/api/storage/files/two", content=b"22", headers=user.headers)).status_code == 201
    assert (await usage(client, user))["objectCount"] == 2


async def test_file_too_large_is_refused_before_any_byte(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await set_quota(app, user.id, storage_bytes=MIB, max_object_size=100)
    r = await client.put("/api/storage/files/big", content=b"x" * 101, headers=user.headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert r.json()["error"]["details"]["maxObjectSizeBytes"] == 100
    chunked = await client.put("/api/storage/files/big", content=_chunks(1000, 30), headers=user.headers)
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "file_too_large"
    assert local_files(app, user.id) == {} and await reservation_count(app) == 0


async def test_replacing_counts_only_the_difference(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await set_quota(app, user.id, storage_bytes=1000)
    assert (await client.put("/api/storage/files/f", content=b"a" * 900, headers=user.headers)).status_code == 201
    # 950 bytes would not fit next to the old 900, but it replaces them: only 50 more are needed.
    r = await client.put("/api/storage/files/f", content=b"b" * 950, headers=user.headers)
    assert r.status_code == 201, r.text
    assert (await usage(client, user))["bytesUsed"] == 950
    assert (await client.put("/api/storage/files/f", content=b"c" * 10, headers=user.headers)).status_code == 201
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"]) == (10, 1)
    body = await client.get("/api/storage/files/f/content", headers=user.headers)
    assert body.content == b"c" * 10


async def test_chunked_upload_stops_when_the_next_chunk_does_not_fit(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await set_quota(app, user.id, storage_bytes=200_000)
    r = await client.put("/api/storage/files/stream", content=_chunks(300_000), headers=user.headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "storage_quota_exceeded"
    assert local_files(app, user.id) == {}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (0, 0, 0)
    ok = await client.put("/api/storage/files/stream", content=_chunks(200_000), headers=user.headers)
    assert ok.status_code == 201 and ok.json()["size"] == 200_000
    assert (await usage(client, user))["bytesUsed"] == 200_000


async def test_multipart_form_upload_streams_with_key_field(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    r = await client.post(
        "/api/storage/upload",
        data={"key": "photos/cat.jpg"},
        files={"file": ("ignored.jpg", b"\xff\xd8" * 500, "image/jpeg")},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["key"] == "photos/cat.jpg" and r.json()["contentType"] == "image/jpeg" and r.json()["size"] == 1000
    by_filename = await client.post(
        "/api/storage/upload", files={"file": ("notes.txt", b"hi", "text/plain")}, headers=user.headers
    )
    assert by_filename.status_code == 201 and by_filename.json()["key"] == "notes.txt"
    missing = await client.post(
        "/api/storage/upload", data={"key": "x"}, headers=user.headers, files={"other": ("a", b"1")}
    )
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "missing_file"
    not_form = await client.post(
        "/api/storage/upload", content=b"raw", headers={**user.headers, "content-type": "text/plain"}
    )
    assert not_form.status_code == 415
    assert local_files(app, user.id) == {"photos/cat.jpg": 1000, "notes.txt": 2}


async def test_multipart_over_quota_leaves_nothing(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await set_quota(app, user.id, storage_bytes=1000)
    r = await client.post("/api/storage/upload", files={"file": ("big.bin", b"x" * 5000)}, headers=user.headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "storage_quota_exceeded"
    assert local_files(app, user.id) == {} and await reservation_count(app) == 0


async def test_key_linked_to_a_tier_is_capped_by_it(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    small = await set_quota(app, (await make_user(client, "tierholder")).id, storage_bytes=100, max_objects=5)
    key = await make_key(client, user, tierId=small)
    assert (await client.put("/api/storage/files/k1", content=b"k" * 80, headers=key["headers"])).status_code == 201
    r = await client.put("/api/storage/files/k2", content=b"k" * 30, headers=key["headers"])
    assert r.status_code == 413 and r.json()["error"]["details"]["scope"] == "key"
    # The user's own (JWT) writes are not limited by the key's tier.
    assert (await client.put("/api/storage/files/j", content=b"j" * 500, headers=user.headers)).status_code == 201
    # Deleting what the key wrote gives its room back.
    assert (await client.delete("/api/storage/files/k1", headers=key["headers"])).status_code == 200
    assert (await client.put("/api/storage/files/k2", content=b"k" * 30, headers=key["headers"])).status_code == 201


async def test_concurrent_uploads_never_pass_the_quota(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await set_quota(app, user.id, storage_bytes=5 * 10_000)
    results = await asyncio.gather(
        *(client.put(f"/api/storage/files/p{i}", content=b"p" * 10_000, headers=user.headers) for i in range(20))
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 5 and codes.count(413) == 15
    rows = await stored_rows(app, user.id)
    assert sum(rows.values()) == 50_000 and local_files(app, user.id) == rows
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (50_000, 5, 0)


async def test_same_name_upload_while_another_is_in_flight_is_409(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        await gate.wait()
        yield b"b" * 1000

    first = asyncio.create_task(client.put("/api/storage/files/same", content=slow(), headers=user.headers))
    for _ in range(100):
        if await reservation_count(app):
            break
        await asyncio.sleep(0.01)
    second = await client.put("/api/storage/files/same", content=b"c", headers=user.headers)
    deleting = await client.delete("/api/storage/files/same", headers=user.headers)
    gate.set()
    assert second.status_code == 409 and second.json()["error"]["code"] == "object_busy"
    assert deleting.status_code in (404, 409)  # not stored yet, or busy — never a torn state
    assert (await first).status_code == 201
    assert local_files(app, user.id) == {"same": 2000}


async def test_deleting_a_file_while_it_is_being_replaced_is_409(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    assert (await client.put("/api/storage/files/busy", content=b"old", headers=user.headers)).status_code == 201
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"n" * 10
        await gate.wait()

    replacing = asyncio.create_task(client.put("/api/storage/files/busy", content=slow(), headers=user.headers))
    for _ in range(100):
        if await reservation_count(app):
            break
        await asyncio.sleep(0.01)
    single = await client.delete("/api/storage/files/busy", headers=user.headers)
    batch = await client.post("/api/storage/files/delete", json={"keys": ["busy"]}, headers=user.headers)
    gate.set()
    assert (single.status_code, single.json()["error"]["code"]) == (409, "object_busy")
    assert batch.json()["results"][0]["error"]["code"] == "object_busy"
    assert (await replacing).status_code == 201
    assert local_files(app, user.id) == {"busy": 10}
