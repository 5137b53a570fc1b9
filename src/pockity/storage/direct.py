"""Direct uploads: the client sends the bytes straight to storage with a presigned POST (or presigned part
PUTs); Pockity reserves the quota first and records the object after (`complete`), or releases it (`cancel`).

A flow module: each step is its own unit of work, because backend calls (HEAD, copy, multipart) run between them.

What a signed form can do, and why it can never store more than is reserved or change a stored file:
- The POST policy binds one key, the content type and `content-length-range` ≤ the reserved size, so storage
  itself refuses anything larger. That key is the upload's *staging* key (`staging/{user}/{upload}`, see
  storage/keys.py), never the file's own key: completing copies the staged bytes into place, so a form
  replayed after `complete` (or after `cancel`) writes only to staging and cannot touch the stored file.
- S3 cannot revoke a POST policy before it expires. So when the upload is completed or cancelled its
  reservation becomes a *hold* (no name, so it locks no file; no object count): the bytes the form could still
  store in staging stay reserved until the form has expired (plus GRACE), then the expiry job deletes the
  staging object and releases the hold. Usage never under-counts what a form can write. The local backend
  also refuses a form whose upload is no longer open (storage/signed.py), but holds the same way, because a
  POST already streaming when the upload is cancelled may still finish.
- This is why upload URLs live shorter than download URLs (DIRECT_UPLOAD_MAX_EXPIRES_SECONDS, default 1 h):
  a hold ties up quota for as long as its form lives.
- Who completes: the client's `complete`, an S3 event for the staging key (storage/events.py), or the
  expiry job (a form sent but never completed is adopted). Each first claims the reservation
  (`direct` → `closing`, one conditional UPDATE), so exactly one of them copies and records; a failed attempt
  gives the claim back. A crash while `closing` is repaired by the expiry job (reconcile the name: HEAD = truth).
- Presigned part URLs (multipart) target an S3 multipart upload, which `complete` and `cancel` end — after
  that, S3 refuses its parts — so multipart reservations are released at once, with no hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio

from pockity.audit.service import Actor, record
from pockity.auth.schemas import Principal
from pockity.auth.service import authorize
from pockity.db import Database, unit_of_work
from pockity.errors import BadRequest, Conflict, NotFound, PockityError, ValidationFailed
from pockity.kit.time import utcnow
from pockity.models import Reservation, StorageObject
from pockity.storage import repository as repo
from pockity.storage import uploads
from pockity.storage.backends import ObjectNotFound, StorageBackend
from pockity.storage.backends.base import DEFAULT_CONTENT_TYPE, InvalidParts
from pockity.storage.keys import physical_key, staging_key
from pockity.storage.service import reconcile_name

# The reservation outlives the URL a little, so a POST sent at the last second can still be completed.
GRACE = timedelta(minutes=10)
# S3's limit for one POST upload and for one CopyObject; larger files go up in parts.
MAX_POST_BYTES = 5 * 1024**3
MIN_PART = 5 * 1024 * 1024  # S3's smallest part (except the last)
MAX_PARTS = 10_000


class UploadNotFound(NotFound):
    code, message = "upload_not_found", "No such upload in progress."


class UploadIncomplete(Conflict):
    code, message = "upload_incomplete", "The file has not arrived in storage yet; send it to the upload URL first."


class UploadClosing(Conflict):
    code, message = "upload_closing", "This upload is being completed right now."


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


def upload_expiry(requested: int | None, *, default: int, maximum: int) -> int:
    """Seconds an upload URL lives: the default, or what was asked for up to the server's maximum (short,
    because a form's bytes stay reserved until it expires: see the module docstring)."""
    if requested is not None and requested > maximum:
        raise BadRequest(
            f"expiresIn is above the server's maximum for uploads ({maximum} s).",
            code="invalid_expiry",
            details={"maxSeconds": maximum},
        )
    return min(requested or default, maximum)


