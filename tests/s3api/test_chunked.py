"""aws-chunked bodies: AWS's documented signed-chunk example, botocore's own trailer encoder, and tampering."""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from botocore import httpchecksum

from pockity.s3api import checksums, chunked, sigv4
from pockity.s3api.chunked import ChunkedBody
from pockity.s3api.errors import S3Error
from pockity.s3api.sigv4 import Payload

# The example of AWS's "Signature Calculations ... Transferring Payload in Multiple Chunks" (SigV4 docs).
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_HEADERS = {
    "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
    "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
    "x-amz-decoded-content-length;x-amz-storage-class,"
    "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    "content-encoding": "aws-chunked",
    "content-length": "66824",
    "host": "s3.amazonaws.com",
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "x-amz-date": "20130524T000000Z",
    "x-amz-decoded-content-length": "66560",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
}
AWS_CHUNKS = [
    (b"a" * 65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (b"a" * 1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (b"", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]


def aws_verified() -> sigv4.Verified:
    req = sigv4.parse(AWS_HEADERS, [])
    assert req is not None and req.payload is Payload.STREAMING_SIGNED
    return sigv4.verify(
        req, AWS_SECRET, "PUT", "/examplebucket/chunkObject.txt", [], AWS_HEADERS, datetime(2013, 5, 24, tzinfo=UTC)
    )


def signed_body(chunks: list[tuple[bytes, str]], trailer: bytes = b"\r\n") -> bytes:
    out = b""
    for data, sig in chunks:
        out += f"{len(data):x};chunk-signature={sig}\r\n".encode() + data + (b"\r\n" if data else b"")
    return out + trailer


async def pieces(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]
        yield b""  # as servers do (Starlette ends a body with one)


async def decoded(spec: ChunkedBody, body: bytes, got: list[bytes] | None = None) -> bytes:
    out = got if got is not None else []
    async for piece in chunked.decode(spec, pieces(body)):
        out.append(piece)
    return b"".join(out)


async def test_awss_documented_signed_chunks_decode() -> None:
    spec = ChunkedBody(Payload.STREAMING_SIGNED, 66560, aws_verified())
    body = signed_body(AWS_CHUNKS)
    assert len(body) == 66824  # the example's Content-Length
    assert await decoded(spec, body) == b"a" * 66560


async def test_a_tampered_chunk_is_refused_before_its_data_is_passed_on() -> None:
    spec = ChunkedBody(Payload.STREAMING_SIGNED, 66560, aws_verified())
    body = bytearray(signed_body(AWS_CHUNKS))
    body[body.index(b"\r\n") + 2 + 100] ^= 1  # a byte of the first chunk's data
    got: list[bytes] = []
    with pytest.raises(S3Error) as err:
        await decoded(spec, bytes(body), got)
    assert err.value.code == "SignatureDoesNotMatch" and got == []
    # A wrong signature on the second chunk: the first (verified) chunk went on, the second did not.
    bad = [AWS_CHUNKS[0], (AWS_CHUNKS[1][0], "0" * 64), AWS_CHUNKS[2]]
    got = []
    with pytest.raises(S3Error) as err:
        await decoded(ChunkedBody(Payload.STREAMING_SIGNED, 66560, aws_verified()), signed_body(bad), got)
    assert err.value.code == "SignatureDoesNotMatch" and b"".join(got) == b"a" * 65536


@pytest.mark.parametrize(
    ("cut", "code"),
    [(-10, "IncompleteBody"), (-2, "IncompleteBody")],
)
async def test_a_truncated_body_is_incomplete(cut: int, code: str) -> None:
    spec = ChunkedBody(Payload.STREAMING_SIGNED, 66560, aws_verified())
    with pytest.raises(S3Error) as err:
        await decoded(spec, signed_body(AWS_CHUNKS)[:cut])
    assert err.value.code == code


async def test_the_decoded_length_must_match() -> None:
    for declared in (66559, 66561):
        with pytest.raises(S3Error) as err:
            await decoded(ChunkedBody(Payload.STREAMING_SIGNED, declared, aws_verified()), signed_body(AWS_CHUNKS))
        assert err.value.code == "IncompleteBody"


BOTOCORE = {
    "crc32": httpchecksum.Crc32Checksum,
    "crc32c": httpchecksum.CrtCrc32cChecksum,
    "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum,
    "sha1": httpchecksum.Sha1Checksum,
    "sha256": httpchecksum.Sha256Checksum,
}


def botocore_trailer_body(data: bytes, algorithm: str, chunk_size: int = 4096) -> bytes:
    """What boto3 sends over HTTPS: STREAMING-UNSIGNED-PAYLOAD-TRAILER, encoded by botocore itself."""
    wrapper = httpchecksum.AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=BOTOCORE[algorithm],
        checksum_name=f"x-amz-checksum-{algorithm}",
        chunk_size=chunk_size,
    )
    return wrapper.read()


@pytest.mark.parametrize("algorithm", list(BOTOCORE))
async def test_botocores_unsigned_trailer_bodies_decode_and_their_checksums_match(algorithm: str) -> None:
    data = bytes(range(256)) * 100 + b"tail"
    spec = ChunkedBody(Payload.STREAMING_UNSIGNED_TRAILER, len(data), trailer=f"x-amz-checksum-{algorithm}")
    assert await decoded(spec, botocore_trailer_body(data, algorithm)) == data
    ours = checksums.new(algorithm)
    ours.update(data)
    reference = BOTOCORE[algorithm]()
    reference.update(data)
    assert ours.value() == reference.b64digest()


async def test_a_wrong_trailer_checksum_is_bad_digest() -> None:
    data = b"x" * 10_000
    body = botocore_trailer_body(data, "crc32").replace(b"x" * 10, b"y" + b"x" * 9, 1)
    with pytest.raises(S3Error) as err:
        await decoded(ChunkedBody(Payload.STREAMING_UNSIGNED_TRAILER, len(data), trailer="x-amz-checksum-crc32"), body)
    assert err.value.code == "BadDigest"


async def test_a_trailer_other_than_the_declared_one_is_refused() -> None:
    data = b"z" * 100
    body = botocore_trailer_body(data, "sha256")
    with pytest.raises(S3Error) as err:
        await decoded(ChunkedBody(Payload.STREAMING_UNSIGNED_TRAILER, len(data), trailer="x-amz-checksum-crc32"), body)
    assert err.value.code == "InvalidRequest"


def _sign_chain(verified: sigv4.Verified, chunks: list[bytes], trailer_line: bytes) -> bytes:
    req, prev = verified.request, verified.seed_signature
    out = b""
    for data in [*chunks, b""]:
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                req.amz_date,
                req.scope,
                prev,
                sigv4.EMPTY_SHA256,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        prev = hmac.new(verified.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        out += f"{len(data):x};chunk-signature={prev}\r\n".encode() + data + (b"\r\n" if data else b"")
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256-TRAILER", req.amz_date, req.scope, prev, hashlib.sha256(trailer_line + b"\n").hexdigest()]
    )
    trailer_sig = hmac.new(verified.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return out + trailer_line + b"\r\n" + f"x-amz-trailer-signature:{trailer_sig}\r\n\r\n".encode()


async def test_signed_chunks_with_a_signed_trailer() -> None:
    verified = aws_verified()
    data = [b"q" * 5000, b"r" * 17]
    crc = checksums.new("crc32")
    crc.update(b"".join(data))
    line = f"x-amz-checksum-crc32:{crc.value()}".encode()
    spec = ChunkedBody(Payload.STREAMING_SIGNED_TRAILER, 5017, verified, trailer="x-amz-checksum-crc32")
    assert await decoded(spec, _sign_chain(verified, data, line)) == b"".join(data)
    forged = _sign_chain(verified, data, line).replace(b"x-amz-trailer-signature:", b"x-amz-trailer-signature:0", 1)
    with pytest.raises(S3Error) as err:
        await decoded(
            ChunkedBody(Payload.STREAMING_SIGNED_TRAILER, 5017, verified, trailer="x-amz-checksum-crc32"), forged
        )
    assert err.value.code == "SignatureDoesNotMatch"


async def test_a_chunk_over_the_limit_is_refused_before_it_is_read() -> None:
    spec = ChunkedBody(Payload.STREAMING_UNSIGNED_TRAILER, 10**9, trailer="x-amz-checksum-crc32", max_chunk=1024)
    with pytest.raises(S3Error) as err:
        await decoded(spec, b"801\r\n" + b"x" * 10)
    assert err.value.code == "InvalidRequest"
