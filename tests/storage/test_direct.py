"""Direct uploads with presigned POSTs: reserve, send straight to storage, complete or cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fastapi import FastAPI

from tests.fixtures.storage import (
    MIB,
    bucket_bytes,
    expire_reservations,
    local_files,
    reservation_count,
    set_quota,
    stored_rows,
    usage,
)
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


async def _complete(client: httpx.AsyncClient, user: TestUser, upload: dict) -> httpx.Response:  # type: ignore[type-arg]
    return await client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)


async def _cancel(client: httpx.AsyncClient, user: TestUser, upload: dict) -> httpx.Response:  # type: ignore[type-arg]
    return await client.delete(f"/api/storage/uploads/{upload['uploadId']}", headers=user.headers)


async def _counts(client: httpx.AsyncClient, user: TestUser) -> tuple[object, object, object]:
    u = await usage(client, user)
    return u["bytesUsed"], u["bytesReserved"], u["objectCount"]


async def _covered(app: FastAPI, client: httpx.AsyncClient, user: TestUser) -> None:
    """What the backend holds for the user never exceeds what usage counts (used + reserved)."""
    u = await usage(client, user)
    assert await bucket_bytes(app, user.id) <= int(u["bytesUsed"]) + int(u["bytesReserved"])  # type: ignore[call-overload]


async def test_local_direct_upload_round_trip(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    upload = await _start(client, user, "docs/direct.txt", 100)
    assert upload["fields"]["key"] == f"staging/{user.id}/{upload['uploadId']}"  # never the file's own key
    assert await _counts(client, user) == (0, 100, 0)
    assert (await _send(client, upload, b"d" * 64, local=True)).status_code == 204
    assert local_files(app, user.id) == {}  # staged, not visible as a file yet
    done = await _complete(client, user, upload)
    assert done.status_code == 201 and done.json()["size"] == 64 and done.json()["contentType"] == "text/plain"
    # Settled to the real size; the form's 100 bytes stay held until it expires (the form is refused meanwhile).
    assert await _counts(client, user) == (64, 100, 1)
    assert local_files(app, user.id) == {"docs/direct.txt": 64}
    assert await bucket_bytes(app, user.id) == 64  # the staged copy is gone
    again = await _complete(client, user, upload)
    assert (again.status_code, again.json()["error"]["code"]) == (404, "upload_not_found")
    assert await expire_reservations(app) == 1
    assert await _counts(client, user) == (64, 0, 1) and await reservation_count(app) == 0


async def test_local_post_over_the_reserved_size_is_refused(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start(client, user, "big.bin", 10)
    r = await _send(client, upload, b"x" * 11, local=True)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "entity_too_large")
    assert await bucket_bytes(app, user.id) == 0
    incomplete = await _complete(client, user, upload)
    assert (incomplete.status_code, incomplete.json()["error"]["code"]) == (409, "upload_incomplete")
    tampered = {**upload, "fields": {**upload["fields"], "x-pockity-max-size": "1000"}}
    assert (await _send(client, tampered, b"x" * 11, local=True)).status_code == 403
    moved = {**upload, "fields": {**upload["fields"], "key": f"users/{user.id}/big.bin"}}
    assert (await _send(client, moved, b"x", local=True)).status_code == 403
    cancelled = await _cancel(client, user, upload)
    assert cancelled.status_code == 200 and cancelled.json()["cancelled"] is True
    assert await _counts(client, user) == (0, 10, 0)  # held until the form expires
    assert await expire_reservations(app) == 1
    assert await _counts(client, user) == (0, 0, 0) and await reservation_count(app) == 0


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


async def test_cancel_after_sending_deletes_the_staged_bytes(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start(client, user, "gone.txt", 50)
    assert (await _send(client, upload, b"g" * 50, local=True)).status_code == 204
    assert await bucket_bytes(app, user.id) == 50
    assert (await _cancel(client, user, upload)).status_code == 200
    assert await bucket_bytes(app, user.id) == 0 and await stored_rows(app, user.id) == {}


async def test_local_form_is_refused_once_its_upload_is_cancelled(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    """The attack pass: five cancelled uploads' forms stored 6 MB against a 1 MB / 3-file tier."""
    await set_quota(app, user.id, storage_bytes=MIB, max_objects=3)
    for i in range(5):
        upload = await _start(client, user, f"c{i}.bin", MIB)
        assert (await _cancel(client, user, upload)).status_code == 200
        assert await expire_reservations(app) == 1  # the hold ends, so the next upload fits
        r = await _send(client, upload, b"x" * MIB, local=True)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "invalid_signature")
        await _covered(app, client, user)
    assert await bucket_bytes(app, user.id) == 0 and await _counts(client, user) == (0, 0, 0)


