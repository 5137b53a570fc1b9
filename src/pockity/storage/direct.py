"""Direct uploads: the client sends the bytes straight to storage with a presigned POST; Pockity only
reserves the quota first and records the object after (`complete`), or releases it (`cancel`, expiry).

The S3 POST policy binds the exact key, the content type and `content-length-range` ≤ the reserved size, so
S3 itself refuses anything larger. The local backend gets the same shape: a Pockity URL with HMAC-signed
fields that `receive_local_post` checks the same way, so clients never branch on the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from pockity.auth.schemas import Principal
from pockity.auth.service import authorize
from pockity.db import Database, unit_of_work
from pockity.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from pockity.kit import multipart
from pockity.kit.time import utcnow
from pockity.models import StorageObject
from pockity.storage import repository as repo
from pockity.storage import uploads
from pockity.storage.backends import ObjectNotFound, StorageBackend
from pockity.storage.backends.base import DEFAULT_CONTENT_TYPE

# The reservation outlives the URL a little, so a POST sent at the last second can still be completed.
GRACE = timedelta(minutes=10)


class UploadNotFound(NotFound):
    code, message = "upload_not_found", "No such upload in progress."


class UploadIncomplete(Conflict):
    code, message = "upload_incomplete", "The file has not arrived in storage yet; send it to the upload URL first."


@dataclass(frozen=True)
class DirectUpload:
    upload_id: str
    key: str
    url: str
    fields: dict[str, str]
    expires_at: datetime


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
    ticket = await uploads.begin(
        db,
        principal,
        name,
        size,
        policy,
        kind="direct",
        content_type=content_type,
        ttl=timedelta(seconds=expires_in) + GRACE,
    )
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


async def _own(db: Database, principal: Principal, upload_id: str) -> tuple[str, str | None, str | None]:
    async with db.sessions() as session:
        held = await repo.get_reservation(session, principal.user_id, upload_id)
    if held is None or held.kind != "direct":
        raise UploadNotFound()
    authorize(principal, "write", held.name)
    return held.name, held.api_key_id, held.content_type


async def complete(db: Database, backend: StorageBackend, principal: Principal, upload_id: str) -> StorageObject:
    """Check the object arrived (HEAD) and record it, settling the reservation to its real size — once."""
    name, key_id, content_type = await _own(db, principal, upload_id)
    try:
        info = await backend.head(uploads.physical_key(principal.user_id, name))
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
    name, _, _ = await _own(db, principal, upload_id)
    # Deleted while the reservation still locks the name, so no newer upload of it can be hit.
    await backend.delete(uploads.physical_key(principal.user_id, name))
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
