"""Decoding `Content-Encoding: aws-chunked` bodies as they stream, verifying as it goes.

    <hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n[<trailers>]\\r\\n

- `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: every chunk is signed, each signature chaining on the one
  before (the first on the request's own, the "seed"). A chunk's data is passed on only once its signature
  checked out, so a chunk is held whole: at most `max_chunk` bytes (clients use 8 KiB to 8 MiB).
- `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (boto3 and aws-cli over HTTPS): chunks are not signed; data flows on as it
  arrives and the checksum trailer (`x-amz-checksum-*`) is compared at the end.
- With `-TRAILER`, the trailers follow the last chunk; signed mode adds `x-amz-trailer-signature`.

Whatever the mode the decoded length must be `X-Amz-Decoded-Content-Length`, and a declared checksum must
match (BadDigest): the decoder raises at the end otherwise, which the caller's upload turns into "nothing
stored" — nothing becomes visible before the whole body has been verified.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pockity.s3api import checksums
from pockity.s3api.errors import S3Error
from pockity.s3api.sigv4 import EMPTY_SHA256, Payload, Verified

MAX_LINE = 4096  # a chunk header or trailer line
MAX_CHUNK = 16 * 1024 * 1024


def _incomplete(message: str = "The request body ended before the chunked encoding did.") -> S3Error:
    return S3Error("IncompleteBody", message, 400)


def _malformed(message: str) -> S3Error:
    return S3Error("InvalidRequest", f"Malformed aws-chunked body: {message}", 400)


def _signature_mismatch(what: str) -> S3Error:
    return S3Error("SignatureDoesNotMatch", f"The {what} signature does not match.", 403)


@dataclass
class ChunkedBody:
    """How to decode one body: its mode, its declared length and trailer, and the verified request."""

    mode: Payload
    decoded_length: int
    verified: Verified | None = None  # signed modes: the seed signature and signing key
    trailer: str | None = None  # the x-amz-trailer header (one x-amz-checksum-* name)
    max_chunk: int = MAX_CHUNK

    def __post_init__(self) -> None:
        self.signed = self.mode in (Payload.STREAMING_SIGNED, Payload.STREAMING_SIGNED_TRAILER)
        self.has_trailer = self.mode in (Payload.STREAMING_SIGNED_TRAILER, Payload.STREAMING_UNSIGNED_TRAILER)
        if self.signed and self.verified is None:
            raise ValueError("a signed aws-chunked body needs the verified request")
        if self.has_trailer and not self.trailer:
            raise S3Error("InvalidRequest", "A trailer payload needs the x-amz-trailer header.", 400)
        self.algorithm = checksums.algorithm_of(self.trailer) if self.trailer else None


class _Reader:
    """Buffered reads (lines, exact sizes) over the incoming body."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body, self._buf = body, bytearray()

    async def _fill(self) -> bool:
        """Append the next non-empty piece of the body; False at its end (servers may yield empty pieces)."""
        while True:
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                return False
            if chunk:
                self._buf += chunk
                return True

    async def line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            if len(self._buf) > MAX_LINE:
                raise _malformed("a chunk header or trailer line is too long.")
            if not await self._fill():
                raise _incomplete()

    async def some(self, most: int) -> bytes:
        """Up to `most` bytes (at least one)."""
        if not self._buf and not await self._fill():
            raise _incomplete()
        data = bytes(self._buf[:most])
        del self._buf[: len(data)]
        return data

    async def at_end(self) -> bool:
        return not self._buf and not await self._fill()


def _chunk_header(line: bytes, signed: bool) -> tuple[int, str | None]:
    size_part, _, ext = line.partition(b";")
    try:
        size = int(size_part, 16)
    except ValueError:
        raise _malformed("a chunk size is not hexadecimal.") from None
    if size < 0:
        raise _malformed("a chunk size is negative.")
    signature = None
    if ext:
        name, _, value = ext.partition(b"=")
        if name.strip() == b"chunk-signature":
            signature = value.strip().decode("ascii", "replace")
    if signed and signature is None:
        raise _malformed("a chunk has no chunk-signature.")
    return size, signature


class _Chain:
    """The chained chunk signatures of a signed body."""

    def __init__(self, verified: Verified) -> None:
        req = verified.request
        self._key, self._prefix = verified.signing_key, f"{req.amz_date}\n{req.scope}\n"
        self.previous = verified.seed_signature

    def _check(self, kind: str, digest: str, sent: str | None, what: str) -> None:
        to_sign = f"{kind}\n{self._prefix}{self.previous}\n{digest}"
        expected = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        if sent is None or not hmac.compare_digest(expected, sent):
            raise _signature_mismatch(what)
        self.previous = expected

    def chunk(self, data: bytes, sent: str | None) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self._check("AWS4-HMAC-SHA256-PAYLOAD", f"{EMPTY_SHA256}\n{digest}", sent, "chunk")

    def trailer(self, canonical: bytes, sent: str | None) -> None:
        self._check("AWS4-HMAC-SHA256-TRAILER", hashlib.sha256(canonical).hexdigest(), sent, "trailer")


async def decode(spec: ChunkedBody, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The decoded data of an aws-chunked body; raises S3Error (at the latest at the end) if anything is off."""
    reader = _Reader(body)
    chain = _Chain(spec.verified) if spec.signed and spec.verified is not None else None
    checksum = checksums.new(spec.algorithm) if spec.algorithm else None
    total = 0
    while True:
        size, signature = _chunk_header(await reader.line(), spec.signed)
        if size > spec.max_chunk:
            raise _malformed(f"a chunk is larger than {spec.max_chunk} bytes.")
        if total + size > spec.decoded_length:
            raise S3Error("IncompleteBody", "The body is longer than X-Amz-Decoded-Content-Length.", 400)
        if size == 0:
            if chain is not None:
                chain.chunk(b"", signature)
            break
        if chain is not None:  # held whole until its signature checks out
            data = bytearray()
            while len(data) < size:
                data += await reader.some(size - len(data))
            chain.chunk(bytes(data), signature)
            pieces = [bytes(data)]
        else:
            pieces, left = [], size
            while left:
                piece = await reader.some(left)
                left -= len(piece)
                pieces.append(piece)
        if await reader.line() != b"":
            raise _malformed("a chunk is longer than its declared size.")
        for piece in pieces:
            if checksum is not None:
                checksum.update(piece)
            total += len(piece)
            yield piece
    if spec.has_trailer:
        await _trailers(spec, reader, chain, checksum)
    elif await reader.line() != b"":
        raise _malformed("the final chunk is not followed by an empty line.")
    if not await reader.at_end():
        raise _malformed("data follows the final chunk.")
    if total != spec.decoded_length:
        raise _incomplete("The body is shorter than X-Amz-Decoded-Content-Length.")


async def _trailers(
    spec: ChunkedBody, reader: _Reader, chain: _Chain | None, checksum: checksums.Checksum | None
) -> None:
    values: dict[str, str] = {}
    trailer_signature = None
    while (line := await reader.line()) != b"":
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise _malformed("a trailer line has no ':'.")
        name = name.strip().lower()
        if name == "x-amz-trailer-signature":
            trailer_signature = value.strip()
        else:
            values[name] = value.strip()
    assert spec.trailer is not None and spec.algorithm is not None and checksum is not None
    declared = spec.trailer.lower()
    if set(values) != {declared}:
        raise S3Error("InvalidRequest", f"The trailer must carry exactly {declared}.", 400)
    if chain is not None:
        chain.trailer(f"{declared}:{values[declared]}\n".encode(), trailer_signature)
    checksums.check(spec.algorithm, checksum, values[declared])
