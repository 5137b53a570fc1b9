"""Multipart uploads whose parts stream through Pockity: the S3 API's CreateMultipartUpload, UploadPart,
UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload, ListParts and ListMultipartUploads.

A flow module like uploads.py. An upload in progress is a reservation of kind `parts`, holding the bytes of its
parts; the file it completes to is its `target`:
- create: the backend's multipart upload at the file's own key (S3 shows nothing there until it is completed,
  so a live file of that name is untouched) and the `parts` reservation. Nothing is reserved yet and no name is
  locked: several uploads of one key may run at once, and PutObject of the key goes on working, as in S3.
- each part: its exact size is reserved — the user's quota and the key's, one conditional UPDATE each, in the
  transaction that adds it to the upload's reservation — before the first byte is read. A part that fails with
  nothing stored gives its bytes back; one whose outcome is unknown stays held until the upload ends. A part
  sent again under the same number stays counted until then as well (S3 keeps one of them; counting both errs on
  the safe side). An upload idle for STALE_UPLOAD_HOURS expires: the job aborts it and releases its bytes.
- complete: the part list is checked against the parts stored (InvalidPart, InvalidPartOrder, EntityTooSmall),
  the name's lock is taken and the object count reserved as for any upload (`uploads.begin`, with S3's
  conditional writes), the backend assembles the parts, and one unit of work records the file and releases the
  lock and the parts' bytes. The file is at most as large as the parts held, so usage never passes the quota. A
  completion whose outcome is unknown ends as a PutObject's does (`uploads.abort_unknown`).
- abort: the backend's upload is aborted first, then the reservation released (a failure leaves both).
An upload belongs to the API key that created it: its parts count against that key's quota, so only that key
sends parts and completes it (another key of the user may abort it with the `delete` scope).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.auth.schemas import Principal
from pockity.auth.service import authorize
from pockity.db import Database, unit_of_work
from pockity.errors import BadRequest, Forbidden, PockityError
from pockity.kit.time import utcnow
from pockity.models import Reservation, StorageObject
from pockity.storage import repository as repo
from pockity.storage import service, uploads
from pockity.storage.backends import InvalidRange, NoSuchUpload, ObjectNotFound, PartInfo, StorageBackend
from pockity.storage.backends.base import DEFAULT_CONTENT_TYPE, InvalidParts
from pockity.storage.keys import physical_key
from pockity.storage.quota import NO_LIMIT, Limits, QuotaScope, limits_for
from pockity.storage.repository import key_scope, user_scope

MIN_PART = 5 * 1024 * 1024  # S3's smallest part, except the last
MAX_PART = 5 * 1024**3
MAX_PART_NUMBER = 10_000


class InvalidPart(BadRequest):
    code = "invalid_part"
    message = "One or more of the specified parts could not be found, or its ETag does not match."


class InvalidPartOrder(BadRequest):
    code, message = "invalid_part_order", "The list of parts was not in ascending order."


class EntityTooSmall(BadRequest):
    code = "entity_too_small"
    message = f"Every part but the last must be at least {MIN_PART} bytes."


class InvalidPartNumber(BadRequest):
    code, message = "invalid_part_number", f"Part numbers run from 1 to {MAX_PART_NUMBER}."


class UploadOfAnotherKey(Forbidden):
    code, message = "upload_of_another_key", "This multipart upload belongs to another API key."


@dataclass(frozen=True)
class Policy:
    uploads: uploads.UploadPolicy
    idle: timedelta  # an upload with no part for this long expires


def part_runs(sizes: Sequence[int]) -> list[list[int]]:
    """Part sizes as runs of [size, count] (what storage_objects.part_sizes holds)."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return runs


def part_range(runs: Sequence[Sequence[int]], number: int) -> tuple[int, int] | None:
    """The inclusive byte range of part `number` of an object with these runs, None if it has no such part."""
    offset, seen = 0, 0
    for size, count in runs:
        if number <= seen + count:
            start = offset + (number - seen - 1) * size
            return start, start + size - 1
        offset, seen = offset + size * count, seen + count
    return None


def parts_count(runs: Sequence[Sequence[int]]) -> int:
    return sum(count for _, count in runs)


# --- create ------------------------------------------------------------------------------------------------


async def create(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    name: str,
    *,
    content_type: str | None,
    headers: dict[str, str] | None,
    policy: Policy,
) -> str:
    """Start an upload of `name`; returns its id (the client's UploadId)."""
    service.checked_name(principal, name, "write")
    content_type = uploads.checked_content_type(content_type)
    async with db.sessions() as session:
        limits = await limits_for(session, principal)
    if limits.tier is None:
        raise uploads.NoStorageTier()
    physical = physical_key(principal.user_id, name)
    backend_id = await backend.create_multipart(physical, content_type or DEFAULT_CONTENT_TYPE)
    try:
        async with unit_of_work(db) as session:
            return await repo.insert_parts_upload(
                session,
                user_id=principal.user_id,
                target=name,
                api_key_id=principal.key.id if principal.key else None,
                backend_upload_id=backend_id,
                content_type=content_type,
                headers=headers,
                expires_at=utcnow() + policy.idle,
            )
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(PockityError):
            await backend.abort_multipart(physical, backend_id)
        raise


