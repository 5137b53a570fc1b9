"""One contract, every backend: the same cases run on local disk and on a real S3 server (Ceph RGW)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from pockity.storage.backends import base, local, s3
from pockity.storage.backends.base import (
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    StorageBackend,
    StorageUnavailable,
)
from pockity.storage.backends.local import LocalBackend
from pockity.storage.backends.s3 import S3Backend
from tests.fixtures.s3 import S3Server

MIB = 1024 * 1024
CONFORMING: tuple[type[StorageBackend], ...] = (LocalBackend, S3Backend)  # mypy checks the signatures


class OverQuota(Exception):
    """Stands for the caller stopping an upload from inside its chunk iterator."""


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def failing_after(nbytes: int) -> AsyncIterator[bytes]:
    async for chunk in chunks_of(b"x" * nbytes, MIB):
        yield chunk
    raise OverQuota


async def put(backend: StorageBackend, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
    return await backend.put_stream(key, chunks_of(data), content_type=content_type, size_hint=len(data))


async def read(
    backend: StorageBackend, key: str, start: int | None = None, end: int | None = None
) -> tuple[ObjectInfo, bytes]:
    info, body = await backend.open_range(key, start, end)
    return info, b"".join([chunk async for chunk in body])


async def keys_of(backend: StorageBackend, prefix: str, start_after: str | None = None) -> list[str]:
    return [info.key async for info in backend.iter_objects(prefix, start_after)]


# --- the contract ------------------------------------------------------------------------------------


def test_implements_the_protocol(backend: StorageBackend) -> None:
    assert isinstance(backend, StorageBackend) and backend.name in ("local", "s3")


async def test_copy_keeps_bytes_and_content_type(backend: StorageBackend, prefix: str) -> None:
    data = random.randbytes(300_000)
    await put(backend, prefix + "copy/src.bin", data, "image/png")
    copied = await backend.copy(prefix + "copy/src.bin", prefix + "copy/dst.bin")
    assert (copied.key, copied.size, copied.etag) == (prefix + "copy/dst.bin", len(data), hashlib.md5(data).hexdigest())
    info, body = await read(backend, prefix + "copy/dst.bin")
    assert body == data and info.content_type == "image/png"
    await put(backend, prefix + "copy/src.bin", b"changed")  # the copy is its own object
    assert (await read(backend, prefix + "copy/dst.bin"))[1] == data
    with pytest.raises(ObjectNotFound):
        await backend.copy(prefix + "copy/missing", prefix + "copy/other")
    assert await keys_of(backend, prefix + "copy/") == [prefix + "copy/dst.bin", prefix + "copy/src.bin"]


def test_only_the_local_backend_serves_its_own_signed_urls(backend: StorageBackend) -> None:
    assert isinstance(backend, base.SignedEndpoints) == (backend.name == "local")


async def test_put_head_and_read_back(backend: StorageBackend, prefix: str) -> None:
    data = b"hello, pockity\n" * 100
    stored = await put(backend, prefix + "greeting.txt", data, "text/plain")
    head = await backend.head(prefix + "greeting.txt")
    assert stored.size == head.size == len(data)
    assert stored.etag == head.etag == hashlib.md5(data).hexdigest()  # single part: the MD5, no quotes
    assert head.content_type == "text/plain"
    assert head.last_modified.tzinfo is not None
    assert abs(head.last_modified - datetime.now(UTC)) < timedelta(minutes=5)
    info, body = await read(backend, prefix + "greeting.txt")
    assert body == data and info.size == len(data)


async def test_empty_object_and_default_content_type(backend: StorageBackend, prefix: str) -> None:
    stored = await put(backend, prefix + "empty", b"")
    assert stored.size == 0 and stored.etag == hashlib.md5(b"").hexdigest()
    head = await backend.head(prefix + "empty")
    assert head.size == 0 and head.content_type == base.DEFAULT_CONTENT_TYPE
    assert (await read(backend, prefix + "empty"))[1] == b""
    with pytest.raises(InvalidRange):  # no byte of an empty object can be addressed
        await backend.open_range(prefix + "empty", None, 5)


async def test_replace_keeps_only_the_new_content(backend: StorageBackend, prefix: str) -> None:
    await put(backend, prefix + "doc", b"first version", "text/plain")
    await put(backend, prefix + "doc", b"second", "application/json")
    head = await backend.head(prefix + "doc")
    assert (head.size, head.content_type) == (6, "application/json")
    assert (await read(backend, prefix + "doc"))[1] == b"second"
    assert await keys_of(backend, prefix) == [prefix + "doc"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 9, slice(0, 10)),  # first bytes
        (40, 59, slice(40, 60)),  # middle
        (90, None, slice(90, 100)),  # from an offset to the end
        (None, 5, slice(95, 100)),  # suffix: the last 5 bytes
        (95, 1000, slice(95, 100)),  # an end past the object is clamped, as in HTTP
        (None, 1000, slice(0, 100)),  # a suffix longer than the object is all of it
    ],
)
async def test_ranges(
    backend: StorageBackend, prefix: str, start: int | None, end: int | None, expected: slice
) -> None:
    data = bytes(range(100))
    await put(backend, prefix + "r", data)
    info, body = await read(backend, prefix + "r", start, end)
    assert body == data[expected]
    assert info.size == 100  # the whole object's size, whatever the range


async def test_unsatisfiable_range(backend: StorageBackend, prefix: str) -> None:
    await put(backend, prefix + "r", b"0123456789")
    with pytest.raises(InvalidRange):
        await backend.open_range(prefix + "r", 10, 20)


async def test_missing_object(backend: StorageBackend, prefix: str) -> None:
    with pytest.raises(ObjectNotFound) as exc_info:
        await backend.head(prefix + "nope")
    assert (exc_info.value.status, exc_info.value.code) == (404, "file_not_found")
    with pytest.raises(ObjectNotFound):
        await backend.open_range(prefix + "nope", 0, 10)


async def test_delete_is_idempotent(backend: StorageBackend, prefix: str) -> None:
    await put(backend, prefix + "d/x", b"x")
    await backend.delete(prefix + "d/x")
    with pytest.raises(ObjectNotFound):
        await backend.head(prefix + "d/x")
    await backend.delete(prefix + "d/x")
    await backend.delete(prefix + "never/existed")


async def test_delete_many_in_batches(backend: StorageBackend, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "DELETE_BATCH", 2)
    monkeypatch.setattr(local, "DELETE_BATCH", 2)
    keys = [f"{prefix}k{i}" for i in range(5)]
    for key in keys:
        await put(backend, key, key.encode())
    assert await backend.delete_many([*keys, prefix + "missing"]) == {}
    assert await keys_of(backend, prefix) == []


TRICKY_KEYS = ["a/b", "a-b", "a/c", "a0", "a/b0", "a/b-c", "a b", "A", "z", "é", "ü/ß", "日本/語.txt", "😀", "a/d/e"]


async def test_iter_objects_in_key_byte_order(backend: StorageBackend, prefix: str) -> None:
    for key in TRICKY_KEYS:
        await put(backend, prefix + key, key.encode())
    expected = sorted((prefix + k for k in TRICKY_KEYS), key=lambda k: k.encode())
    infos = [info async for info in backend.iter_objects(prefix)]
    assert [i.key for i in infos] == expected
    assert all(i.size == len(i.key[len(prefix) :].encode()) and i.last_modified.tzinfo for i in infos)

    assert await keys_of(backend, prefix, start_after=prefix + "a/b") == expected[expected.index(prefix + "a/b") + 1 :]
    after_dir = [k for k in expected if k > prefix + "a/zzz"]  # skips everything under "a/"
    assert await keys_of(backend, prefix, start_after=prefix + "a/zzz") == after_dir
    assert await keys_of(backend, prefix, start_after="") == expected
    assert await keys_of(backend, prefix + "a/") == [prefix + k for k in ("a/b", "a/b-c", "a/b0", "a/c", "a/d/e")]


async def test_iter_objects_pages_lazily(backend: StorageBackend, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "LIST_PAGE", 2)
    monkeypatch.setattr(local, "INFO_BATCH", 2)
    keys = [f"{prefix}p/{i:02d}" for i in range(7)]
    for key in keys:
        await put(backend, key, b".")
    assert await keys_of(backend, prefix) == keys
    assert await keys_of(backend, prefix, start_after=keys[2]) == keys[3:]
    objects = backend.iter_objects(prefix)
    assert (await anext(objects)).key == keys[0]
    await objects.aclose()  # type: ignore[attr-defined]


async def test_prefix_confinement(backend: StorageBackend, prefix: str) -> None:
    for key in ("users/1/x", "users/1/y/z", "users/10/x", "users/2/x", "users/01"):
        await put(backend, prefix + key, b".")
    assert await keys_of(backend, prefix + "users/1/") == [prefix + "users/1/x", prefix + "users/1/y/z"]
    # Without the slash it is a plain string prefix, as in S3.
    assert await keys_of(backend, prefix + "users/1") == [
        prefix + k for k in ("users/1/x", "users/1/y/z", "users/10/x")
    ]
    assert await keys_of(backend, prefix + "users/3/") == []
    assert await keys_of(backend, prefix + "users//") == []


async def test_multipart_upload_round_trips(backend: StorageBackend, prefix: str) -> None:
    data = random.Random(7).randbytes(12 * MIB + 12345)
    # Odd chunk sizes, so part boundaries fall inside chunks.
    stored = await backend.put_stream(prefix + "big.bin", chunks_of(data, MIB + 7), content_type=None)
    assert stored.size == len(data)
    if isinstance(backend, S3Backend):
        assert stored.etag.endswith("-3")  # 5 + 5 + 2.x MiB parts
    head = await backend.head(prefix + "big.bin")
    assert head.size == len(data) and head.etag == stored.etag
    _, body = await read(backend, prefix + "big.bin")
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    _, tail = await read(backend, prefix + "big.bin", 10 * MIB, None)
    assert tail == data[10 * MIB :]


@pytest.mark.parametrize("nbytes", [1000, 6 * MIB, 11 * MIB], ids=["single", "multipart", "three-parts"])
async def test_error_in_chunks_leaves_nothing(backend: StorageBackend, prefix: str, nbytes: int) -> None:
    with pytest.raises(OverQuota):  # the caller's own exception, unchanged
        await backend.put_stream(prefix + "partial", failing_after(nbytes), content_type=None)
    with pytest.raises(ObjectNotFound):
        await backend.head(prefix + "partial")
    await put(backend, prefix + "kept", b"old")
    with pytest.raises(OverQuota):
        await backend.put_stream(prefix + "kept", failing_after(nbytes), content_type=None)
    assert (await read(backend, prefix + "kept"))[1] == b"old"  # a failed replace keeps the old object
    if isinstance(backend, S3Backend):
        pending = await backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=prefix)
        assert pending.get("Uploads", []) == []
    else:
        assert isinstance(backend, LocalBackend)
        assert list((backend._tmp).iterdir()) == []


# --- S3 only -----------------------------------------------------------------------------------------


async def test_s3_uploads_parts_while_reading_at_most_two_at_once(
    s3_backend: S3Backend, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_backend.client
    upload_part = client.upload_part
    running, peak, reads_during_upload = 0, 0, 0

    async def counting_upload_part(**kwargs: Any) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.2)  # a slow network: reading must go on meanwhile
            return await upload_part(**kwargs)
        finally:
            running -= 1

    async def body() -> AsyncIterator[bytes]:
        nonlocal reads_during_upload
        async for chunk in chunks_of(b"z" * (21 * MIB), MIB):
            await asyncio.sleep(0.01)  # a request body waits for the network, letting the uploads run
            reads_during_upload += running > 0
            yield chunk

    monkeypatch.setattr(client, "upload_part", counting_upload_part)
    stored = await s3_backend.put_stream(prefix + "p", body(), content_type=None)
    assert stored.size == 21 * MIB and stored.etag.endswith("-5")
    assert peak == 2 and reads_during_upload > 0


async def test_s3_cancelled_upload_is_aborted(s3_backend: S3Backend, prefix: str) -> None:
    reached = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(b"y" * 6 * MIB, MIB):
            yield chunk
        reached.set()  # the multipart upload exists and its first part is on its way
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(s3_backend.put_stream(prefix + "c", stalls(), content_type=None))
    await asyncio.wait_for(reached.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pending = await s3_backend.client.list_multipart_uploads(Bucket=s3_backend.bucket, Prefix=prefix)
    assert pending.get("Uploads", []) == []


async def test_s3_abort_stale_uploads(s3_backend: S3Backend, prefix: str) -> None:
    client, bucket = s3_backend.client, s3_backend.bucket
    for key in ("left/1", "left/2"):
        await client.create_multipart_upload(Bucket=bucket, Key=prefix + key)
    assert await s3_backend.abort_stale_uploads(timedelta(hours=1), prefix) == 0  # too young
    assert await s3_backend.abort_stale_uploads(timedelta(seconds=-60), prefix) == 2
    assert (await client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)).get("Uploads", []) == []


async def test_s3_presigned_get(s3_backend: S3Backend, prefix: str) -> None:
    key = prefix + "dir/naïve file?.txt"
    await put(s3_backend, key, b"presigned body", "text/plain")
    url = s3_backend.presign_get(key, 60, filename='report "final".txt')
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url  # SigV4, never SigV2
    async with httpx.AsyncClient() as http:
        ok = await http.get(url)
        assert ok.status_code == 200 and ok.content == b"presigned body"
        assert ok.headers["content-disposition"].startswith("attachment;")
        assert (await http.get(url[:-1] + ("0" if url[-1] != "0" else "1"))).status_code == 403
        assert (await http.get(url.replace("na%C3%AFve", "naive"))).status_code == 403  # another key
        short = s3_backend.presign_get(key, 1)
        await asyncio.sleep(2.5)
        assert (await http.get(short)).status_code == 403


async def test_s3_presigned_get_of_awkward_names(s3_backend: S3Backend, prefix: str) -> None:
    """kit/sigv4's URLs are accepted by a real S3 for names that need every kind of encoding."""
    names = [
        "plain.txt",
        "with space/two  spaces.txt",
        "naïve/été ☀/日本語.png",
        "emoji 😀.gif",
        "specials/!$&'()*+,;=:@[].txt",
        "tilde~/a_b-c.d",
        "percent%20literal",
        'quote"q.txt',
    ]
    async with httpx.AsyncClient() as http:
        for i, name in enumerate(names):
            key = prefix + name
            await put(s3_backend, key, f"body {i}".encode(), "text/plain")
            for filename in (None, name.rsplit("/", 1)[-1]):
                r = await http.get(s3_backend.presign_get(key, 60, filename=filename))
                assert r.status_code == 200 and r.content == f"body {i}".encode(), (name, filename, r.text[:300])
                if filename:
                    assert r.headers["content-disposition"].startswith("attachment;")


