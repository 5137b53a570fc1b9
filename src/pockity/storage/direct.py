"""Direct uploads: the client sends the bytes straight to storage with a presigned POST; Pockity only
reserves the quota first and records the object after (`complete`), or releases it (`cancel`, expiry).

The S3 POST policy binds the exact key, the content type and `content-length-range` ≤ the reserved size, so
S3 itself refuses anything larger. The local backend gets the same shape: a Pockity URL with HMAC-signed
fields that `receive_local_post` checks the same way, so clients never branch on the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pockity.auth.schemas import Principal
from pockity.auth.service import authorize
from pockity.db import Database, unit_of_work
from pockity.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from pockity.kit import multipart
from pockity.kit.time import utcnow
from pockity.models import Reservation, StorageObject
from pockity.storage import repository as repo
from pockity.storage import uploads
from pockity.storage.backends import ObjectNotFound, StorageBackend
from pockity.storage.backends.base import DEFAULT_CONTENT_TYPE, InvalidParts
from pockity.storage.backends.local_multipart import PartRejected

# The reservation outlives the URL a little, so a POST sent at the last second can still be completed.
GRACE = timedelta(minutes=10)


class UploadNotFound(NotFound):
    code, message = "upload_not_found", "No such upload in progress."


class UploadIncomplete(Conflict):
    code, message = "upload_incomplete", "The file has not arrived in storage yet; send it to the upload URL first."


MIN_PART = 5 * 1024 * 1024  # S3's smallest part (except the last)
MAX_PARTS = 10_000


@dataclass(frozen=True)
class PartUrl:
    part_number: int
    size: int
    url: str


@dataclass(frozen=True)
class DirectUpload:
    upload_id: str
    key: str
    url: str | None
    fields: dict[str, str]
    expires_at: datetime
    multipart: bool = False
    part_size: int | None = None
    parts: tuple[PartUrl, ...] = ()


async def _reserve(
    db: Database,
    principal: Principal,
    name: str,
    size: int,
    content_type: str,
    policy: uploads.UploadPolicy,
    expires_in: int,
) -> uploads.Ticket:
    # The same atomic reservation as a streamed upload; it outlives the URLs by GRACE.
    return await uploads.begin(
        db,
        principal,
        name,
        size,
        policy,
        kind="direct",
        content_type=content_type,
        ttl=timedelta(seconds=expires_in) + GRACE,
    )


async def start(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    name: str,
    size: int,
    content_type: str | None,
    *,
    policy: uploads.UploadPolicy,
    expires_in: int,
) -> DirectUpload:
    """Reserve `size` bytes (the same atomic reservation as a streamed upload) and presign the POST."""
    content_type = content_type or DEFAULT_CONTENT_TYPE
    ticket = await _reserve(db, principal, name, size, content_type, policy, expires_in)
    try:
        url, fields = await backend.presign_post(
            uploads.physical_key(principal.user_id, name),
            max_size=size,
            content_type=content_type,
            expires_in=expires_in,
            upload_id=ticket.reservation_id,
        )
    except BaseException:
        await uploads.abort(db, ticket)
        raise
    return DirectUpload(ticket.reservation_id, name, url, fields, utcnow() + timedelta(seconds=expires_in))


def part_sizes(size: int, part_size: int) -> list[int]:
    """Every part `part_size` bytes but the last; at least one part."""
    count = max(1, -(-size // part_size))
    if count > MAX_PARTS:
        raise ValidationFailed(f"That needs more than {MAX_PARTS} parts; use larger parts.", code="too_many_parts")
    return [part_size] * (count - 1) + [size - part_size * (count - 1)]


async def start_multipart(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    name: str,
    size: int,
    content_type: str | None,
    *,
    part_size: int,
    policy: uploads.UploadPolicy,
    expires_in: int,
) -> DirectUpload:
    """Reserve `size`, start a multipart upload and presign one PUT per part, each signed with its exact size."""
    content_type = content_type or DEFAULT_CONTENT_TYPE
    sizes = part_sizes(size, part_size)
    ticket = await _reserve(db, principal, name, size, content_type, policy, expires_in)
    physical = uploads.physical_key(principal.user_id, name)
    backend_id: str | None = None
    try:
        backend_id = await backend.create_multipart(physical, content_type)
        async with unit_of_work(db) as session:
            await repo.set_backend_upload_id(session, ticket.reservation_id, backend_id)
        urls = tuple(
            [
                PartUrl(n, part, await backend.presign_part(physical, backend_id, n, part, expires_in))
                for n, part in enumerate(sizes, start=1)
            ]
        )
    except BaseException:
        if backend_id is not None:
            await backend.abort_multipart(physical, backend_id)
        await uploads.abort(db, ticket)
        raise
    return DirectUpload(
        ticket.reservation_id,
        name,
        None,
        {},
        utcnow() + timedelta(seconds=expires_in),
        multipart=True,
        part_size=part_size,
        parts=urls,
    )


async def _own(db: Database, principal: Principal, upload_id: str) -> Reservation:
    async with db.sessions() as session:
        held = await repo.get_reservation(session, principal.user_id, upload_id)
    if held is None or held.kind != "direct":
        raise UploadNotFound()
    authorize(principal, "write", held.name)
    return held


async def complete(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    upload_id: str,
    parts: Sequence[tuple[int, str]] | None = None,
) -> StorageObject:
    """Check the object arrived (HEAD) — or assemble its parts — and record it, settling the reservation once."""
    held_before = await _own(db, principal, upload_id)
    name, key_id, content_type = held_before.name, held_before.api_key_id, held_before.content_type
    physical = uploads.physical_key(principal.user_id, name)
    if held_before.backend_upload_id is not None:
        if not parts:
            raise ValidationFailed("List the uploaded parts: [{partNumber, etag}].", code="parts_required")
        numbers = [n for n, _ in parts]
        if numbers != sorted(set(numbers)):  # S3's rule; some S3 servers (Ceph RGW) would accept any order
            raise InvalidParts("Parts must be listed once each, in ascending order.")
        info = await backend.complete_multipart(physical, held_before.backend_upload_id, parts)
    else:
        try:
            info = await backend.head(physical)
        except ObjectNotFound:
            raise UploadIncomplete() from None
    async with unit_of_work(db) as session:
        held = await repo.take_reservation(session, upload_id)
        if held is None:  # settled meanwhile (another complete, or the expiry job adopted it)
            obj = await repo.get_object(session, principal.user_id, name)
            if obj is None:
                raise UploadNotFound()
            return obj
        if held.declared_size is not None and info.size > held.declared_size:
            # Storage should have refused it; never count more than was reserved without saying so.
            raise Conflict("The stored file is larger than the reserved size.", code="size_mismatch")
        return await uploads.settle(session, held, principal.user_id, name, key_id, info, content_type)


async def cancel(db: Database, backend: StorageBackend, principal: Principal, upload_id: str) -> None:
    """Drop an upload: anything already sent is deleted, the reservation released."""
    held_before = await _own(db, principal, upload_id)
    physical = uploads.physical_key(principal.user_id, held_before.name)
    if held_before.backend_upload_id is not None:
        await backend.abort_multipart(physical, held_before.backend_upload_id)
    # Deleted while the reservation still locks the name, so no newer upload of it can be hit.
    await backend.delete(physical)
    async with unit_of_work(db) as session:
        held = await repo.take_reservation(session, upload_id)
        if held is None:
            raise UploadNotFound()
        await repo.release(session, held)


async def receive_local_post(
    backend: StorageBackend, upload_id: str, body: AsyncIterator[bytes], content_type: str
) -> None:
    """The local backend's stand-in for S3's POST endpoint: signed fields first, then the file part."""
    verify = getattr(backend, "verify_post", None)
    if verify is None:
        raise NotFound()
    try:
        events = multipart.events(body, multipart.boundary_of(content_type))
        fields: dict[str, str] = {}
        async for event in events:
            if isinstance(event, multipart.PartStart):
                if event.name == "file":
                    break
                fields[event.name] = await uploads.field_value(events)
        else:
            raise ValidationFailed("The form has no 'file' part.", code="missing_file")
        if not verify(upload_id, fields):
            raise Forbidden("The upload form is invalid or has expired.", code="invalid_signature")
        await backend.put_stream(
            fields["key"],
            _bounded(uploads.part_bytes(events), int(fields["x-pockity-max-size"])),
            content_type=fields.get("Content-Type"),
        )
    except multipart.MultipartError as exc:
        raise BadRequest(f"The multipart body is malformed: {exc}", code="invalid_multipart") from None


async def _bounded(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            # S3 answers EntityTooLarge for a POST over its policy's content-length-range; so do we.
            raise BadRequest(
                "The file is larger than this upload allows.", code="entity_too_large", details={"maxSizeBytes": limit}
            )
        yield chunk


async def receive_local_part(
    backend: StorageBackend,
    upload_id: str,
    part_number: int,
    size: int,
    expires: int,
    signature: str,
    body: AsyncIterator[bytes],
) -> str:
    """The local backend's stand-in for a presigned UploadPart URL; returns the part's ETag."""
    verify = getattr(backend, "verify_part", None)
    if verify is None or not verify(upload_id, part_number, size, expires, signature):
        raise Forbidden("The part URL is invalid or has expired.", code="invalid_signature")
    try:
        etag: str = await backend.receive_part(upload_id, part_number, size, body)  # type: ignore[attr-defined]
    except PartRejected as exc:
        raise BadRequest(f"Rejected: {exc}.", code="part_size_mismatch") from None
    return etag
