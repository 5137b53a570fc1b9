"""The local backend's stand-ins for S3's presigned endpoints: a signed download, a form POST, a part PUT.

A flow module (it reads the database between backend steps). The signature is the authorization: no other
credentials are asked for. Beyond what S3 checks, a form or part is refused once its upload is no longer open
(completed, cancelled or expired), so with this backend a signed upload URL stops working at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pockity.db import Database
from pockity.errors import BadRequest, Forbidden, ValidationFailed
from pockity.kit import multipart
from pockity.storage import repository as repo
from pockity.storage import uploads
from pockity.storage.backends import ObjectInfo, SignedEndpoints, StorageBackend
from pockity.storage.backends.local_multipart import PartRejected
from pockity.storage.keys import USERS, staging_key
from pockity.storage.service import parse_range


class InvalidSignature(Forbidden):
    code, message = "invalid_signature", "The link is invalid or has expired."


async def open_download(
    backend: StorageBackend,
    signed: SignedEndpoints,
    key: str,
    *,
    expires: str,
    signature: str,
    filename: str | None,
    range_header: str | None,
) -> tuple[ObjectInfo, AsyncIterator[bytes], tuple[int, int] | None]:
    """Check a presign_get signature and open the object, or the one range asked for (returned too)."""
    if not key.startswith(USERS) or not signed.verify_download(key, expires, signature, filename=filename):
        raise InvalidSignature("The download link is invalid or has expired.")
    byte_range = parse_range(range_header, (await backend.head(key)).size)
    info, body = await backend.open_range(key, *(byte_range or (None, None)))
    return info, body, byte_range


async def _open_upload(db: Database, upload_id: str, *, multipart_id: bool) -> str:
    """The user id of an upload that is still open (kind `direct`), else InvalidSignature."""
    async with db.sessions() as session:
        held = await repo.get_reservation_by_id(session, upload_id)
    if held is None or held.kind != "direct" or (held.backend_upload_id is not None) != multipart_id:
        raise InvalidSignature("This upload is no longer open.")
    return held.user_id


async def receive_post(
    db: Database,
    backend: StorageBackend,
    signed: SignedEndpoints,
    upload_id: str,
    body: AsyncIterator[bytes],
    content_type: str,
) -> None:
    """A form POST: the signed fields first, then the file part, stored at the upload's staging key."""
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
        if not signed.verify_post(upload_id, fields):
            raise InvalidSignature("The upload form is invalid or has expired.")
        user_id = await _open_upload(db, upload_id, multipart_id=False)
        if fields.get("key") != staging_key(user_id, upload_id):
            raise InvalidSignature("The upload form is invalid or has expired.")
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


async def receive_part(
    db: Database,
    signed: SignedEndpoints,
    upload_id: str,
    part_number: int,
    size: int,
    expires: int,
    signature: str,
    body: AsyncIterator[bytes],
) -> str:
    """A presigned part PUT; returns the part's ETag."""
    async with db.sessions() as session:
        held = await repo.get_reservation_by_backend_upload_id(session, upload_id)
    if not signed.verify_part(upload_id, part_number, size, expires, signature):
        raise InvalidSignature("The part URL is invalid or has expired.")
    if held is None or held.kind != "direct":
        raise InvalidSignature("The part URL is invalid or has expired.")
    try:
        return await signed.receive_part(upload_id, part_number, size, body)
    except PartRejected as exc:
        raise BadRequest(f"Rejected: {exc}.", code="part_size_mismatch") from None
