"""The S3 API's operations: an ASGI app beside the REST API, sharing its database, storage and limits.

Each request: addressing (path-style `/{bucket}/{key}`, or virtual-hosted `{bucket}.{S3_API_DOMAIN}`), the
signature and key (auth.py), the tenant's fair-sharing limit, then one operation that calls the same storage
services as the REST API — so a file written here is the REST API's file: the same row, quota and usage.
Errors are S3's XML (`<Error><Code>`), HEAD errors without a body; Pockity's own errors are translated
(`errors_map.py`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from pockity.auth.schemas import Principal
from pockity.errors import PockityError
from pockity.kit import media_types
from pockity.ratelimit import checks
from pockity.s3api import checksums, chunked, xml
from pockity.s3api.auth import Authenticated, S3Request, authenticate
from pockity.s3api.errors import S3Error
from pockity.s3api.errors_map import translate
from pockity.s3api.sigv4 import Payload, parse_query_pairs
from pockity.storage import copies, deletes, service, uploads
from pockity.storage.backends import StorageUnavailable

log = logging.getLogger("pockity.s3api")
MAX_KEYS = 1000
Handler = Callable[["Call"], Awaitable[Response]]


class Call:
    """One S3 request in progress: what arrived, who sent it, and the shared application state."""

    def __init__(self, request: Request, s3: S3Request, bucket: str | None, key: str | None, state: Any) -> None:
        self.request, self.s3, self.bucket, self.key, self.state = request, s3, bucket, key, state
        self.params = dict(s3.query)
        self.auth: Authenticated | None = None

    @property
    def principal(self) -> Principal:
        assert self.auth is not None
        return self.auth.principal


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        found[name] = f"{found[name]},{value}" if name in found else value
    return found


def _xml(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/xml")


def _error(err: S3Error, method: str, resource: str, request_id: str) -> Response:
    headers = {"x-amz-request-id": request_id}
    if method == "HEAD":  # HEAD answers carry no body
        return Response(status_code=err.status, headers=headers)
    return Response(
        xml.error_document(err, resource, request_id), err.status, headers=headers, media_type="application/xml"
    )


class S3App:
    """The ASGI app of the S3 listener; `main` is the REST app whose state (db, storage, keyring) it uses."""

    def __init__(self, main: Any) -> None:
        self.main = main

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan belongs to the main app
            await self.main(scope, receive, send)
            return
        request = Request(scope, receive)
        request_id = uuid.uuid4().hex[:16].upper()
        state = self.main.state
        raw_path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        resource = raw_path
        try:
            bucket, key, resource = self._address(raw_path, _headers(scope).get("host", ""), state.settings)
            response = await self._handle(request, scope, raw_path, bucket, key, resource, state)
        except S3Error as err:
            response = _error(err, request.method, resource, request_id)
        except PockityError as err:
            response = _error(translate(err), request.method, resource, request_id)
        except StorageUnavailable:
            response = _error(
                S3Error("ServiceUnavailable", "Storage is unavailable; retry later.", 503),
                request.method,
                resource,
                request_id,
            )
        except Exception:
            log.exception("S3 request failed: %s %s", request.method, raw_path)
            response = _error(
                S3Error("InternalError", "We encountered an internal error. Please try again.", 500),
                request.method,
                resource,
                request_id,
            )
        response.headers.setdefault("x-amz-request-id", request_id)
        response.headers.setdefault("x-content-type-options", "nosniff")
        await response(scope, receive, send)

    @staticmethod
    def _address(raw_path: str, host: str, settings: Any) -> tuple[str | None, str | None, str]:
        """(bucket, key, the path-style resource) from the path, or from the Host for virtual-hosted requests."""
        domain = settings.s3_api_domain
        hostname = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host
        if domain and hostname.endswith("." + domain.lower()):
            bucket: str | None = hostname[: -len(domain) - 1]
            raw_key = raw_path.lstrip("/")
        else:
            first, _, raw_key = raw_path.lstrip("/").partition("/")
            bucket = first or None
            if bucket is not None:
                bucket = _decoded(bucket)
        key = _decoded(raw_key) if raw_key else None
        resource = "/" + (bucket or "") + (("/" + raw_key) if raw_key else "")
        return bucket, key, resource

    async def _handle(
        self,
        request: Request,
        scope: Scope,
        raw_path: str,
        bucket: str | None,
        key: str | None,
        resource: str,
        state: Any,
    ) -> Response:
        query = _query(scope)
        s3 = S3Request(request.method, raw_path, query, _headers(scope), resource)
        call = Call(request, s3, bucket, key, state)
        call.auth = await authenticate(s3, state.db, state.keyring, datetime.now(UTC))
        await _fair_share(call)
        assert call.principal.key is not None
        state.key_activity.note(
            call.principal.key.id, request.client.host if request.client else None, datetime.now(UTC)
        )
        handler = _route(call)
        return await handler(call)


def _decoded(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "Object names must be valid UTF-8.", 400) from None


def _query(scope: Scope) -> list[tuple[str, str]]:
    try:
        return parse_query_pairs(scope.get("query_string", b"").decode("latin-1"))
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "The query string must be valid UTF-8.", 400) from None


async def _fair_share(call: Call) -> None:
    limiter = call.state.limiter
    if limiter is None:
        return
    settings = call.state.settings
    refused = await checks.spend(limiter, call.principal, call.state.default_rate, settings.rate_limit_patience_seconds)
    if refused is not None:
        raise S3Error("SlowDown", "Please reduce your request rate.", 503)


# --- routing ---------------------------------------------------------------------------------------------

_NOT_IMPLEMENTED_BUCKET = {
    "policy",
    "versioning",
    "lifecycle",
    "cors",
    "tagging",
    "encryption",
    "object-lock",
    "website",
    "logging",
    "notification",
    "replication",
    "requestPayment",
    "accelerate",
    "analytics",
    "metrics",
    "inventory",
    "intelligent-tiering",
    "ownershipControls",
    "publicAccessBlock",
}


def _route(call: Call) -> Handler:
    method, params = call.s3.method, call.params
    if call.bucket is None:
        if method == "GET":
            return list_buckets
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
    _check_bucket(call)
    unsupported = sorted(set(params) & _NOT_IMPLEMENTED_BUCKET)
    if unsupported:
        raise S3Error("NotImplemented", f"{unsupported[0]} is not supported by Pockity.", 501)
    if call.key is None:
        table: dict[str, Handler] = {"HEAD": head_bucket, "PUT": create_bucket}
        if method == "GET":
            if "location" in params:
                return get_location
            if "acl" in params:
                return get_acl
            return list_objects
        if method == "POST" and "delete" in params:
            return delete_objects
        if method in table:
            return table[method]
    else:
        if "acl" in params and method == "GET":
            return get_acl
        if "uploadId" in params or "uploads" in params:
            raise S3Error("NotImplemented", "Multipart uploads are not supported yet.", 501)
        if method == "PUT" and "x-amz-copy-source" in call.s3.headers:
            return copy_object
        table = {"GET": get_object, "HEAD": head_object, "PUT": put_object, "DELETE": delete_object}
        if method in table:
            return table[method]
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)


def _check_bucket(call: Call) -> None:
    if call.bucket != call.state.settings.s3_api_bucket:
        if call.s3.method == "PUT" and call.key is None:
            raise S3Error("AccessDenied", "You can only use your own bucket.", 403)
        raise S3Error("NoSuchBucket", "The specified bucket does not exist.", 404, BucketName=call.bucket or "")


# --- buckets -----------------------------------------------------------------------------------------------


def _owner(call: Call) -> xml.Owner:
    return xml.Owner(call.principal.user_id, call.principal.name or call.principal.email)


async def list_buckets(call: Call) -> Response:
    return _xml(xml.list_buckets(_owner(call), [(call.state.settings.s3_api_bucket, call.principal.created_at)]))


async def head_bucket(call: Call) -> Response:
    return Response(status_code=200, headers={"x-amz-bucket-region": call.state.settings.aws_region})


async def create_bucket(call: Call) -> Response:
    # The tenant's bucket always exists. In us-east-1 S3 answers 200 to re-creating your own bucket (so
    # `aws s3 mb` succeeds); elsewhere 409 BucketAlreadyOwnedByYou, which rclone and others take as success.
    if call.state.settings.aws_region == "us-east-1":
        return Response(status_code=200, headers={"Location": f"/{call.bucket}"})
    raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded.", 409)


async def get_location(call: Call) -> Response:
    return _xml(xml.location(call.state.settings.aws_region))


async def get_acl(call: Call) -> Response:
    return _xml(xml.private_acl(_owner(call)))


# --- listing --------------------------------------------------------------------------------------------------


def _max_keys(call: Call) -> int:
    raw = call.params.get("max-keys", str(MAX_KEYS))
    if not raw.isdigit():
        raise S3Error("InvalidArgument", "max-keys must be a non-negative integer.", 400)
    return min(int(raw), MAX_KEYS)


async def list_objects(call: Call) -> Response:
    params = call.params
    v2 = params.get("list-type") == "2"
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter") or None
    if delimiter is not None and delimiter != "/":
        raise S3Error("InvalidArgument", "Pockity supports '/' as the only delimiter.", 400)
    encoding = params.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "encoding-type must be url.", 400)
    max_keys = _max_keys(call)
    token = params.get("continuation-token") if v2 else None
    after = (params.get("start-after") if v2 else params.get("marker")) or None
    page = await service.list_objects(
        call.state.db,
        call.principal,
        prefix=prefix,
        delimiter=delimiter,
        limit=max(1, max_keys),
        cursor=token,
        after=after if token is None else None,
    )
    entries = [xml.Entry(r.key, r.last_modified, r.etag, r.size) for r in page.items] if max_keys else []
    listing = xml.Listing(
        bucket=call.bucket or "",
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        entries=entries,
        common_prefixes=page.folders if max_keys else [],
        is_truncated=page.next_cursor is not None and max_keys > 0,
        url_encoded=encoding == "url",
    )
    if v2:
        owner = _owner(call) if params.get("fetch-owner") == "true" else None
        return _xml(
            xml.list_objects_v2(
                listing, continuation_token=token, next_token=page.next_cursor, start_after=after, owner=owner
            )
        )
    names = [e.key for e in entries] + listing.common_prefixes
    next_marker = max(names) if listing.is_truncated and delimiter and names else None
    return _xml(
        xml.list_objects_v1(listing, marker=params.get("marker", ""), next_marker=next_marker, owner=_owner(call))
    )


# --- objects ----------------------------------------------------------------------------------------------------


def _object_headers(etag: str, size: int, modified: datetime, content_type: str | None) -> dict[str, str]:
    return {
        "ETag": f'"{etag}"',
        "Last-Modified": format_datetime(modified.astimezone(UTC), usegmt=True),
        "Content-Length": str(size),
        "Content-Type": media_types.safe(content_type) or "binary/octet-stream",
        "Accept-Ranges": "bytes",
    }


def _etag_listed(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def _http_date(value: str) -> datetime | None:
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an unparseable date is ignored, as RFC 9110 says
    return at if at.tzinfo is not None else None


def _not_modified(call: Call, etag: str, modified: datetime) -> bool:
    """The conditional headers of a GET or HEAD (RFC 9110 §13.2.2 order): 412 PreconditionFailed, or whether
    the answer is 304 Not Modified."""
    headers, seconds = call.s3.headers, modified.astimezone(UTC).replace(microsecond=0)
    if "if-match" in headers:
        if not _etag_listed(headers["if-match"], etag):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold.", 412)
    elif (since := _http_date(headers.get("if-unmodified-since", ""))) is not None and seconds > since:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold.", 412)
    if "if-none-match" in headers:
        return _etag_listed(headers["if-none-match"], etag)
    since = _http_date(headers.get("if-modified-since", ""))
    return since is not None and seconds <= since


_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def _overridden(call: Call, headers: dict[str, str]) -> dict[str, str]:
    """GetObject's `response-*` query parameters (signed with the request, so the key holder chose them)."""
    for param, header in _OVERRIDES.items():
        value = call.params.get(param)
        if value is None:
            continue
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise S3Error("InvalidArgument", f"{param} may not contain control characters.", 400)
        headers[header] = value
    if not media_types.is_passive(media_types.safe(headers.get("Content-Type"))):
        headers["Content-Security-Policy"] = "sandbox"  # an active type never runs as a page of this origin
    return headers