async def test_local_form_replayed_after_complete_cannot_change_the_file(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start(client, user, "keep.txt", 100)
    assert (await _send(client, upload, b"a" * 40, local=True)).status_code == 204
    done = await _complete(client, user, upload)
    assert done.status_code == 201
    replay = await _send(client, upload, b"b" * 90, local=True)
    assert (replay.status_code, replay.json()["error"]["code"]) == (403, "invalid_signature")
    content = await client.get("/api/storage/files/keep.txt/content", headers=user.headers)
    assert content.content == b"a" * 40 and content.headers["etag"] == f'"{done.json()["etag"]}"'
    assert await stored_rows(app, user.id) == {"keep.txt": 40} and await bucket_bytes(app, user.id) == 40


async def test_cancelling_a_replacement_leaves_the_file_intact(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    put = await client.put("/api/storage/files/doc.txt", content=b"original", headers=user.headers)
    assert put.status_code == 201
    upload = await _start(client, user, "doc.txt", 20)
    assert await _counts(client, user) == (8, 20, 1)  # staged beside the file: the whole size is reserved
    assert (await _send(client, upload, b"n" * 20, local=True)).status_code == 204
    assert (await _cancel(client, user, upload)).status_code == 200
    content = await client.get("/api/storage/files/doc.txt/content", headers=user.headers)
    assert content.content == b"original" and await stored_rows(app, user.id) == {"doc.txt": 8}
    assert await expire_reservations(app) == 1
    assert await _counts(client, user) == (8, 0, 1)


async def test_direct_replacement_counts_the_difference_once(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    assert (await client.put("/api/storage/files/r.txt", content=b"x" * 30, headers=user.headers)).status_code == 201
    upload = await _start(client, user, "r.txt", 50)
    assert (await _send(client, upload, b"y" * 45, local=True)).status_code == 204
    assert (await _complete(client, user, upload)).status_code == 201
    assert await _counts(client, user) == (45, 50, 1)
    assert await expire_reservations(app) == 1
    assert await _counts(client, user) == (45, 0, 1) and local_files(app, user.id) == {"r.txt": 45}


async def test_never_completed_upload_is_adopted_when_it_expires(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start(client, user, "forgotten.bin", 500)
    assert (await _send(client, upload, b"f" * 123, local=True)).status_code == 204
    assert await expire_reservations(app) == 1  # adopted: the staged file is put in place
    assert await _counts(client, user) == (123, 500, 1)  # and its hold is released by the next run
    assert await expire_reservations(app) == 1
    assert await _counts(client, user) == (123, 0, 1) and local_files(app, user.id) == {"forgotten.bin": 123}
    assert await bucket_bytes(app, user.id) == 123 and await reservation_count(app) == 0


async def test_never_sent_upload_is_released_when_it_expires(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await _start(client, user, "never.bin", 500)
    assert await expire_reservations(app) == 1
    assert await _counts(client, user) == (0, 0, 0) and await reservation_count(app) == 0


async def test_upload_urls_live_shorter_than_download_urls(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    limit = app.state.settings.direct_upload_max_expires_seconds
    assert limit == 3600 < app.state.settings.download_url_max_seconds
    body = {"key": "t.bin", "size": 1, "expiresIn": limit + 1}
    r = await client.post("/api/storage/uploads", json=body, headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_expiry")
    assert await reservation_count(app) == 0
    ok = await client.post("/api/storage/uploads", json={**body, "expiresIn": limit}, headers=user.headers)
    assert ok.status_code == 201, ok.text


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
        assert (await _complete(s3_client, user, upload)).status_code == 409
        assert (await _send(direct, upload, b"j" * 700, local=False)).status_code == 204
    done = await _complete(s3_client, user, upload)
    assert done.status_code == 201 and done.json()["size"] == 700 and done.json()["contentType"] == "image/jpeg"
    assert await _counts(s3_client, user) == (700, 1000, 1)
    backend = s3_app.state.storage
    assert [(i.key, i.size) async for i in backend.iter_objects(f"users/{user.id}/")] == [
        (f"users/{user.id}/photos/p.jpg", 700)
    ]
    assert [i async for i in backend.iter_objects(f"staging/{user.id}/")] == []


async def test_s3_form_replayed_after_complete_or_cancel_stays_reserved_and_changes_no_file(
    s3_client: httpx.AsyncClient, s3_app: FastAPI
) -> None:
    """S3 cannot revoke a POST policy: what it can still store lands in staging, covered by the hold."""
    user = await make_user(s3_client)
    await set_quota(s3_app, user.id, storage_bytes=1000, max_objects=3)
    done_upload = await _start(s3_client, user, "kept.txt", 300)
    cancelled = await _start(s3_client, user, "dropped.txt", 400)
    async with httpx.AsyncClient() as direct:
        assert (await _send(direct, done_upload, b"a" * 200, local=False)).status_code == 204
        done = await _complete(s3_client, user, done_upload)
        assert done.status_code == 201
        assert (await _cancel(s3_client, user, cancelled)).status_code == 200
        assert await _counts(s3_client, user) == (200, 700, 1)
        # Both forms still work on S3 until they expire — but only into staging, within what is held.
        assert (await _send(direct, done_upload, b"b" * 300, local=False)).status_code == 204
        assert (await _send(direct, cancelled, b"c" * 400, local=False)).status_code == 204
    await _covered(s3_app, s3_client, user)
    content = await s3_client.get("/api/storage/files/kept.txt/content", headers=user.headers)
    assert content.content == b"a" * 200 and content.headers["etag"] == f'"{done.json()["etag"]}"'
    assert await stored_rows(s3_app, user.id) == {"kept.txt": 200}
    over = await s3_client.post("/api/storage/uploads", json={"key": "more", "size": 101}, headers=user.headers)
    assert (over.status_code, over.json()["error"]["code"]) == (413, "storage_quota_exceeded")
    assert await expire_reservations(s3_app) == 2  # the forms have expired: staging emptied, holds released
    assert await _counts(s3_client, user) == (200, 0, 1) and await bucket_bytes(s3_app, user.id) == 200
    assert await reservation_count(s3_app) == 0


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
    last = upload["parts"][-1]
    late = await sender.put(
        last["url"].replace("http://localhost:8080", "") if local else last["url"], content=_body(last, 9)
    )
    assert late.status_code == (403 if local else 404), late.text  # the multipart upload is over: parts are refused
    assert (
        await client.get("/api/storage/files/big/blob.bin/content", headers=user.headers)
    ).content == content.content
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
    late = await client.put(first["url"].replace("http://localhost:8080", ""), content=_body(first, 7))
    assert (late.status_code, late.json()["error"]["code"]) == (403, "invalid_signature")
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


async def test_concurrent_completes_and_cancels_settle_once(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload = await _start(client, user, "race.bin", 1000)
    assert (await _send(client, upload, b"r" * 700, local=True)).status_code == 204
    calls = [_complete(client, user, upload) for _ in range(4)] + [_cancel(client, user, upload) for _ in range(2)]
    results = await asyncio.gather(*calls)
    winners = [r for r in results if r.status_code in (200, 201)]
    assert len(winners) == 1, [r.text for r in results]
    assert all(r.status_code in (404, 409) for r in results if r not in winners)
    completed = winners[0].status_code == 201
    assert await stored_rows(app, user.id) == ({"race.bin": 700} if completed else {})
    assert await _counts(client, user) == ((700, 1000, 1) if completed else (0, 1000, 0))
    assert await expire_reservations(app) == 1
    assert await _counts(client, user) == ((700, 0, 1) if completed else (0, 0, 0))
    assert await bucket_bytes(app, user.id) == (700 if completed else 0)