async def test_s3_wrong_secret_is_unavailable(s3_server: S3Server, s3_bucket: str) -> None:
    kwargs = {**s3_server.backend_kwargs(), "secret_key": "wrong-SECRET-123"}
    broken = S3Backend(bucket=s3_bucket, max_attempts=1, **kwargs)
    with pytest.raises(StorageUnavailable) as exc_info:
        await broken.start()  # HeadBucket: 403 SignatureDoesNotMatch
    assert "SECRET" not in str(exc_info.value) and exc_info.value.status == 503


def _unreachable(**overrides: object) -> S3Backend:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kwargs: dict[str, Any] = {
        "bucket": "b",
        "region": "us-east-1",
        "endpoint_url": f"http://127.0.0.1:{port}",
        "access_key": "AK",
        "secret_key": "SECRET-never-shown",
        "connect_timeout": 1,
        "read_timeout": 2,
        "max_attempts": 1,
    }
    return S3Backend(**{**kwargs, **overrides})


async def test_s3_unreachable_endpoint_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await _unreachable().start()
    backend = _unreachable(ensure_bucket=False)  # boots without touching the network
    await backend.start()
    try:
        calls = (
            backend.ping(),
            backend.head("k"),
            put(backend, "k", b"data"),
            backend.delete("k"),
            keys_of(backend, ""),
        )
        for call in calls:
            with pytest.raises(StorageUnavailable) as exc_info:
                await call
            assert "SECRET" not in str(exc_info.value) and exc_info.value.code == "storage_unavailable"
    finally:
        await backend.close()
    assert time.monotonic() - started < 10