async def head_object(call: Call) -> Response:
    assert call.key is not None
    obj = await service.get_object_meta(call.state.db, call.principal, call.key)
    headers = _object_headers(obj.etag, obj.size, obj.updated_at, obj.content_type)
    if _not_modified(call, obj.etag, obj.updated_at):
        return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
    return Response(status_code=200, headers=headers)


async def get_object(call: Call) -> Response:
    assert call.key is not None
    obj = await service.get_object_meta(call.state.db, call.principal, call.key)
    if _not_modified(call, obj.etag, obj.updated_at):
        headers = _object_headers(obj.etag, obj.size, obj.updated_at, obj.content_type)
        return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
    byte_range = service.parse_range(call.s3.headers.get("range"), obj.size)
    info, body = await service.open_content(call.state.storage, obj, byte_range)
    headers = _overridden(call, _object_headers(info.etag, info.size, obj.updated_at, obj.content_type))
    status = 200
    if byte_range is not None:
        start, end = byte_range
        headers |= {"Content-Range": f"bytes {start}-{end}/{info.size}", "Content-Length": str(end - start + 1)}
        status = 206
    return StreamingResponse(body, status_code=status, headers=headers)


def _declared_length(call: Call) -> int | None:
    headers = call.s3.headers
    raw = headers.get("x-amz-decoded-content-length") if _is_chunked(call) else headers.get("content-length")
    if raw is None:
        if _is_chunked(call):
            raise S3Error("MissingContentLength", "aws-chunked uploads need X-Amz-Decoded-Content-Length.", 411)
        return None
    if not raw.isdigit():
        raise S3Error("InvalidArgument", "The content length is not a number.", 400)
    return int(raw)


