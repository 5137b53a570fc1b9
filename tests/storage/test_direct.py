"""Direct uploads with presigned POSTs: reserve, send straight to storage, complete or cancel."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from pockity.jobs import JobContext
from pockity.kit.time import utcnow
from pockity.models import Reservation
from pockity.storage.tasks import release_expired_reservations
from tests.fixtures.storage import local_files, reservation_count, set_quota, stored_rows, usage
from tests.fixtures.users import TestUser, make_user


async def _start(client: httpx.AsyncClient, user: TestUser, key: str, size: int, ctype: str = "text/plain") -> dict:  # type: ignore[type-arg]
    r = await client.post(
        "/api/storage/uploads", json={"key": key, "size": size, "contentType": ctype}, headers=user.headers
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _send(http: httpx.AsyncClient, upload: dict, data: bytes, *, local: bool) -> httpx.Response:  # type: ignore[type-arg]
    url = upload["url"].replace("http://localhost:8080", "") if local else upload["url"]
    return await http.post(url, data=upload["fields"], files={"file": ("ignored", data)})


async def test_local_direct_upload_round_trip(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    upload = await _start(client, user, "docs/direct.txt", 100)
    assert (await usage(client, user))["bytesReserved"] == 100
    assert (await _send(client, upload, b"d" * 64, local=True)).status_code == 204
    done = await client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)
    assert done.status_code == 201 and done.json()["size"] == 64 and done.json()["contentType"] == "text/plain"
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (64, 0, 1)  # settled to the real size
    assert local_files(app, user.id) == {"docs/direct.txt": 64} and await reservation_count(app) == 0
    again = await client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (404, "upload_not_found")
    assert (await usage(client, user))["bytesUsed"] == 64  # counted once


async def test_local_post_over_the_reserved_size_is_refused(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start(client, user, "big.bin", 10)
    r = await _send(client, upload, b"x" * 11, local=True)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "entity_too_large")
    assert local_files(app, user.id) == {}
    incomplete = await client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)
    assert (incomplete.status_code, incomplete.json()["error"]["code"]) == (409, "upload_incomplete")
    tampered = {**upload, "fields": {**upload["fields"], "x-pockity-max-size": "1000"}}
    assert (await _send(client, tampered, b"x" * 11, local=True)).status_code == 403
    cancelled = await client.delete(f"/api/storage/uploads/{upload['uploadId']}", headers=user.headers)
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] is True
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"]) == (0, 0) and await reservation_count(app) == 0


async def test_direct_upload_reserves_atomically_like_any_upload(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await set_quota(app, user.id, storage_bytes=1000)
    await _start(client, user, "a", 600)
    r = await client.post("/api/storage/uploads", json={"key": "b", "size": 401}, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "storage_quota_exceeded")
    busy = await client.post("/api/storage/uploads", json={"key": "a", "size": 1}, headers=user.headers)
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "object_busy")
    assert (await usage(client, user))["bytesReserved"] == 600


async def test_cancel_after_sending_deletes_the_bytes(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    upload = await _start(client, user, "gone.txt", 50)
    await _send(client, upload, b"g" * 50, local=True)
    assert local_files(app, user.id) == {"gone.txt": 50}
    assert (await client.delete(f"/api/storage/uploads/{upload['uploadId']}", headers=user.headers)).status_code == 200
    assert local_files(app, user.id) == {} and await stored_rows(app, user.id) == {}


async def test_never_completed_upload_is_adopted_when_it_expires(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start(client, user, "forgotten.bin", 500)
    await _send(client, upload, b"f" * 123, local=True)
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(Reservation).values(expires_at=utcnow() - timedelta(seconds=1)))
    ctx = JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)
    assert await release_expired_reservations(ctx) == 1
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (123, 0, 1)


async def test_another_users_upload_id_is_404(client: httpx.AsyncClient, user: TestUser, other_user: TestUser) -> None:
    upload = await _start(client, user, "mine.txt", 10)
    for method, path in (
        ("POST", f"/api/storage/uploads/{upload['uploadId']}/complete"),
        ("DELETE", f"/api/storage/uploads/{upload['uploadId']}"),
    ):
        r = await client.request(method, path, headers=other_user.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "upload_not_found")


async def test_s3_post_policy_is_enforced_by_the_server(s3_client: httpx.AsyncClient, s3_app: FastAPI) -> None:
    user = await make_user(s3_client)
    upload = await _start(s3_client, user, "photos/p.jpg", 1000, "image/jpeg")
    assert upload["url"].startswith("http://127.0.0.1") and "policy" in upload["fields"]
    async with httpx.AsyncClient() as direct:
        too_big = await _send(direct, upload, b"x" * 1001, local=False)
        assert too_big.status_code == 400 and "EntityTooLarge" in too_big.text
        moved = {**upload, "fields": {**upload["fields"], "key": f"users/{user.id}/elsewhere.jpg"}}
        assert (await _send(direct, moved, b"x", local=False)).status_code == 403
        assert (
            await s3_client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)
        ).status_code == 409
        assert (await _send(direct, upload, b"j" * 700, local=False)).status_code == 204
    done = await s3_client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)
    assert done.status_code == 201 and done.json()["size"] == 700 and done.json()["contentType"] == "image/jpeg"
    u = await usage(s3_client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (700, 0, 1)
    backend = s3_app.state.storage
    assert [(i.key, i.size) async for i in backend.iter_objects(f"users/{user.id}/")] == [
        (f"users/{user.id}/photos/p.jpg", 700)
    ]


MIB = 1024 * 1024


async def _start_multipart(client: httpx.AsyncClient, user: TestUser, key: str, size: int) -> dict:  # type: ignore[type-arg]
    r = await client.post(
        "/api/storage/uploads",
        json={"key": key, "size": size, "contentType": "application/x-big", "multipart": True, "partSize": 5 * MIB},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _body(part: dict, seed: int) -> bytes:  # type: ignore[type-arg]
    return bytes([seed]) * part["size"]


async def _multipart_round_trip(
    client: httpx.AsyncClient, sender: httpx.AsyncClient, user: TestUser, *, local: bool
) -> None:
    size = 11 * MIB + 3
    upload = await _start_multipart(client, user, "big/blob.bin", size)
    assert upload["multipart"] is True and [p["size"] for p in upload["parts"]] == [5 * MIB, 5 * MIB, MIB + 3]
    assert (await usage(client, user))["bytesReserved"] == size
    etags = []
    for part in upload["parts"]:
        url = part["url"].replace("http://localhost:8080", "") if local else part["url"]
        wrong = await sender.put(url, content=_body(part, 1)[:-1])  # the signed size is exact
        assert wrong.status_code in (400, 403), wrong.text
        r = await sender.put(url, content=_body(part, part["partNumber"]))
        assert r.status_code == 200, r.text
        etags.append({"partNumber": part["partNumber"], "etag": r.headers["etag"]})
    no_parts = await client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)
    assert (no_parts.status_code, no_parts.json()["error"]["code"]) == (422, "parts_required")
    shuffled = await client.post(
        f"/api/storage/uploads/{upload['uploadId']}/complete",
        json={"parts": list(reversed(etags))},
        headers=user.headers,
    )
    assert (shuffled.status_code, shuffled.json()["error"]["code"]) == (422, "invalid_parts")
    done = await client.post(
        f"/api/storage/uploads/{upload['uploadId']}/complete", json={"parts": etags}, headers=user.headers
    )
    assert done.status_code == 201, done.text
    assert done.json()["size"] == size and done.json()["etag"].endswith("-3")
    content = await client.get("/api/storage/files/big/blob.bin/content", headers=user.headers)
    assert content.content == b"".join(_body(p, p["partNumber"]) for p in upload["parts"])
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (size, 0, 1)


async def test_local_multipart_direct_upload(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    await _multipart_round_trip(client, client, user, local=True)
    assert local_files(app, user.id) == {"big/blob.bin": 11 * MIB + 3}


async def test_multipart_direct_upload_can_be_cancelled(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start_multipart(client, user, "c.bin", 6 * MIB)
    first = upload["parts"][0]
    await client.put(first["url"].replace("http://localhost:8080", ""), content=_body(first, 7))
    assert (await client.delete(f"/api/storage/uploads/{upload['uploadId']}", headers=user.headers)).status_code == 200
    assert (await usage(client, user))["bytesReserved"] == 0 and await reservation_count(app) == 0
    tmp = Path(app.state.settings.storage_dir) / "tmp"
    assert not [p for p in tmp.iterdir() if p.name.startswith("mp-")]


async def test_s3_multipart_direct_upload(s3_client: httpx.AsyncClient, s3_app: FastAPI) -> None:
    user = await make_user(s3_client)
    async with httpx.AsyncClient(timeout=60) as direct:
        await _multipart_round_trip(s3_client, direct, user, local=False)
    backend = s3_app.state.storage
    assert [(i.key, i.size) async for i in backend.iter_objects(f"users/{user.id}/")] == [
        (f"users/{user.id}/big/blob.bin", 11 * MIB + 3)
    ]