async def _find(session: AsyncSession, principal: Principal, upload_id: str, name: str) -> Reservation:
    found = await repo.get_parts_upload(session, principal.user_id, upload_id)
    if found is None or found.target != name or found.backend_upload_id is None:
        raise NoSuchUpload(details={"uploadId": upload_id[:64]})
    return found


async def _owned(db: Database, principal: Principal, upload_id: str, name: str) -> Reservation:
    async with db.sessions() as session:
        return await _find(session, principal, upload_id, name)


def _own_key(principal: Principal, upload: Reservation) -> None:
    if upload.api_key_id != (principal.key.id if principal.key else None):
        raise UploadOfAnotherKey()


# --- parts --------------------------------------------------------------------------------------------------


def _check_part_number(number: int) -> None:
    if not 1 <= number <= MAX_PART_NUMBER:
        raise InvalidPartNumber(details={"partNumber": number})


async def _hold(
    db: Database, principal: Principal, upload_id: str, name: str, size: int, policy: Policy
) -> Reservation:
    """Find the caller's upload of `name` and reserve one part's bytes on it and on the user's (and key's)
    quota, in one unit of work; returns the upload."""
    async with unit_of_work(db) as session:
        upload = await _find(session, principal, upload_id, name)
        _own_key(principal, upload)
        limits = await limits_for(session, principal)
        if size > min(limits.max_object_size, policy.uploads.server_max_bytes, MAX_PART):
            raise uploads.too_large(min(limits.max_object_size, policy.uploads.server_max_bytes, MAX_PART))
        key_bytes = size if upload.api_key_id else 0
        added = await repo.add_part_bytes(
            session, upload.id, nbytes=size, key_bytes=key_bytes, expires_at=utcnow() + policy.idle
        )
        if not added:
            raise NoSuchUpload()
        await uploads.reserve(session, QuotaScope(user_scope(upload.user_id), limits.user, 0, False), size)
        if upload.api_key_id:
            key_limits = limits.key or Limits(NO_LIMIT, NO_LIMIT)
            await uploads.reserve(session, QuotaScope(key_scope(upload.api_key_id), key_limits, 0, False), size)
    return upload


async def _give_back(db: Database, upload: Reservation, size: int) -> None:
    """Release a part that stored nothing, if the upload still holds it (shielded: runs on cancel too)."""
    key_bytes = size if upload.api_key_id else 0
    with anyio.CancelScope(shield=True):
        async with unit_of_work(db) as session:
            if not await repo.add_part_bytes(session, upload.id, nbytes=-size, key_bytes=-key_bytes):
                return  # completed or aborted meanwhile: that released everything the upload held
            await repo.adjust(session, user_scope(upload.user_id), reserved=-size)
            if upload.api_key_id:
                await repo.adjust(session, key_scope(upload.api_key_id), reserved=-size)