async def _reserve(
    db: Database,
    principal: Principal,
    name: str,
    size: int,
    content_type: str,
    policy: uploads.UploadPolicy,
    expires_in: int,
    *,
    staged: bool,
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
        replaces_in_place=not staged,
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
    """Reserve `size` bytes and presign a POST of at most that many bytes to the upload's staging key."""
    if size > MAX_POST_BYTES:
        raise ValidationFailed(
            f"One POST can carry at most {MAX_POST_BYTES} bytes; use multipart: true.",
            code="use_multipart",
            details={"maxSizeBytes": MAX_POST_BYTES},
        )
    content_type = uploads.checked_content_type(content_type) or DEFAULT_CONTENT_TYPE
    ticket = await _reserve(db, principal, name, size, content_type, policy, expires_in, staged=True)
    try:
        url, fields = await backend.presign_post(
            staging_key(principal.user_id, ticket.reservation_id),
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
    content_type = uploads.checked_content_type(content_type) or DEFAULT_CONTENT_TYPE
    sizes = part_sizes(size, part_size)
    ticket = await _reserve(db, principal, name, size, content_type, policy, expires_in, staged=False)
    physical = physical_key(principal.user_id, name)
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


# --- claiming ---------------------------------------------------------------------------------------------


async def _own(db: Database, principal: Principal, upload_id: str) -> Reservation:
    async with db.sessions() as session:
        held = await repo.get_reservation(session, principal.user_id, upload_id)
    if held is None or held.kind not in ("direct", "closing") or held.name is None:
        raise UploadNotFound()
    authorize(principal, "write", held.name)
    return held


async def _claim(db: Database, upload_id: str) -> Reservation:
    """direct → closing, or UploadClosing/UploadNotFound if someone else has it (or it is gone)."""
    async with unit_of_work(db) as session:
        claimed = await repo.claim_reservation(session, upload_id, from_kind="direct", to_kind="closing")
        if claimed is None:
            now = await repo.get_reservation_by_id(session, upload_id)
            raise UploadClosing() if now is not None and now.kind == "closing" else UploadNotFound()
    return claimed


async def unclaim(db: Database, upload_id: str) -> None:
    """Give a claim back after a failed attempt, so the client can try again (shielded: runs on cancel too)."""
    with anyio.CancelScope(shield=True):
        async with unit_of_work(db) as session:
            await repo.claim_reservation(session, upload_id, from_kind="closing", to_kind="direct")


async def _delete_quietly(backend: StorageBackend, key: str) -> None:
    # The expiry job deletes the staging key again when the hold ends; a failure here only delays that.
    with anyio.CancelScope(shield=True), contextlib.suppress(PockityError):
        await backend.delete(key)


# --- completing -------------------------------------------------------------------------------------------


async def complete(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    upload_id: str,
    parts: Sequence[tuple[int, str]] | None = None,
) -> StorageObject:
    """Copy the staged file into place — or assemble its parts — and record it, settling the reservation once."""
    held = await _own(db, principal, upload_id)
    if held.backend_upload_id is None:
        return await finish_staged(db, backend, await _claim(db, upload_id))
    if not parts:
        raise ValidationFailed("List the uploaded parts: [{partNumber, etag}].", code="parts_required")
    numbers = [n for n, _ in parts]
    if numbers != sorted(set(numbers)):  # S3's rule; some S3 servers (Ceph RGW) would accept any order
        raise InvalidParts("Parts must be listed once each, in ascending order.")
    claimed = await _claim(db, upload_id)
    assert claimed.name is not None and claimed.backend_upload_id is not None
    try:
        info = await backend.complete_multipart(
            physical_key(claimed.user_id, claimed.name), claimed.backend_upload_id, parts
        )
    except BaseException:
        await unclaim(db, upload_id)
        raise
    async with unit_of_work(db) as session:
        taken = await repo.take_reservation(session, upload_id)
        return await uploads.settle(
            session, taken, claimed.user_id, claimed.name, claimed.api_key_id, info, claimed.content_type
        )


async def finish_staged(db: Database, backend: StorageBackend, claimed: Reservation) -> StorageObject:
    """For the holder of a `closing` claim: copy the staged bytes to the file's key, record the file, and turn
    the reservation into a hold. Any failure gives the claim back (the client, an event or the job retries)."""
    assert claimed.name is not None
    staged = staging_key(claimed.user_id, claimed.id)
    try:
        try:
            arrived = await backend.head(staged)
        except ObjectNotFound:
            raise UploadIncomplete() from None
        if claimed.declared_size is not None and arrived.size > claimed.declared_size:
            # Storage should have refused it; never count more than was reserved without saying so.
            raise Conflict("The stored file is larger than the reserved size.", code="size_mismatch")
        info = await backend.copy(staged, physical_key(claimed.user_id, claimed.name))
    except BaseException:
        await unclaim(db, claimed.id)
        raise
    async with unit_of_work(db) as session:
        obj = await uploads.record_object(
            session,
            claimed.user_id,
            claimed.name,
            size=info.size,
            etag=info.etag,
            content_type=claimed.content_type,
            writer_key_id=claimed.api_key_id,
            release=uploads.objects_only(claimed),
        )
        await repo.make_hold(session, claimed.id)
    await _delete_quietly(backend, staged)
    return obj


async def cancel(db: Database, backend: StorageBackend, principal: Principal, upload_id: str) -> None:
    """Drop an upload: the file (if one was being replaced) is untouched, the staged bytes deleted; a form's
    bytes stay held until it expires, a multipart upload is aborted and released at once."""
    held = await _own(db, principal, upload_id)
    claimed = await _claim(db, upload_id)
    if held.backend_upload_id is not None:
        assert claimed.name is not None
        try:
            await backend.abort_multipart(physical_key(claimed.user_id, claimed.name), held.backend_upload_id)
        except BaseException:
            await unclaim(db, upload_id)
            raise
        async with unit_of_work(db) as session:
            taken = await repo.take_reservation(session, upload_id)
            if taken is not None:
                await repo.release(session, taken)
        return
    async with unit_of_work(db) as session:
        await repo.make_hold(session, claimed.id)
        await repo.release(session, uploads.objects_only(claimed))
    await _delete_quietly(backend, staging_key(claimed.user_id, claimed.id))


# --- expiry -----------------------------------------------------------------------------------------------


async def expire(db: Database, backend: StorageBackend, candidate: Reservation) -> str | None:
    """The expiry job's step for a direct upload's reservation; returns what happened (None: nothing due).

    direct (never completed): a staged file is adopted, as if completed; else released. closing (a crash
    mid-complete): released, the name reconciled. hold: the staging object deleted, the bytes released.
    Multipart: aborted, released, the name reconciled.
    """
    if candidate.kind == "direct" and candidate.backend_upload_id is None:
        async with unit_of_work(db) as session:
            claimed = await repo.claim_reservation(session, candidate.id, from_kind="direct", to_kind="closing")
        if claimed is None:
            return None
        try:
            await finish_staged(db, backend, claimed)
            return "adopted"
        except UploadIncomplete:
            pass  # nothing was sent; the claim is back to direct, and the form has expired
    now = utcnow()
    async with unit_of_work(db) as session:
        held = await repo.take_expired_reservation(session, candidate.id, now)
        if held is None:
            return None
        if held.kind == "hold" or held.backend_upload_id is None:
            await backend.delete(staging_key(held.user_id, held.id))  # before the commit: a failure retries
        else:
            assert held.name is not None
            await backend.abort_multipart(physical_key(held.user_id, held.name), held.backend_upload_id)
        await repo.release(session, held)
        repair = await reconcile_name(session, backend, held.user_id, held.name) if held.name else None
        record(
            session,
            Actor.system("jobs"),
            "storage.reservation_expired",
            target_type="user",
            target_id=held.user_id,
            details={"name": held.name, "kind": held.kind, "bytes": held.bytes, "repair": repair},
        )
    return "released"
