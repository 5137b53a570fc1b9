"""The flexible checksums S3 clients send (`x-amz-checksum-*`, as a header or an aws-chunked trailer).

Each is the base64 of the big-endian digest of the decoded body: CRC32 (zlib), CRC32C and CRC64NVME (awscrt's C
implementations; a pure-Python CRC would cost seconds per megabyte), SHA-1 and SHA-256 (hashlib).
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Protocol

from awscrt import checksums as crt

from pockity.s3api.errors import S3Error

HEADER_PREFIX = "x-amz-checksum-"


class Checksum(Protocol):
    def update(self, data: bytes) -> None: ...

    def value(self) -> str:
        """The base64 digest, as S3 sends it."""
        ...


class _Crc:
    def __init__(self, fn: object, width: int) -> None:
        self._fn, self._width, self._crc = fn, width, 0

    def update(self, data: bytes) -> None:
        self._crc = self._fn(data, self._crc)  # type: ignore[operator]

    def value(self) -> str:
        return base64.b64encode(self._crc.to_bytes(self._width, "big")).decode()


class _Hash:
    def __init__(self, name: str) -> None:
        self._h = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def value(self) -> str:
        return base64.b64encode(self._h.digest()).decode()


def _crc32(data: bytes, crc: int) -> int:
    return zlib.crc32(data, crc)


ALGORITHMS = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 0, "sha256": 0}


def new(algorithm: str) -> Checksum:
    """A running checksum by its S3 name (crc32, crc32c, crc64nvme, sha1, sha256)."""
    if algorithm == "crc32":
        return _Crc(_crc32, 4)
    if algorithm == "crc32c":
        return _Crc(crt.crc32c, 4)
    if algorithm == "crc64nvme":
        return _Crc(crt.crc64nvme, 8)
    if algorithm in ("sha1", "sha256"):
        return _Hash(algorithm)
    raise S3Error("InvalidRequest", f"Unsupported checksum algorithm {algorithm!r}.", 400)


def algorithm_of(header: str) -> str:
    """`x-amz-checksum-crc32` -> `crc32` (refusing names S3 does not know)."""
    name = header.lower().removeprefix(HEADER_PREFIX)
    if not header.lower().startswith(HEADER_PREFIX) or name not in ALGORITHMS:
        raise S3Error("InvalidRequest", f"Unsupported checksum {header!r}.", 400)
    return name


def check(algorithm: str, computed: Checksum, sent: str) -> None:
    """BadDigest unless the body's checksum is the one the client sent."""
    if computed.value() != sent.strip():
        raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum.", 400)
