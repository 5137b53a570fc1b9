"""The S3 requests on every file's hot path, signed by Pockity and sent on its own aiohttp pool.

GetObject (every download) and a small PutObject (every small upload) through botocore cost about as much
CPU as the rest of the request together: request building, a dozen event hooks, the user-agent string,
awscrt's signer, response parsing (bench/results/s3-profile.md). Here they are presigned URLs from
`kit.sigv4.Presigner` (UNSIGNED-PAYLOAD, integrity by `Content-MD5`, which S3 checks) on a plain keep-alive
pool, with botocore's retry policy in small: connection failures and 5xx answers are retried, up to the
configured attempts with jittered exponential backoff.

A committing write keeps the rule the botocore path keeps (`s3._note_attempt`): NothingStored only when no
attempt could have reached S3 — the connection was never made. aiohttp's own hidden retry of a request whose
reused connection closed is turned off on this pool for the same reason (see `s3._SeenRetriesSession`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import aiohttp

from pockity.kit.sigv4 import Presigner
from pockity.storage.backends.base import (
    InvalidRange,
    NothingStored,
    ObjectInfo,
    ObjectNotFound,
    StorageUnavailable,
)

URL_LIFETIME = 900  # seconds: the longest a request's retries may take
_RETRIED_STATUSES = frozenset({500, 502, 503, 504})
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_OBJECT_MISSING = frozenset({b"NoSuchKey", b"NotFound"})
READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """An S3 answer whose body is still to be read (or released)."""

    status: int
    headers: Mapping[str, str]
    response: aiohttp.ClientResponse


def _never_connected(exc: BaseException) -> bool:
    return isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))


def _date(value: str | None) -> datetime:
    try:
        return parsedate_to_datetime(value).astimezone(UTC) if value else datetime.now(UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


def info_from(key: str, headers: Mapping[str, str], size: int) -> ObjectInfo:
    """ObjectInfo from an answer's headers (Last-Modified, or the Date of a PUT's answer)."""
    return ObjectInfo(
        key=key,
        size=size,
        etag=headers.get("ETag", "").strip('"'),
        content_type=headers.get("Content-Type"),
        last_modified=_date(headers.get("Last-Modified") or headers.get("Date")),
    )


class SignedHttp:
    """GET and single PUT of objects in one bucket, presigned, on the given session."""

    def __init__(self, session: aiohttp.ClientSession, presigner: Presigner, bucket_path: str, attempts: int) -> None:
        session._retry_connection = False  # a private aiohttp flag; tests/storage/test_s3.py proves it holds
        self._session = session
        self._presigner = presigner
        self._bucket_path = bucket_path
        self._attempts = max(1, attempts)

    def _url(self, method: str, key: str) -> str:
        return self._presigner.presign(method, f"/{self._bucket_path}/{quote(key, safe='/~')}", URL_LIFETIME)

    async def _send(self, what: str, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Answer:
        """One request with retries; a 5xx still standing after the last attempt is returned to the caller."""
        sent = False
        for attempt in range(1, self._attempts + 1):
            try:
                resp = await self._session.request(method, url, headers=headers, data=body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                sent = sent or not _never_connected(exc)
                if attempt == self._attempts:
                    message = f"S3 {what} failed: {type(exc).__name__}."
                    if not sent:
                        raise NothingStored(message) from exc
                    raise StorageUnavailable(message) from exc
            else:
                if resp.status not in _RETRIED_STATUSES or attempt == self._attempts:
                    return Answer(resp.status, resp.headers, resp)
                sent = True
                resp.release()
            await asyncio.sleep(random.uniform(0, min(20.0, 2.0 ** (attempt - 1))))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    async def _refusal(self, what: str, answer: Answer, *, object_op: bool) -> Exception:
        """The error for an answer that is not a success, its body read for S3's error code."""
        try:
            body = await answer.response.read()
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            answer.response.release()
        found = _CODE.search(body)
        code = found.group(1) if found else b""
        if object_op and answer.status == 404 and (code in _OBJECT_MISSING or not body):
            return ObjectNotFound()
        if object_op and (answer.status == 416 or code == b"InvalidRange"):
            return InvalidRange()
        return StorageUnavailable(f"S3 {what} failed: {code.decode() or 'error'} (HTTP {answer.status}).")

    async def get(self, key: str, byte_range: str | None) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """GetObject (with a Range header); the body streams in chunks (close the iterator if abandoned)."""
        headers = {"Range": byte_range} if byte_range else {}
        answer = await self._send("GetObject", "GET", self._url("GET", key), headers, None)
        if answer.status not in (200, 206):
            raise await self._refusal("GetObject", answer, object_op=True)
        total = answer.headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(answer.headers.get("Content-Length", "0"))
        return info_from(key, answer.headers, size), self._stream(answer.response)

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    chunk = await response.content.read(READ_CHUNK)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise StorageUnavailable(f"S3 GetObject failed: {type(exc).__name__}.") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            response.release()

    async def put(self, key: str, body: bytes, content_type: str) -> ObjectInfo:
        """PutObject of a body held in memory (a single-part upload), checked by S3 against its MD5."""
        headers = {
            "Content-Type": content_type,
            "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),  # noqa: S324 - S3's integrity check
        }
        answer = await self._send("PutObject", "PUT", self._url("PUT", key), headers, body)
        if answer.status != 200:
            raise await self._refusal("PutObject", answer, object_op=False)
        answer.response.release()
        return replace(info_from(key, answer.headers, len(body)), content_type=content_type)
