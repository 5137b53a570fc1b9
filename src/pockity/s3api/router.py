"""The S3 API's front: an ASGI app beside the REST API, sharing its database, storage and limits.

Each request: addressing (path-style `/{bucket}/{key}`, or virtual-hosted `{bucket}.{S3_API_DOMAIN}`), the
signature and key (auth.py; a browser POST form is signed by its policy: post_upload.py), the tenant's
fair-sharing limit, then one operation (buckets.py, objects.py, multipart.py, post_upload.py) that calls the
same storage services as the REST API — so a file written here is the REST API's file: the same row, quota
and usage. Errors are S3's XML (`<Error><Code>`), HEAD errors without a body;
Pockity's own errors are translated (`errors_map.py`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pockity.errors import PockityError
from pockity.ratelimit import checks
from pockity.s3api import buckets, multipart, objects, post_upload, xml
from pockity.s3api.auth import S3Request, authenticate
from pockity.s3api.call import Call, decoded
from pockity.s3api.errors import S3Error
from pockity.s3api.errors_map import translate
from pockity.s3api.sigv4 import parse_query_pairs
from pockity.storage.backends import StorageUnavailable

log = logging.getLogger("pockity.s3api")
Handler = Callable[[Call], Awaitable[Response]]


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        found[name] = f"{found[name]},{value}" if name in found else value
    return found


def _error(err: S3Error, method: str, resource: str, request_id: str) -> Response:
    headers = {**err.headers, "x-amz-request-id": request_id}
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
            raw_key = raw_path[1:] if raw_path.startswith("/") else raw_path  # `//x` is the key "/x", not "x"
        else:
            first, _, raw_key = raw_path.lstrip("/").partition("/")
            bucket = first or None
            if bucket is not None:
                bucket = decoded(bucket)
        key = decoded(raw_key) if raw_key else None
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
        form = None
        if post_upload.is_form_upload(call):  # signed by the form's policy, not by a header
            form = await post_upload.open_form(call, datetime.now(UTC))
            _check_bucket(call)
        else:
            call.auth = await authenticate(s3, state.db, state.keyring, datetime.now(UTC))
        await _fair_share(call)
        assert call.principal.key is not None
        state.key_activity.note(
            call.principal.key.id, request.client.host if request.client else None, datetime.now(UTC)
        )
        if form is not None:
            return await post_upload.store(call, form)
        handler = _route(call)
        return await handler(call)


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

_NOT_IMPLEMENTED = {
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
    # object subresources: writing them must never reach PutObject
    "retention",
    "legal-hold",
    "torrent",
    "restore",
    "select",
    "attributes",
}


def _route(call: Call) -> Handler:
    method, params = call.s3.method, call.params
    if call.bucket is None:
        if method == "GET":
            return buckets.list_buckets
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
    _check_bucket(call)
    unsupported = sorted(set(params) & _NOT_IMPLEMENTED)
    if unsupported:
        raise S3Error("NotImplemented", f"{unsupported[0]} is not supported by Pockity.", 501)
    if call.key is None:
        table: dict[str, Handler] = {"HEAD": buckets.head_bucket, "PUT": buckets.create_bucket}
        if method == "GET":
            if "location" in params:
                return buckets.get_location
            if "acl" in params:
                return buckets.get_acl
            if "uploads" in params:
                return multipart.list_multipart_uploads
            if "versions" in params:
                return buckets.list_object_versions
            return buckets.list_objects
        if method == "POST" and "delete" in params:
            return objects.delete_objects
        if method == "PUT" and "acl" in params:
            return buckets.put_acl
        if method in table:
            return table[method]
    else:
        if "acl" in params and method in ("GET", "PUT"):
            return buckets.get_acl if method == "GET" else buckets.put_acl
        if "uploads" in params and method == "POST":
            return multipart.create_multipart_upload
        if "uploadId" in params:
            if method == "PUT" and "partNumber" in params:
                copying = "x-amz-copy-source" in call.s3.headers
                return multipart.upload_part_copy if copying else multipart.upload_part
            uploads_table: dict[str, Handler] = {
                "POST": multipart.complete_multipart_upload,
                "DELETE": multipart.abort_multipart_upload,
                "GET": multipart.list_parts,
            }
            if method in uploads_table:
                return uploads_table[method]
        if method == "PUT" and "x-amz-copy-source" in call.s3.headers:
            return objects.copy_object
        table = {
            "GET": objects.get_object,
            "HEAD": objects.head_object,
            "PUT": objects.put_object,
            "DELETE": objects.delete_object,
        }
        if method in table:
            return table[method]
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)


def _check_bucket(call: Call) -> None:
    if call.bucket != call.state.settings.s3_api_bucket:
        if call.s3.method == "PUT" and call.key is None:
            raise S3Error("AccessDenied", "You can only use your own bucket.", 403)
        raise S3Error("NoSuchBucket", "The specified bucket does not exist.", 404, BucketName=call.bucket or "")
