"""The storage backend contract: what Pockity needs from an object store, and the errors it may raise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

from pockity.errors import RETRY_AFTER_SECONDS, PockityError

# S3 limits a key to 1024 bytes of UTF-8; both backends enforce the same limit.
MAX_KEY_BYTES = 1024
# Stored when the client names no type, so both backends report the same thing (S3 alone would say
# "binary/octet-stream", the local backend nothing).
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object. `size` is always the whole object's size, also for a ranged read."""

    key: str
    size: int
    etag: str  # without the quotes S3 puts around it
    content_type: str | None
    last_modified: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class PartInfo:
    """One uploaded part of an unfinished multipart upload."""

    number: int
    size: int
    etag: str  # without quotes
    last_modified: datetime


class StorageError(PockityError):
    status, code, message = 500, "storage_error", "The storage backend failed."


class ObjectNotFound(StorageError):
    status, code, message = 404, "file_not_found", "The file does not exist."


class StorageUnavailable(StorageError):
    status, code, message = 503, "storage_unavailable", "The storage backend is unavailable; try again later."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(RETRY_AFTER_SECONDS)})
        super().__init__(message, **kwargs)


class NothingStored(StorageUnavailable):
    """A write that failed before any of it could take effect (the connection was refused, or a multipart
    upload failed before its completion was sent): the key is as it was, so the caller may release at once.
    A plain StorageUnavailable from a write means the outcome is unknown: the bytes may have landed."""


class InvalidRange(StorageError):
    status, code, message = 416, "range_not_satisfiable", "The requested range is not satisfiable."


class InvalidParts(StorageError):
    status, code, message = 422, "invalid_parts", "The part list does not match the parts that were uploaded."


class NoSuchUpload(StorageError):
    status, code, message = (
        404,
        "no_such_upload",
        "The multipart upload does not exist; it may have been completed or aborted.",
    )


class InvalidKey(StorageError):
    status, code, message = 422, "invalid_key", "The object key is not valid."


@runtime_checkable
class StorageBackend(Protocol):
    """An object store. Keys are opaque strings; listing order is the byte order of their UTF-8 form."""

    name: str  # "s3" | "local"

    async def start(self) -> None:
        """Acquire long-lived resources (client, bucket, root directory); call once before use."""
        ...

    async def close(self) -> None:
        """Release what start() acquired."""
        ...

    async def ping(self) -> None:
        """Cheap health check; raises StorageUnavailable."""
        ...

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str | None,
        size_hint: int | None = None,
    ) -> ObjectInfo:
        """Store the chunks under key without buffering the whole body. An error from `chunks` or NothingStored
        leaves the key as it was; any other StorageError may come after the bytes landed (outcome unknown)."""
        ...

    async def head(self, key: str) -> ObjectInfo:
        """Describe one object; raises ObjectNotFound."""
        ...

    async def open_range(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """Stream an inclusive byte range (HTTP Range semantics; start=None means the last `end` bytes)."""
        ...

    async def copy(self, source: str, dest: str) -> ObjectInfo:
        """Copy an object with its content type to another key (server-side where possible); ObjectNotFound."""
        ...

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object succeeds."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete many objects; returns key -> error message for the failures only."""
        ...

    def presign_get(self, key: str, expires_in: int, *, filename: str | None = None) -> str:
        """A URL anyone may GET the object with until it expires (as an attachment if filename is set)."""
        ...

    async def presign_post(
        self, key: str, *, max_size: int, content_type: str, expires_in: int, upload_id: str
    ) -> tuple[str, dict[str, str]]:
        """A URL and form fields for a browser/client POST of at most `max_size` bytes straight to storage."""
        ...

    async def create_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload that a client fills with presigned part PUTs; returns its id."""
        ...

    async def presign_part(self, key: str, upload_id: str, part_number: int, size: int, expires_in: int) -> str:
        """A URL to PUT exactly `size` bytes as part `part_number` (the size is part of the signature)."""
        ...

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> ObjectInfo:
        """Assemble the parts (number, etag) in order; InvalidParts if they do not match what was uploaded."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts (idempotent)."""
        ...

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, size: int, chunks: AsyncIterator[bytes]
    ) -> str:
        """Stream exactly `size` bytes as part `part_number` (replacing an earlier one); returns its ETag.

        The part is stored only if `chunks` ends without raising: the last bytes are held back until then, so a
        check that fails at the end of the body (a signature, a checksum) leaves no part. NoSuchUpload."""
        ...

    async def copy_part(self, source: str, key: str, upload_id: str, part_number: int, first: int, last: int) -> str:
        """Part `part_number` from bytes first..last (inclusive) of the object `source`; returns its ETag."""
        ...

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        """Every uploaded part, in part-number order; NoSuchUpload."""
        ...

    async def abort_stale_uploads(self, older_than: timedelta, prefix: str = "", keep: Collection[str] = ()) -> int:
        """Drop unfinished uploads (multipart parts, temp files) older than `older_than`, except the upload ids
        in `keep` (uploads Pockity still tracks); returns how many."""
        ...

    def iter_objects(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
        """Every object under prefix in ascending key byte order, fetched lazily page by page."""
        ...


@runtime_checkable
class SignedEndpoints(Protocol):
    """A backend whose presigned URLs Pockity serves itself (the local backend; S3 serves its own).

    Resolved once when the app is built: only such a backend gets the routes in storage/signed_router.py.
    """

    def verify_download(self, key: str, expires: str, signature: str, *, filename: str | None) -> bool:
        """True if presign_get signed this key (and filename) and the URL has not expired."""
        ...

    def verify_post(self, upload_id: str, fields: dict[str, str]) -> bool:
        """True if presign_post signed these form fields for this upload and they have not expired."""
        ...

    def verify_part(self, upload_id: str, part_number: int, size: int, expires: int, signature: str) -> bool:
        """True if presign_part signed this part (with its exact size) and the URL has not expired."""
        ...

    async def receive_part(self, upload_id: str, part_number: int, size: int, chunks: AsyncIterator[bytes]) -> str:
        """Store one part of exactly `size` bytes of a multipart upload; returns its ETag."""
        ...


async def held_back(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The same bytes, each piece passed on only once the next one has arrived — so the last piece goes out only
    after `chunks` ended cleanly. A check that raises at the end of a body (a signature, a checksum) thus stops
    the request before its last byte is sent, and a store that commits on the last byte never commits it."""
    held: bytes | None = None
    async for piece in chunks:
        if held is not None:
            yield held
        held = piece
    if held is not None:
        yield held


def range_header(start: int | None, end: int | None) -> str | None:
    """The HTTP Range value for an inclusive (start, end) pair, None for the whole object."""
    if start is None and end is None:
        return None
    if start is None:
        assert end is not None
        if end <= 0:
            raise InvalidRange()
        return f"bytes=-{end}"
    if start < 0 or (end is not None and end < start):
        raise InvalidRange()
    return f"bytes={start}-" if end is None else f"bytes={start}-{end}"


def resolve_range(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """Apply HTTP Range rules to an object of `size` bytes: the (first, last) byte offsets, inclusive."""
    range_header(start, end)  # the same argument checks as the S3 path
    if start is None and end is None:
        return 0, size - 1
    if start is None:
        assert end is not None
        if size == 0:
            raise InvalidRange()
        return max(0, size - end), size - 1
    if start >= size:
        raise InvalidRange()
    return start, size - 1 if end is None else min(end, size - 1)


def content_disposition(filename: str) -> str:
    """An `attachment` Content-Disposition that is safe for any filename (RFC 6266 with an ASCII fallback)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
