"""S3 storage through aiobotocore — the only module in Pockity that imports the AWS SDK."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

from pockity.kit.sigv4 import Presigner
from pockity.storage.backends.base import (
    DEFAULT_CONTENT_TYPE,
    InvalidParts,
    InvalidRange,
    NoSuchUpload,
    NothingStored,
    ObjectInfo,
    ObjectNotFound,
    PartInfo,
    StorageUnavailable,
    content_disposition,
    held_back,
    range_header,
)
from pockity.storage.backends.s3_http import SignedHttp

log = logging.getLogger("pockity.storage.s3")

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3 rejects smaller parts (except the last one)
MAX_PARTS_IN_FLIGHT = 2  # one uploading while the next is read, plus one of slack: bounded memory
DELETE_BATCH = 1000  # the DeleteObjects maximum
LIST_PAGE = 1000  # the ListObjectsV2 maximum
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}


@contextmanager
def _translated(what: str, *, object_op: bool = True) -> Iterator[None]:
    """Turn SDK and network failures into Pockity errors; messages name the operation, never credentials."""
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if object_op and code in _NOT_FOUND_CODES:  # not NoSuchBucket/NoSuchUpload: those are our faults
            raise ObjectNotFound() from exc
        if code == "InvalidRange" or status == 416:
            raise InvalidRange() from exc
        raise StorageUnavailable(f"S3 {what} failed: {code or 'error'} (HTTP {status}).") from exc
    except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
        raise StorageUnavailable(f"S3 {what} failed: {type(exc).__name__}.") from exc


# The writes whose failure may still have stored the object (the others only touch an open multipart upload).
_COMMITTING_WRITES = ("PutObject", "CompleteMultipartUpload")
_SENT = "pockity_sent"  # set in a request's botocore context once one of its attempts may have reached S3


def _never_sent(exc: BaseException | None) -> bool:
    """Whether this attempt failed before the request could reach S3: the connection was never made.
    (EndpointConnectionError also wraps a reset in the middle of a request; only a failed connect counts.)"""
    if isinstance(exc, ConnectTimeoutError):
        return True
    return isinstance(exc, EndpointConnectionError) and isinstance(
        exc.kwargs.get("error"), (aiohttp.ClientConnectorError, socket.gaierror)
    )


def _note_attempt(request_dict: dict[str, Any], caught_exception: BaseException | None = None, **_: Any) -> None:
    """botocore's needs-retry hook, called after every attempt of a committing write: remember whether any
    attempt may have reached S3, and mark the last failure if one did (a retry refused after a read timeout
    does not mean nothing was stored)."""
    context = request_dict["context"]
    if not _never_sent(caught_exception):
        context[_SENT] = True
    elif context.get(_SENT) and caught_exception is not None:
        caught_exception.pockity_sent = True  # type: ignore[attr-defined]


class _SeenRetriesSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session without aiohttp's own retry. aiohttp resends an idempotent request (PUT
    included) on a new connection, out of botocore's sight, when a reused connection closes under it; a
    refused connect on that resend would make a PutObject the gateway may already have stored look as if it
    never reached S3 (NothingStored), and the name would be released with the bytes left behind. Every
    retry goes through botocore instead, where `_note_attempt` sees it."""

    async def _get_session(self, proxy_url: str | None) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession = await super()._get_session(proxy_url)
        session._retry_connection = False  # a private flag, checked by test_s3's dying-gateway test
        return session


@contextmanager
def _committing(what: str) -> Iterator[None]:
    """Translate a committing write's failure: NothingStored when no attempt of it could have reached S3."""
    try:
        with _translated(what):
            yield
    except StorageUnavailable as exc:
        cause = exc.__cause__
        if _never_sent(cause) and not getattr(cause, "pockity_sent", False):
            raise NothingStored(exc.message) from cause
        raise


@contextmanager
def _before_commit(what: str) -> Iterator[None]:
    """Translate a failure of a step before CompleteMultipartUpload: no object exists until then."""
    try:
        with _translated(what):
            yield
    except StorageUnavailable as exc:
        if isinstance(exc, NothingStored):
            raise
        raise NothingStored(exc.message) from exc.__cause__