def _is_chunked(call: Call) -> bool:
    assert call.auth is not None
    return call.auth.payload in (
        Payload.STREAMING_SIGNED,
        Payload.STREAMING_SIGNED_TRAILER,
        Payload.STREAMING_UNSIGNED_TRAILER,
    )


async def _hashed(body: AsyncIterator[bytes], expected: str) -> AsyncIterator[bytes]:
    digest = hashlib.sha256()
    async for piece in body:
        digest.update(piece)
        yield piece
    if digest.hexdigest() != expected:
        raise S3Error("XAmzContentSHA256Mismatch", "The provided x-amz-content-sha256 does not match the body.", 400)


async def _checked(body: AsyncIterator[bytes], algorithm: str, sent: str) -> AsyncIterator[bytes]:
    computed = checksums.new(algorithm)
    async for piece in body:
        computed.update(piece)
        yield piece
    checksums.check(algorithm, computed, sent)


async def _md5_checked(body: AsyncIterator[bytes], sent: str) -> AsyncIterator[bytes]:
    digest = hashlib.md5()  # noqa: S324 - Content-MD5 is MD5 by definition (an integrity check, not security)
    async for piece in body:
        digest.update(piece)
        yield piece
    if base64.b64encode(digest.digest()).decode() != sent.strip():
        raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.", 400)


