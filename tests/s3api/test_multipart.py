"""S3 multipart uploads in-process (PostgreSQL, local storage): the parts' quota, completion's rules and
answers, isolation of uploads between users and keys, expiry — and stored object headers."""

from __future__ import annotations

import hashlib
from xml.etree.ElementTree import fromstring

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from pockity.models import Reservation
from pockity.storage.keys import physical_key
from tests.fixtures.storage import MIB, expire_reservations, set_quota, stored_rows, usage
from tests.fixtures.users import TestUser, make_user
from tests.s3api.conftest import S3Client, s3_client_for

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
PART = 5 * MIB


def _code(r: httpx.Response) -> str:
    root = fromstring(r.content)
    assert root.tag == "Error", r.text
    return root.findtext("Code") or ""


async def _create(s3: S3Client, key: str, headers: dict[str, str] | None = None) -> str:
    r = await s3.send("POST", f"/pockity/{key}?uploads", headers=headers)
    assert r.status_code == 200, r.text
    root = fromstring(r.content)
    assert root.findtext(f"{NS}Key") == key and root.findtext(f"{NS}Bucket") == "pockity"
    upload_id = root.findtext(f"{NS}UploadId")
    assert upload_id
    return upload_id


async def _part(s3: S3Client, key: str, upload_id: str, number: int, body: bytes) -> str:
    r = await s3.send("PUT", f"/pockity/{key}?partNumber={number}&uploadId={upload_id}", body=body)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    return r.headers["etag"]


def _complete_xml(parts: list[tuple[int, str]]) -> bytes:
    items = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in parts)
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


async def _complete(s3: S3Client, key: str, upload_id: str, parts: list[tuple[int, str]]) -> httpx.Response:
    return await s3.send("POST", f"/pockity/{key}?uploadId={upload_id}", body=_complete_xml(parts))


async def _open_uploads(app: FastAPI, user_id: str) -> list[Reservation]:
    async with app.state.db.sessions() as s:
        return list((await s.scalars(select(Reservation).where(Reservation.user_id == user_id))).all())