def _code_of(exc: StorageUnavailable) -> str:
    """S3's error code behind a translated failure ("" for a network failure)."""
    return str(getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code", ""))


def _ssl_context() -> ssl.SSLContext:
    """The TLS trust botocore uses for the same endpoint (AWS_CA_BUNDLE when set), for our own connections."""
    return ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)


def _info(key: str, meta: dict[str, Any], size: int, content_type: str | None = None) -> ObjectInfo:
    last_modified = meta.get("LastModified")
    if not isinstance(last_modified, datetime):
        last_modified = _response_date(meta)
    return ObjectInfo(
        key=key,
        size=size,
        etag=str(meta.get("ETag", "")).strip('"'),
        content_type=content_type,
        last_modified=last_modified.astimezone(UTC),
    )


def _response_date(resp: dict[str, Any]) -> datetime:
    # PutObject/CompleteMultipartUpload return no LastModified; the server's Date header is the closest.
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date).astimezone(UTC) if date else datetime.now(UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


class S3Backend:
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        region: str,
        endpoint_url: str | None,
        access_key: str,
        secret_key: str,
        create_bucket: bool = False,
        part_size: int = 8 * MIB,
        max_pool_connections: int = 20,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        ensure_bucket: bool = True,  # False lets an app boot while S3 is down (health checks then say so)
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self._bucket_path = quote(bucket)
        self._region = region
        self._endpoint_url = (endpoint_url or f"https://s3.{region}.amazonaws.com").rstrip("/")
        # Presigned GETs are signed by our own SigV4 code (the same URLs as botocore's, ~4x cheaper).
        self._keys = (access_key, secret_key)
        self._presigner = Presigner(self._endpoint_url, region=region, access_key=access_key, secret_key=secret_key)
        self._create_bucket = create_bucket
        self._check_bucket = ensure_bucket
        self._part_size = part_size
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            http_session_cls=_SeenRetriesSession,
        )
        self._timeouts = (connect_timeout, read_timeout)
        self._pool_size = max_pool_connections
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._http: aiohttp.ClientSession | None = None  # streams UploadPart bodies (see upload_part)
        self._signed: SignedHttp | None = None  # GetObject and small PutObjects, signed by us (s3_http.py)
        self._attempts = max_attempts

    @property
    def client(self) -> Any:
        """The aiobotocore S3 client (for maintenance tasks and tests); only between start() and close()."""
        if self._client is None:
            raise RuntimeError("S3Backend.start() has not been called")
        return self._client

    async def start(self) -> None:
        """Create the client once and make sure the bucket exists (creating it when allowed)."""
        if self._client is not None:
            return
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                AioSession().create_client(
                    "s3",
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    aws_access_key_id=self._keys[0],
                    aws_secret_access_key=self._keys[1],
                    config=self._config,
                )
            )
            for operation in _COMMITTING_WRITES:
                self._client.meta.events.register(f"needs-retry.s3.{operation}", _note_attempt)
            self._http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(
                        limit=self._pool_size, ssl=_ssl_context() if self._endpoint_url.startswith("https:") else False
                    ),
                    timeout=aiohttp.ClientTimeout(sock_connect=self._timeouts[0], sock_read=self._timeouts[1]),
                    auto_decompress=False,
                )
            )
            self._signed = SignedHttp(self._http, self._presigner, self._bucket_path, self._attempts)
            if self._check_bucket:
                await self._ensure_bucket()
        except BaseException:
            self._client = None
            await stack.aclose()
            raise
        self._stack = stack

    async def _ensure_bucket(self) -> None:
        try:
            with _translated("HeadBucket"):  # as an object operation, a 404 reads as ObjectNotFound
                await self._client.head_bucket(Bucket=self.bucket)
            return
        except ObjectNotFound:
            if not self._create_bucket:
                raise StorageUnavailable(f"The S3 bucket {self.bucket!r} does not exist.") from None
        # us-east-1 is S3's default location and must not be named explicitly.
        where = {} if self._region == "us-east-1" else {"LocationConstraint": self._region}
        with _translated("CreateBucket", object_op=False):
            try:
                await self._client.create_bucket(
                    Bucket=self.bucket, **({"CreateBucketConfiguration": where} if where else {})
                )
            except ClientError as exc:  # another process may have created it since the HEAD
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

    async def close(self) -> None:
        """Close the client and its connection pool."""
        stack, self._stack, self._client, self._http = self._stack, None, None, None
        self._signed = None
        if stack is not None:
            await stack.aclose()

    async def ping(self) -> None:
        """HeadBucket: proves the endpoint answers and the credentials and bucket are right."""
        with _translated("HeadBucket", object_op=False):
            await self.client.head_bucket(Bucket=self.bucket)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str | None,
        size_hint: int | None = None,  # advisory; the body decides single PUT vs multipart
    ) -> ObjectInfo:
        """One PutObject for bodies up to one part, else a multipart upload; nothing remains on error."""
        content_type = content_type or DEFAULT_CONTENT_TYPE
        it = aiter(chunks)
        part, rest, done = await self._next_part(it, b"")
        if done:
            return await self._put_single(key, part, content_type)
        return await self._put_multipart(key, part, rest, it, content_type)

    async def _next_part(self, it: AsyncIterator[bytes], rest: bytes) -> tuple[io.BytesIO, bytes, bool]:
        """Fill one part from the carried-over bytes and the stream; True when the stream has ended.

        A BytesIO goes to botocore as the body as it is (no copy for the HTTP layer, seekable for retries).
        """
        part = io.BytesIO()
        rest = self._fill(part, rest)
        while not rest and part.tell() < self._part_size:
            # The caller's iterator may raise (e.g. over quota): that exception passes through as is.
            chunk = await anext(it, None)
            if chunk is None:
                return part, b"", True
            rest = self._fill(part, chunk)
        return part, rest, False

    def _fill(self, part: io.BytesIO, data: bytes) -> bytes:
        room = self._part_size - part.tell()
        if len(data) <= room:
            part.write(data)
            return b""
        part.write(memoryview(data)[:room])
        return data[room:]

    @property
    def signed(self) -> SignedHttp:
        if self._signed is None:
            raise RuntimeError("S3Backend.start() has not been called")
        return self._signed

    async def _put_single(self, key: str, body: io.BytesIO, content_type: str) -> ObjectInfo:
        return await self.signed.put(key, body.getvalue(), content_type)

    async def _put_multipart(
        self, key: str, part: io.BytesIO, rest: bytes, it: AsyncIterator[bytes], content_type: str
    ) -> ObjectInfo:
        with _before_commit("CreateMultipartUpload"):
            created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        upload_id: str = created["UploadId"]
        in_flight: deque[asyncio.Task[dict[str, Any]]] = deque()
        parts: list[dict[str, Any]] = []
        size = 0
        done = False
        try:
            while part.tell() > 0:
                size += part.tell()
                part.seek(0)
                if len(in_flight) >= MAX_PARTS_IN_FLIGHT:
                    parts.append(await in_flight[0])  # popped only once done, so _abort still sees it
                    in_flight.popleft()
                number = len(parts) + len(in_flight) + 1
                in_flight.append(asyncio.create_task(self._upload_part(key, upload_id, number, part)))
                if done:
                    break
                part, rest, done = await self._next_part(it, rest)
            while in_flight:
                parts.append(await in_flight[0])
                in_flight.popleft()
            with _committing("CompleteMultipartUpload"):
                resp = await self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            await self._abort(key, upload_id, in_flight)
            raise
        if not str(resp.get("ETag", "")).strip('"'):
            # Ceph RGW (Pacific) answers CompleteMultipartUpload with an empty ETag; HEAD has the real one.
            return await self.head(key)
        return _info(key, resp, size, content_type)

    async def _upload_part(self, key: str, upload_id: str, number: int, data: io.BytesIO) -> dict[str, Any]:
        with _before_commit("UploadPart"):
            resp = await self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return {"ETag": resp["ETag"], "PartNumber": number}

    async def _abort(self, key: str, upload_id: str, in_flight: deque[asyncio.Task[dict[str, Any]]]) -> None:
        # Shielded: this also runs when the request was cancelled, and must not leave a pending upload.
        with anyio.move_on_after(30, shield=True):
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            try:
                await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:
                log.warning("could not abort multipart upload %s of %r", upload_id, key, exc_info=True)

    async def abort_stale_uploads(self, older_than: timedelta, prefix: str = "", keep: Collection[str] = ()) -> int:
        """Abort multipart uploads started before now - older_than (left behind when S3 was unreachable
        at the time of the abort, or by a crash), except those in `keep`; returns how many were aborted."""
        cutoff = datetime.now(UTC) - older_than
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        aborted = 0
        while True:
            with _translated("ListMultipartUploads", object_op=False):
                page = await self.client.list_multipart_uploads(**kwargs)
            for up in page.get("Uploads", []):
                if up["Initiated"] <= cutoff and up["UploadId"] not in keep:
                    with _translated("AbortMultipartUpload", object_op=False):
                        await self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                        )
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            kwargs.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])

    async def head(self, key: str) -> ObjectInfo:
        """HeadObject; raises ObjectNotFound."""
        with _translated("HeadObject"):
            resp = await self.client.head_object(Bucket=self.bucket, Key=key)
        return _info(key, resp, int(resp["ContentLength"]), resp.get("ContentType"))

    async def open_range(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """GetObject with a Range header; the body streams in chunks (close the iterator if abandoned)."""
        return await self.signed.get(key, range_header(start, end))

    async def copy(self, source: str, dest: str) -> ObjectInfo:
        """CopyObject within the bucket (metadata copied); S3 copies up to 5 GiB in one request."""
        with _translated("CopyObject"):
            await self.client.copy_object(
                Bucket=self.bucket,
                Key=dest,
                CopySource={"Bucket": self.bucket, "Key": source},
                MetadataDirective="COPY",
            )
        return await self.head(dest)

    async def delete(self, key: str) -> None:
        """DeleteObject (S3 reports success for missing keys too)."""
        with _translated("DeleteObject", object_op=False):
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        """DeleteObjects in batches of 1000; returns the per-key failures S3 reported."""
        failures: dict[str, str] = {}
        for i in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + DELETE_BATCH]]
            with _translated("DeleteObjects", object_op=False):
                resp = await self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            for err in resp.get("Errors", []):
                failures[err["Key"]] = f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip(": ")
        return failures

    async def create_multipart(self, key: str, content_type: str) -> str:
        """CreateMultipartUpload for a client that sends the parts itself."""
        with _translated("CreateMultipartUpload", object_op=False):
            created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        return str(created["UploadId"])

    async def presign_part(self, key: str, upload_id: str, part_number: int, size: int, expires_in: int) -> str:
        """A presigned UploadPart URL; Content-Length is a signed header, so only exactly `size` bytes pass."""
        with _translated("PresignUploadPart", object_op=False):
            return str(
                await self.client.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": self.bucket,
                        "Key": key,
                        "UploadId": upload_id,
                        "PartNumber": part_number,
                        "ContentLength": size,
                    },
                    ExpiresIn=expires_in,
                )
            )

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> ObjectInfo:
        """CompleteMultipartUpload; S3's refusal of the part list becomes InvalidParts (the client's error)."""
        listed = [{"PartNumber": n, "ETag": etag if etag.startswith('"') else f'"{etag}"'} for n, etag in parts]
        try:
            with _translated("CompleteMultipartUpload", object_op=False):
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
                )
        except StorageUnavailable as exc:
            cause = exc.__cause__
            code = str(getattr(cause, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "NoSuchUpload", "MalformedXML"):
                raise InvalidParts(details={"s3Code": code}) from None
            raise
        return await self.head(key)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload that is already gone is fine."""
        try:
            with _translated("AbortMultipartUpload", object_op=False):
                await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageUnavailable as exc:
            if str(getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code", "")) != "NoSuchUpload":
                raise

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, size: int, chunks: AsyncIterator[bytes]
    ) -> str:
        """UploadPart with the body streamed as it arrives (never buffered: a part may be 5 GiB).

        botocore signs the payload's SHA-256 over plain HTTP, which needs the whole body first, so the request
        goes out presigned (UNSIGNED-PAYLOAD) on our own connection pool, with its exact Content-Length. The last
        piece is held back until `chunks` ends cleanly (`held_back`), so a body that fails a check stores no part.
        """
        if self._http is None:
            raise RuntimeError("S3Backend.start() has not been called")
        url = self._presigner.presign(
            "PUT",
            f"/{self._bucket_path}/{quote(key, safe='/~')}",
            3600,
            {"partNumber": str(part_number), "uploadId": upload_id},
        )
        failed: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            try:
                async for piece in held_back(chunks):
                    yield piece
            except BaseException as exc:
                failed.append(exc)
                raise

        try:
            async with self._http.put(url, data=body(), headers={"Content-Length": str(size)}) as resp:
                answer = await resp.read()
                if resp.status == 200:
                    return resp.headers.get("ETag", "").strip('"')
        except (aiohttp.ClientError, TimeoutError) as exc:
            if failed:  # our own body stopped the request: its error, not the connection's
                raise failed[0] from None
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise NothingStored(f"S3 UploadPart failed: {type(exc).__name__}.") from exc
            raise StorageUnavailable(f"S3 UploadPart failed: {type(exc).__name__}.") from exc
        if failed:
            raise failed[0]
        if b"<Code>NoSuchUpload</Code>" in answer:
            raise NoSuchUpload()
        raise StorageUnavailable(f"S3 UploadPart failed (HTTP {resp.status}).")

    async def copy_part(self, source: str, key: str, upload_id: str, part_number: int, first: int, last: int) -> str:
        """UploadPartCopy of bytes first..last of `source` (inside S3: the bytes never pass through Pockity)."""
        try:
            with _translated("UploadPartCopy"):
                resp = await self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=part_number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceRange=f"bytes={first}-{last}",
                )
        except StorageUnavailable as exc:
            if _code_of(exc) == "NoSuchUpload":
                raise NoSuchUpload() from None
            raise
        return str(resp["CopyPartResult"]["ETag"]).strip('"')

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        """ListParts, every page."""
        parts: list[PartInfo] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        while True:
            try:
                with _translated("ListParts", object_op=False):
                    page = await self.client.list_parts(**kwargs)
            except StorageUnavailable as exc:
                if _code_of(exc) == "NoSuchUpload":
                    raise NoSuchUpload() from None
                raise
            for part in page.get("Parts", []):
                parts.append(
                    PartInfo(
                        int(part["PartNumber"]), int(part["Size"]), str(part["ETag"]).strip('"'), part["LastModified"]
                    )
                )
            if not page.get("IsTruncated"):
                return parts
            kwargs["PartNumberMarker"] = page["NextPartNumberMarker"]

    async def presign_post(
        self, key: str, *, max_size: int, content_type: str, expires_in: int, upload_id: str
    ) -> tuple[str, dict[str, str]]:
        """An S3 POST policy bound to this key, its content type and at most `max_size` bytes."""
        with _translated("PresignPost", object_op=False):
            post = await self.client.generate_presigned_post(
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": content_type},
                Conditions=[{"Content-Type": content_type}, ["content-length-range", 0, max_size]],
                ExpiresIn=expires_in,
            )
        return str(post["url"]), {k: str(v) for k, v in post["fields"].items()}

    def presign_get(
        self, key: str, expires_in: int, *, filename: str | None = None, now: datetime | None = None
    ) -> str:
        """A SigV4 presigned GET URL, signed locally (no network, no event loop), byte-for-byte botocore's."""
        path = f"/{self._bucket_path}/{quote(key, safe='/~')}"
        params = {"response-content-disposition": content_disposition(filename)} if filename else None
        return self._presigner.presign("GET", path, expires_in, params, now=now)

    async def iter_objects(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2, 1000 keys per page, one page in memory at a time."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            with _translated("ListObjectsV2", object_op=False):
                page = await self.client.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                yield _info(item["Key"], item, int(item["Size"]))
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)
