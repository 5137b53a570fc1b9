"""A PutObject's or UploadPart's body as it streams: aws-chunked decoded and its chunk signatures verified,
the signed SHA-256, `x-amz-checksum-*` and Content-MD5 checked — each raising at the latest at the end, so the
storage services never record a body that failed a check."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

from pockity.s3api import checksums, chunked
from pockity.s3api.call import Call
from pockity.s3api.errors import S3Error
from pockity.s3api.sigv4 import Payload


def declared_length(call: Call) -> int | None:
    headers = call.s3.headers
    raw = headers.get("x-amz-decoded-content-length") if is_chunked(call) else headers.get("content-length")
    if raw is None:
        if is_chunked(call):
            raise S3Error("MissingContentLength", "aws-chunked uploads need X-Amz-Decoded-Content-Length.", 411)
        return None
    if not (raw.isascii() and raw.isdigit()):  # str.isdigit() also says yes to '²', which int() refuses
        raise S3Error("InvalidArgument", "The content length is not a number.", 400)
    return int(raw)


def is_chunked(call: Call) -> bool:
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


def _content_md5(sent: str) -> str:
    """A Content-MD5 that cannot be an MD5 (not base64 of 16 bytes) is refused before the body is read."""
    try:
        if len(base64.b64decode(sent.strip(), validate=True)) == 16:
            return sent.strip()
    except ValueError:
        pass
    raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.", 400)


def verified_body(call: Call, declared: int | None) -> AsyncIterator[bytes]:
    """The decoded, verifying body: each check raises at the latest at the end, so nothing wrong is stored."""
    auth, headers = call.auth, call.s3.headers
    assert auth is not None
    body: AsyncIterator[bytes] = call.request.stream()
    if is_chunked(call):
        assert declared is not None
        spec = chunked.ChunkedBody(auth.payload, declared, auth.verified, trailer=headers.get("x-amz-trailer"))
        body = chunked.decode(spec, body)
    elif auth.payload is Payload.SHA256 and auth.payload_sha256 is not None:
        body = _hashed(body, auth.payload_sha256)
    for name, value in headers.items():
        if name.startswith(checksums.HEADER_PREFIX) and name != "x-amz-checksum-type":
            body = _checked(body, checksums.algorithm_of(name), value)
    if "content-md5" in headers:
        body = _md5_checked(body, _content_md5(headers["content-md5"]))
    return body