async def test_parts_are_reserved_then_completed_into_the_rest_apis_file_with_its_metadata(
    s3: S3Client, client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    one, two = b"a" * PART, b"b" * 1000
    upload_id = await _create(
        s3, "big/file.bin", {"Content-Type": "text/plain", "x-amz-meta-owner": "Ann", "Cache-Control": "no-cache"}
    )
    e1 = await _part(s3, "big/file.bin", upload_id, 1, one)
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (0, PART, 0)
    e2 = await _part(s3, "big/file.bin", upload_id, 2, two)
    assert (await usage(client, user))["bytesReserved"] == PART + 1000

    listed = await s3.send("GET", f"/pockity/big/file.bin?uploadId={upload_id}")
    assert listed.status_code == 200, listed.text
    parts = fromstring(listed.content).findall(f"{NS}Part")
    assert [(p.findtext(f"{NS}PartNumber"), p.findtext(f"{NS}Size")) for p in parts] == [
        ("1", str(PART)),
        ("2", "1000"),
    ]
    uploads = await s3.send("GET", "/pockity?uploads")
    assert [u.findtext(f"{NS}UploadId") for u in fromstring(uploads.content).findall(f"{NS}Upload")] == [upload_id]
    assert await stored_rows(app, user.id) == {}  # nothing visible before completion

    done = await _complete(s3, "big/file.bin", upload_id, [(1, e1), (2, e2)])
    assert done.status_code == 200, done.text
    digests = hashlib.md5(one).digest() + hashlib.md5(two).digest()
    expected_etag = f'"{hashlib.md5(digests).hexdigest()}-2"'
    assert fromstring(done.content).findtext(f"{NS}ETag") == expected_etag
    assert await stored_rows(app, user.id) == {"big/file.bin": PART + 1000}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (PART + 1000, 0, 1)
    assert await _open_uploads(app, user.id) == []

    got = await s3.send("GET", "/pockity/big/file.bin")
    assert got.status_code == 200 and got.content == one + two
    assert got.headers["etag"] == expected_etag and got.headers["content-type"] == "text/plain"
    assert (got.headers["x-amz-meta-owner"], got.headers["cache-control"]) == ("Ann", "no-cache")
    rest = await client.get("/api/storage/files/big/file.bin/content", headers=user.headers)
    assert rest.status_code == 200 and rest.content == one + two

    second = await s3.send("GET", "/pockity/big/file.bin?partNumber=2")
    assert (second.status_code, second.content) == (206, two)
    assert second.headers["content-range"] == f"bytes {PART}-{PART + 999}/{PART + 1000}"
    assert second.headers["x-amz-mp-parts-count"] == "2"
    head = await s3.send("HEAD", "/pockity/big/file.bin?partNumber=1")
    assert (head.status_code, head.headers["content-length"]) == (206, str(PART))
    beyond = await s3.send("GET", "/pockity/big/file.bin?partNumber=3")
    assert beyond.status_code == 416 and _code(beyond) == "InvalidPartNumber"
    gone = await s3.send("GET", f"/pockity/big/file.bin?uploadId={upload_id}")
    assert gone.status_code == 404 and _code(gone) == "NoSuchUpload"


async def test_completion_refuses_bad_part_lists_and_the_upload_stays_usable(
    s3: S3Client, client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload_id = await _create(s3, "k.bin")
    small = await _part(s3, "k.bin", upload_id, 1, b"s" * 100)
    e2 = await _part(s3, "k.bin", upload_id, 2, b"t" * 100)
    cases = {
        "InvalidPartOrder": [(2, e2), (1, small)],
        "InvalidPart": [(1, '"0123456789abcdef0123456789abcdef"'), (2, e2)],
        "EntityTooSmall": [(1, small), (2, e2)],
    }
    for code, listed in cases.items():
        r = await _complete(s3, "k.bin", upload_id, listed)
        assert (r.status_code, _code(r)) == (400, code), r.text
    missing_part = await _complete(s3, "k.bin", upload_id, [(3, e2)])
    assert _code(missing_part) == "InvalidPart"
    assert await stored_rows(app, user.id) == {}
    assert (await usage(client, user))["bytesReserved"] == 200
    # Part 1 sent again, large enough now: the first try stays counted until the upload ends.
    big = await _part(s3, "k.bin", upload_id, 1, b"B" * PART)
    assert (await usage(client, user))["bytesReserved"] == 200 + PART
    r = await _complete(s3, "k.bin", upload_id, [(1, big), (2, e2)])
    assert r.status_code == 200, r.text
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"]) == (PART + 100, 0)
    wrong_key = await _complete(s3, "other.bin", upload_id, [(1, big)])
    assert wrong_key.status_code == 404 and _code(wrong_key) == "NoSuchUpload"


async def test_a_part_over_quota_stores_nothing_and_parts_count_against_other_uploads(
    s3: S3Client, client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    await set_quota(app, user.id, storage_bytes=PART + 10)
    upload_id = await _create(s3, "q.bin")
    await _part(s3, "q.bin", upload_id, 1, b"x" * PART)
    over = await s3.send("PUT", f"/pockity/q.bin?partNumber=2&uploadId={upload_id}", body=b"y" * 11)
    assert over.status_code == 403 and _code(over) == "QuotaExceeded"
    put = await s3.send("PUT", "/pockity/other.bin", body=b"z" * 11)  # the held part leaves 10 bytes
    assert put.status_code == 403 and _code(put) == "QuotaExceeded"
    assert (await usage(client, user))["bytesReserved"] == PART
    abort = await s3.send("DELETE", f"/pockity/q.bin?uploadId={upload_id}")
    assert abort.status_code == 204
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"]) == (0, 0)
    assert await _open_uploads(app, user.id) == []
    assert (await s3.send("PUT", "/pockity/other.bin", body=b"z" * 11)).status_code == 200


async def test_a_part_failing_its_checksum_is_given_back_and_not_stored(
    s3: S3Client, client: httpx.AsyncClient, user: TestUser, app: FastAPI
) -> None:
    upload_id = await _create(s3, "c.bin")
    r = await s3.send(
        "PUT",
        f"/pockity/c.bin?partNumber=1&uploadId={upload_id}",
        body=b"data",
        headers={"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="},
    )
    assert r.status_code == 400 and _code(r) == "BadDigest"
    assert (await usage(client, user))["bytesReserved"] == 0
    listed = await s3.send("GET", f"/pockity/c.bin?uploadId={upload_id}")
    assert fromstring(listed.content).findall(f"{NS}Part") == []
    parts = await app.state.storage.list_parts(
        physical_key(user.id, "c.bin"), (await _open_uploads(app, user.id))[0].backend_upload_id
    )
    assert parts == []
    assert (await s3.send("DELETE", f"/pockity/c.bin?uploadId={upload_id}")).status_code == 204
    assert await _open_uploads(app, user.id) == []


async def test_another_users_or_keys_upload_is_out_of_reach(
    s3: S3Client, client: httpx.AsyncClient, s3http: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload_id = await _create(s3, "mine.bin")
    etag = await _part(s3, "mine.bin", upload_id, 1, b"m" * 10)
    other = await make_user(client, "other")
    theirs = await s3_client_for(client, s3http, other)
    for method, path, body in (
        ("PUT", f"/pockity/mine.bin?partNumber=2&uploadId={upload_id}", b"x"),
        ("POST", f"/pockity/mine.bin?uploadId={upload_id}", _complete_xml([(1, etag)])),
        ("GET", f"/pockity/mine.bin?uploadId={upload_id}", b""),
        ("DELETE", f"/pockity/mine.bin?uploadId={upload_id}", b""),
    ):
        r = await theirs.send(method, path, body=body)
        assert (r.status_code, _code(r)) == (404, "NoSuchUpload"), (method, r.text)
    listing = await theirs.send("GET", "/pockity?uploads")
    assert fromstring(listing.content).findall(f"{NS}Upload") == []
    second_key = await s3_client_for(client, s3http, user)
    r = await second_key.send("PUT", f"/pockity/mine.bin?partNumber=2&uploadId={upload_id}", body=b"x")
    assert (r.status_code, _code(r)) == (403, "AccessDenied")
    read_only = await s3_client_for(client, s3http, user, scopes=["read"])
    r = await read_only.send("POST", "/pockity/new.bin?uploads")
    assert (r.status_code, _code(r)) == (403, "AccessDenied")
    assert (await usage(client, user))["bytesReserved"] == 10
    r = await _complete(s3, "mine.bin", upload_id, [(1, etag)])
    assert r.status_code == 200 and await stored_rows(app, user.id) == {"mine.bin": 10}
    assert await stored_rows(app, other.id) == {}


async def test_an_idle_upload_expires_aborted_and_released(
    s3: S3Client, client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    upload_id = await _create(s3, "idle.bin")
    await _part(s3, "idle.bin", upload_id, 1, b"i" * 1000)
    backend_id = (await _open_uploads(app, user.id))[0].backend_upload_id
    assert backend_id is not None
    assert await expire_reservations(app) == 1
    assert await _open_uploads(app, user.id) == []
    assert (await usage(client, user))["bytesReserved"] == 0
    r = await s3.send("PUT", f"/pockity/idle.bin?partNumber=2&uploadId={upload_id}", body=b"late")
    assert r.status_code == 404 and _code(r) == "NoSuchUpload"
    from pockity.storage.backends import NoSuchUpload

    try:
        await app.state.storage.list_parts(physical_key(user.id, "idle.bin"), backend_id)
    except NoSuchUpload:
        pass
    else:
        raise AssertionError("the backend's upload should have been aborted")


async def test_upload_part_copy_takes_a_range_of_a_file(s3: S3Client, app: FastAPI, user: TestUser) -> None:
    source = bytes(range(256)) * (PART // 256 + 100)
    assert (await s3.send("PUT", "/pockity/src.bin", body=source)).status_code == 200
    upload_id = await _create(s3, "dst.bin")
    first = await s3.send(
        "PUT",
        f"/pockity/dst.bin?partNumber=1&uploadId={upload_id}",
        headers={"x-amz-copy-source": "pockity/src.bin", "x-amz-copy-source-range": f"bytes=0-{PART - 1}"},
    )
    assert first.status_code == 200, first.text
    e1 = fromstring(first.content).findtext(f"{NS}ETag") or ""
    assert e1 == f'"{hashlib.md5(source[:PART]).hexdigest()}"'
    e2 = await _part(s3, "dst.bin", upload_id, 2, b"tail")
    refused = await s3.send(
        "PUT",
        f"/pockity/dst.bin?partNumber=3&uploadId={upload_id}",
        headers={"x-amz-copy-source": "pockity/src.bin", "x-amz-copy-source-if-match": '"nope"'},
    )
    assert refused.status_code == 412 and _code(refused) == "PreconditionFailed"
    outside = await s3.send(
        "PUT",
        f"/pockity/dst.bin?partNumber=3&uploadId={upload_id}",
        headers={"x-amz-copy-source": "pockity/src.bin", "x-amz-copy-source-range": f"bytes=0-{len(source)}"},
    )
    assert outside.status_code == 416 and _code(outside) == "InvalidRange"
    done = await _complete(s3, "dst.bin", upload_id, [(1, e1), (2, e2)])
    assert done.status_code == 200, done.text
    got = await s3.send("GET", "/pockity/dst.bin")
    assert got.content == source[:PART] + b"tail"


async def test_stored_headers_follow_put_copy_and_replace(s3: S3Client, app: FastAPI, user: TestUser) -> None:
    r = await s3.send(
        "PUT",
        "/pockity/m.txt",
        body=b"meta",
        headers={
            "Content-Type": "text/plain",
            "x-amz-meta-color": "blue",
            "Content-Disposition": 'attachment; filename="m.txt"',
            "Content-Language": "en",
        },
    )
    assert r.status_code == 200
    head = await s3.send("HEAD", "/pockity/m.txt")
    assert (head.headers["x-amz-meta-color"], head.headers["content-language"]) == ("blue", "en")
    assert head.headers["content-disposition"] == 'attachment; filename="m.txt"'
    copied = await s3.send("PUT", "/pockity/copy.txt", headers={"x-amz-copy-source": "pockity/m.txt"})
    assert copied.status_code == 200, copied.text
    assert (await s3.send("HEAD", "/pockity/copy.txt")).headers["x-amz-meta-color"] == "blue"
    replaced = await s3.send(
        "PUT",
        "/pockity/m.txt",
        headers={
            "x-amz-copy-source": "pockity/m.txt",
            "x-amz-metadata-directive": "REPLACE",
            "x-amz-meta-color": "red",
            "Content-Type": "text/markdown",
        },
    )
    assert replaced.status_code == 200, replaced.text
    head = await s3.send("HEAD", "/pockity/m.txt")
    assert (head.headers["x-amz-meta-color"], head.headers["content-type"]) == ("red", "text/markdown")
    assert "content-language" not in head.headers
    assert head.headers["etag"] == f'"{hashlib.md5(b"meta").hexdigest()}"'
    assert await stored_rows(app, user.id) == {"m.txt": 4, "copy.txt": 4}
    too_much = await s3.send("PUT", "/pockity/big-meta.txt", body=b"x", headers={"x-amz-meta-a": "v" * 2100})
    assert too_much.status_code == 400 and _code(too_much) == "MetadataTooLarge"
    plain = await s3.send("PUT", "/pockity/m.txt", body=b"new")  # a new PUT replaces the metadata too
    assert plain.status_code == 200
    assert "x-amz-meta-color" not in (await s3.send("HEAD", "/pockity/m.txt")).headers
    refused = await s3.send(
        "PUT",
        "/pockity/copy2.txt",
        headers={"x-amz-copy-source": "pockity/m.txt", "x-amz-copy-source-if-none-match": plain.headers["etag"]},
    )
    assert refused.status_code == 412 and _code(refused) == "PreconditionFailed"