# --- local only --------------------------------------------------------------------------------------


@pytest.fixture
async def fresh_local(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(tmp_path / "store", "https://files.example/", b"k" * 32)
    await backend.start()
    return backend


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/etc/passwd", "a\\..\\b", "a\x00b", "", "a//b", "./a", "a/.", "a/", "\udc80"]
)
async def test_local_refuses_unsafe_keys(fresh_local: LocalBackend, key: str) -> None:
    with pytest.raises(InvalidKey):
        await put(fresh_local, key, b"x")
    for call in (fresh_local.head(key), fresh_local.open_range(key), fresh_local.delete(key)):
        with pytest.raises(InvalidKey):
            await call
    assert await fresh_local.delete_many([key]) == {key: InvalidKey.message}


async def test_local_refuses_symlinks_out_of_the_root(fresh_local: LocalBackend, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (fresh_local._data / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        await fresh_local.head("link/secret")
    with pytest.raises(InvalidKey):
        await put(fresh_local, "link/new", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert await keys_of(fresh_local, "") == []  # listing does not follow symlinks either


async def test_local_key_clashing_with_a_directory(fresh_local: LocalBackend) -> None:
    await put(fresh_local, "a/b", b"x")
    with pytest.raises(InvalidKey):
        await put(fresh_local, "a", b"y")
    with pytest.raises(ObjectNotFound):
        await fresh_local.head("a")
    await fresh_local.delete("a")  # a "directory" is not an object: nothing to do
    assert await keys_of(fresh_local, "") == ["a/b"]


async def test_local_signed_urls(fresh_local: LocalBackend) -> None:
    url = urlsplit(fresh_local.presign_get("dir/naïve file.txt", 60, filename="r.txt"))
    assert url.geturl().startswith("https://files.example/api/storage/signed/dir/na%C3%AFve%20file.txt?")
    key = unquote(url.path.removeprefix("/api/storage/signed/"))
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    verify = fresh_local.verify_download
    assert verify(key, q["expires"], q["signature"], filename=q["filename"])
    assert not verify(key, q["expires"], q["signature"])  # the filename is signed too
    assert not verify(key + "x", q["expires"], q["signature"], filename="r.txt")
    assert not verify(key, str(int(q["expires"]) + 1), q["signature"], filename="r.txt")
    flipped = q["signature"][:-1] + ("1" if q["signature"].endswith("0") else "0")  # always a different signature
    assert not verify(key, q["expires"], flipped, filename="r.txt")
    assert not verify(key, "soon", q["signature"], filename="r.txt")
    expired = parse_qs(urlsplit(fresh_local.presign_get(key, -5)).query)
    assert not verify(key, expired["expires"][0], expired["signature"][0])