def _body(call: Call, declared: int | None) -> AsyncIterator[bytes]:
    """The decoded, verifying body: each check raises at the latest at the end, so nothing wrong is stored."""
    auth, headers = call.auth, call.s3.headers
    assert auth is not None
    body: AsyncIterator[bytes] = call.request.stream()
    if _is_chunked(call):
        assert declared is not None
        spec = chunked.ChunkedBody(auth.payload, declared, auth.verified, trailer=headers.get("x-amz-trailer"))
        body = chunked.decode(spec, body)
    elif auth.payload is Payload.SHA256 and auth.payload_sha256 is not None:
        body = _hashed(body, auth.payload_sha256)
    for name, value in headers.items():
        if name.startswith(checksums.HEADER_PREFIX) and name != "x-amz-checksum-type":
            body = _checked(body, checksums.algorithm_of(name), value)
    if "content-md5" in headers:
        body = _md5_checked(body, headers["content-md5"])
    return body


def _write_condition(call: Call) -> uploads.Precondition | None:
    """PutObject's conditional writes: `If-None-Match: *` (only if the key is free), `If-Match: <etag>`."""
    none_match, match = call.s3.headers.get("if-none-match"), call.s3.headers.get("if-match")
    if none_match is None and match is None:
        return None
    if none_match is not None and none_match.strip() != "*":
        raise S3Error("NotImplemented", "If-None-Match on PutObject supports '*' only.", 501)

    def check(existing: Any) -> None:
        if none_match is not None and existing is not None:
            raise uploads.PreconditionFailed("A file of this name exists (If-None-Match: *).")
        if match is not None and (existing is None or not _etag_listed(match, existing.etag)):
            raise uploads.PreconditionFailed("The file's ETag is not the one If-Match names.")

    return check


