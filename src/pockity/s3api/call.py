"""One S3 request in progress, and the small helpers every operation module shares."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from pockity.auth.schemas import Principal
from pockity.s3api import xml
from pockity.s3api.auth import Authenticated, S3Request
from pockity.s3api.errors import S3Error

MAX_KEYS = 1000


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

    @property
    def object_key(self) -> str:
        assert self.key is not None  # routed to an object operation only with a key
        return self.key


def xml_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/xml")


def decoded(raw: str) -> str:
    """A percent-encoded path segment (a bucket, a key, a copy source) as text; invalid UTF-8 is a 400."""
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "Object names must be valid UTF-8.", 400) from None


def owner(call: Call) -> xml.Owner:
    return xml.Owner(call.principal.user_id, call.principal.name or call.principal.email)


def etag_listed(header: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match list names this ETag (or is `*`)."""
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def http_date(value: str) -> datetime | None:
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an unparseable date is ignored, as RFC 9110 says
    return at if at.tzinfo is not None else None


async def read_xml_body(call: Call) -> bytes:
    """A request's XML document (DeleteObjects, CompleteMultipartUpload), bounded."""
    body = b""
    async for piece in call.request.stream():
        body += piece
        if len(body) > xml.MAX_REQUEST_XML:
            raise S3Error("MalformedXML", "The XML you provided is too large.", 400)
    return body