async def _exactly(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise BadRequest("The body is longer than its Content-Length.", code="length_mismatch")
        yield chunk
    if seen != size:
        raise BadRequest("The body ended before its Content-Length.", code="length_mismatch")


def _stored_nothing(exc: BaseException, body_failed: bool) -> bool:
    return body_failed or isinstance(exc, NoSuchUpload | ObjectNotFound) or not uploads.outcome_unknown(exc)


async def upload_part(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    upload_id: str,
    name: str,
    part_number: int,
    size: int,
    chunks: AsyncIterator[bytes],
    policy: Policy,
) -> str:
    """Reserve `size` bytes, stream the part to the backend; returns its ETag."""
    service.checked_name(principal, name, "write")
    _check_part_number(part_number)
    upload = await _hold(db, principal, upload_id, name, size, policy)
    body = uploads.WatchedBody(_exactly(chunks, size))
    assert upload.backend_upload_id is not None
    try:
        return await backend.upload_part(
            physical_key(upload.user_id, name), upload.backend_upload_id, part_number, size, body.stream()
        )
    except BaseException as exc:
        if _stored_nothing(exc, body.failed):
            await _give_back(db, upload, size)
        raise


async def copy_part(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    upload_id: str,
    name: str,
    part_number: int,
    source: str,
    byte_range: tuple[int, int] | None,
    policy: Policy,
    *,
    source_check: Callable[[service.ObjectMeta], None] | None = None,
) -> str:
    """A part from (a range of) one of the user's files, copied inside storage; returns its ETag."""
    service.checked_name(principal, name, "write")
    _check_part_number(part_number)
    meta = await service.get_object_meta(db, principal, source)  # read scope and prefix on the source
    if source_check is not None:
        source_check(meta)
    first, last = byte_range if byte_range is not None else (0, meta.size - 1)
    if first < 0 or last < first or last >= meta.size:
        raise InvalidRange(details={"size": meta.size})
    size = last - first + 1
    upload = await _hold(db, principal, upload_id, name, size, policy)
    assert upload.backend_upload_id is not None
    try:
        return await backend.copy_part(
            physical_key(upload.user_id, source),
            physical_key(upload.user_id, name),
            upload.backend_upload_id,
            part_number,
            first,
            last,
        )
    except BaseException as exc:
        if _stored_nothing(exc, False):
            await _give_back(db, upload, size)
        raise


# --- complete / abort ----------------------------------------------------------------------------------------


def _chosen(listed: Sequence[tuple[int, str]], stored: Sequence[PartInfo]) -> list[PartInfo]:
    numbers = [n for n, _ in listed]
    if numbers != sorted(set(numbers)):
        raise InvalidPartOrder()
    by_number = {p.number: p for p in stored}
    chosen = []
    for number, etag in listed:
        part = by_number.get(number)
        if part is None or part.etag != etag.strip().strip('"'):
            raise InvalidPart(details={"partNumber": number})
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART:
            raise EntityTooSmall(details={"partNumber": part.number, "size": part.size, "minSize": MIN_PART})
    return chosen


async def complete(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    upload_id: str,
    name: str,
    listed: Sequence[tuple[int, str]],
    policy: Policy,
    *,
    precondition: uploads.Precondition | None = None,
) -> StorageObject:
    """Assemble the listed parts (number, ETag) into the file and record it, releasing the parts' bytes."""
    service.checked_name(principal, name, "write")
    upload = await _owned(db, principal, upload_id, name)
    _own_key(principal, upload)
    assert upload.backend_upload_id is not None
    physical = physical_key(upload.user_id, name)
    chosen = _chosen(listed, await backend.list_parts(physical, upload.backend_upload_id))
    total = sum(p.size for p in chosen)
    ticket = await uploads.begin(db, principal, name, None, policy.uploads, precondition=precondition)
    try:
        if total > ticket.max_size:
            raise uploads.too_large(ticket.max_size)
        info = await backend.complete_multipart(
            physical, upload.backend_upload_id, [(p.number, p.etag) for p in chosen]
        )
    except BaseException as exc:
        if uploads.outcome_unknown(exc) and not isinstance(exc, InvalidParts | NoSuchUpload):
            await uploads.abort_unknown(db, backend, ticket, policy.uploads)
        else:
            await uploads.abort(db, ticket)
        raise
    return await uploads.finish(
        db,
        backend,
        ticket,
        info,
        upload.content_type,
        headers=upload.headers,
        part_sizes=part_runs([p.size for p in chosen]) if len(chosen) > 1 else None,
        release_also=upload.id,
    )


async def abort(db: Database, backend: StorageBackend, principal: Principal, upload_id: str, name: str) -> None:
    """Drop the upload and its parts, and release what they held."""
    upload = await _owned(db, principal, upload_id, name)
    own = upload.api_key_id == (principal.key.id if principal.key else None)
    if not (own and principal.key is not None and "write" in principal.key.scopes):
        authorize(principal, "delete", name)  # another key of the user, or a key without write
    else:
        authorize(principal, "write", name)
    assert upload.backend_upload_id is not None
    await backend.abort_multipart(physical_key(upload.user_id, name), upload.backend_upload_id)
    async with unit_of_work(db) as session:
        held = await repo.take_reservation(session, upload.id)
        if held is not None:
            await repo.release(session, held)


# --- listing -------------------------------------------------------------------------------------------------


async def list_parts(
    db: Database, backend: StorageBackend, principal: Principal, upload_id: str, name: str
) -> tuple[Reservation, list[PartInfo]]:
    """The upload and its parts so far (write scope on the name: part of the upload's own flow)."""
    service.checked_name(principal, name, "write")
    upload = await _owned(db, principal, upload_id, name)
    assert upload.backend_upload_id is not None
    return upload, await backend.list_parts(physical_key(upload.user_id, name), upload.backend_upload_id)


async def list_uploads(
    db: Database, principal: Principal, *, prefix: str, after: tuple[str, str] | None, limit: int
) -> tuple[str, list[Reservation]]:
    """The user's uploads in progress under `prefix` (narrowed to a key's folder), in key order: the prefix
    actually listed, and up to `limit` uploads after `after` (target, upload id)."""
    prefix = service.listing_prefix(principal, prefix)
    async with db.sessions() as session:
        found = await repo.list_parts_uploads(session, principal.user_id, prefix=prefix, after=after, limit=limit)
    return prefix, list(found)


# --- expiry ------------------------------------------------------------------------------------------------------


async def expire(db: Database, backend: StorageBackend, candidate: Reservation) -> bool:
    """The expiry job's step for an idle upload: abort it in the backend, release its bytes (False: not due)."""
    async with unit_of_work(db) as session:
        held = await repo.take_expired_reservation(session, candidate.id, utcnow())
        if held is None:
            return False
        if held.target is not None and held.backend_upload_id is not None:
            # Before the commit: if S3 is unreachable the unit of work rolls back and the next run tries again.
            await backend.abort_multipart(physical_key(held.user_id, held.target), held.backend_upload_id)
        await repo.release(session, held)
        record(
            session,
            Actor.system("jobs"),
            "storage.multipart_expired",
            target_type="user",
            target_id=held.user_id,
            details={"name": held.target, "bytes": held.bytes},
        )
    return True