async def put_object(call: Call) -> Response:
    assert call.key is not None
    name = service.checked_name(call.principal, call.key, "write")
    declared = _declared_length(call)
    async with call.state.upload_slots:
        obj = await uploads.upload(
            call.state.db,
            call.state.storage,
            call.principal,
            name,
            _body(call, declared),
            declared=declared,
            content_type=call.s3.headers.get("content-type"),
            policy=call.state.upload_policy,
            precondition=_write_condition(call),
        )
    return Response(status_code=200, headers={"ETag": f'"{obj.etag}"'})


def _copy_source(call: Call) -> str:
    """The source key of `x-amz-copy-source` (`[/]bucket/key[?versionId=null]`, percent-encoded)."""
    raw = call.s3.headers["x-amz-copy-source"]
    path, _, version = raw.partition("?")
    if version and version != "versionId=null":
        raise S3Error("InvalidArgument", "Pockity keeps one version of each object (versionId=null).", 400)
    bucket, slash, key = _decoded(path).lstrip("/").partition("/")
    if not slash or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be bucket/key.", 400)
    if bucket != call.state.settings.s3_api_bucket:
        raise S3Error("AccessDenied", "You can only copy from your own bucket.", 403)
    return key


async def copy_object(call: Call) -> Response:
    assert call.key is not None
    source = _copy_source(call)
    directive = call.s3.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE.", 400)
    if source == call.key and directive == "COPY":
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without changing "
            "the object's metadata.",
            400,
        )
    async with call.state.upload_slots:
        obj = await copies.copy_object(
            call.state.db,
            call.state.storage,
            call.principal,
            source,
            call.key,
            content_type=call.s3.headers.get("content-type"),
            keep_content_type=directive == "COPY",
            policy=call.state.upload_policy,
        )
    return _xml(xml.copy_result(obj.etag, obj.updated_at or datetime.now(UTC)))


async def delete_object(call: Call) -> Response:
    assert call.key is not None
    results = await deletes.delete_objects(call.state.db, call.state.storage, call.principal, [call.key])
    error = results[call.key]
    if error is not None and error.code != "file_not_found":  # S3: deleting a missing key succeeds
        raise error
    return Response(status_code=204)


async def delete_objects(call: Call) -> Response:
    body = b""
    async for piece in call.request.stream():
        body += piece
        if len(body) > xml.MAX_REQUEST_XML:
            raise S3Error("MalformedXML", "The XML you provided is too large.", 400)
    keys, quiet = xml.parse_delete(body)
    results = await deletes.delete_objects(call.state.db, call.state.storage, call.principal, keys)
    outcomes = []
    for key in keys:
        error = results.get(key)
        gone = error is None or error.code == "file_not_found"
        outcomes.append(xml.DeleteOutcome(key, None if gone else translate(error)))  # type: ignore[arg-type]
    return _xml(xml.delete_result(outcomes, quiet))
