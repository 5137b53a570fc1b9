"""Uploads: reserve quota, stream the bytes to the backend, settle or release — in that order.

Each step is its own short unit of work, because the reservation must be committed (visible to every
process) before the first byte is accepted, and the bytes stream for as long as they take in between:
  1. begin   — take the name's write lock (a reservation row, unique per user and name) and reserve quota
               with one conditional UPDATE per quota scope (the user, and the API key when it has a tier);
  2. stream  — bytes go to the backend; unknown lengths reserve more as they advance, and the upload stops
               the moment the next chunk would not fit;
  3. finish  — record the object and turn the reservation into usage; or release it on any failure.
While the body streams, a heartbeat pushes the reservation's expiry out every TTL/3, so the expiry job never
takes the lock of an upload that is still running, however slow the client or S3.

An upload that never reaches its 2xx (the process was killed, or S3 or PostgreSQL failed with the outcome
unknown: the bytes may or may not have landed) leaves its reservation, and the `release_expired_reservations`
job decides about the key. The write goes straight to the file's key, so what it decides depends on the name:
  - a new name (no file when the upload began): the reservation is marked `discard` when it is taken; whatever
    landed under the key was never acknowledged, so it is deleted, never adopted — nothing a client was told
    failed is counted. An in-process failure tries that delete at once and hands it to the job if S3 is away.
  - a replacement: the key holds the live file, old bytes or new; deleting would lose the file, so the row
    follows S3 instead (`reconcile_name`, HEAD = truth) and the file stays counted once, at its real size.
    (Writing replacements to a staging key would keep the old bytes, at the cost of a copy of every replacement.)
When the outcome is known — our own checks or the client stopped the body, or the backend says NothingStored
(S3 refused the connection) — nothing was written, and the reservation is released at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from pockity.auth.schemas import Principal
from pockity.db import Database, unit_of_work
from pockity.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    PayloadTooLarge,
    PockityError,
    ServiceUnavailable,
    TooManyRequests,
    ValidationFailed,
)
from pockity.kit import media_types, multipart
from pockity.kit.time import utcnow
from pockity.models import Reservation, StorageObject
from pockity.storage import repository as repo
from pockity.storage.backends import InvalidKey, NothingStored, ObjectInfo, StorageBackend, StorageError
from pockity.storage.keys import physical_key
from pockity.storage.quota import NO_LIMIT, Limits, QuotaScope, limits_for
from pockity.storage.repository import key_scope, user_scope

log = logging.getLogger("pockity.storage.uploads")


class StorageQuotaExceeded(PayloadTooLarge):
    code, message = "storage_quota_exceeded", "This upload would exceed your storage quota."


class ObjectQuotaExceeded(Forbidden):
    code, message = "object_quota_exceeded", "You have reached the maximum number of files."


class FileTooLarge(PayloadTooLarge):
    code, message = "file_too_large", "This file is larger than allowed."


class UnsupportedMediaType(PockityError):
    status, code, message = 415, "unsupported_media_type", "Expected multipart/form-data."


class InvalidContentType(ValidationFailed):
    code, message = "invalid_content_type", "The content type is not a valid media type (RFC 9110)."


def checked_content_type(value: str | None) -> str | None:
    """A client's content type: None when absent or empty, else a valid media type (422 otherwise)."""
    if not value:
        return None
    if not media_types.is_media_type(value):
        raise InvalidContentType(details={"contentType": value[:100]})
    return value


class TooManyUploads(TooManyRequests):
    code, message = "rate_limited", "Too many uploads open at once; retry when one of them has finished."


Precondition = Callable[[StorageObject | None], None]


class PreconditionFailed(PockityError):
    status, code, message = 412, "precondition_failed", "The file is not in the state the request required."


class NoStorageTier(Forbidden):
    code, message = "no_storage_tier", "You have no storage tier yet; request one with POST /api/tier-requests."


class ObjectBusy(Conflict):
    code, message = "object_busy", "Another upload or delete of this file is in progress; try again."


class UploadExpired(ServiceUnavailable):
    code, message = "upload_expired", "The upload took longer than its reservation and was not stored; try again."


@dataclass(frozen=True)
class UploadPolicy:
    server_max_bytes: int
    reservation_ttl: timedelta
    reserve_step: int  # how far ahead unknown-length uploads reserve

    @property
    def heartbeat_seconds(self) -> float:
        """How often a running upload pushes its reservation's expiry out: three beats fit in one TTL."""
        return self.reservation_ttl.total_seconds() / 3

    default_concurrent_uploads: int | None = None  # for tiers without their own limit; None: no limit


@dataclass
class Ticket:
    reservation_id: str
    user_id: str
    name: str
    key_id: str | None
    user: QuotaScope
    key: QuotaScope | None
    max_size: int
    declared: int | None
    discard: bool = False  # a new name: a write left unacknowledged is deleted (see the module docstring)


async def begin(
    db: Database,
    principal: Principal,
    name: str,
    declared: int | None,
    policy: UploadPolicy,
    *,
    kind: str = "stream",
    content_type: str | None = None,
    ttl: timedelta | None = None,
    replaces_in_place: bool = True,
    precondition: Precondition | None = None,
) -> Ticket:
    """Take the name's write lock and reserve quota for `declared` bytes (or for nothing yet).

    A replacement reserves only its growth, because the new bytes take the old ones' place — except with
    `replaces_in_place=False` (a staged direct upload: the new bytes sit beside the old file until completed).
    `precondition` sees the file the name holds (or None) under the lock, so a conditional write (S3's
    If-None-Match / If-Match) cannot race another upload of the name; raising refuses the upload.
    """
    async with db.transaction() as session:
        limits = await limits_for(session, principal, policy.default_concurrent_uploads)
        if limits.tier is None:
            raise NoStorageTier()
        max_size = min(policy.server_max_bytes, limits.max_object_size)
        if declared is not None and declared > max_size:
            raise too_large(max_size)
        key_id = principal.key.id if principal.key else None
        reservation_id = await repo.insert_reservation(
            session,
            user_id=principal.user_id,
            name=name,
            api_key_id=key_id,
            kind=kind,
            declared_size=declared,
            content_type=content_type,
            expires_at=utcnow() + (ttl or policy.reservation_ttl),
        )
        if reservation_id is None:
            raise ObjectBusy()
        # Read under the lock just taken: the size credited to a replacement cannot change until it is released.
        old = await repo.written(session, principal.user_id, name)
        if precondition is not None:
            precondition(old)
        user = QuotaScope(
            scope=user_scope(principal.user_id),
            limits=limits.user,
            credit=old.size if old and replaces_in_place else 0,
            new_object=old is None,
        )
        key = None
        if principal.key is not None:
            same_writer = old is not None and old.api_key_id == principal.key.id
            key = QuotaScope(
                scope=key_scope(principal.key.id),
                limits=limits.key or Limits(NO_LIMIT, NO_LIMIT),
                credit=old.size if same_writer and old and replaces_in_place else 0,
                new_object=not same_writer,
            )
        for scope in (user, key):
            if scope is None:
                continue
            # Every upload takes an upload slot, in the same statement as its bytes and its object.
            await reserve(session, scope, scope.needed(declared or 0), objects=int(scope.new_object), uploads=1)
        discard = kind == "stream" and old is None
        await repo.hold(
            session,
            reservation_id,
            nbytes=user.reserved,
            objects=user.objects_reserved,
            key_bytes=key.reserved if key else 0,
            key_objects=key.objects_reserved if key else 0,
            discard=discard,
        )
    return Ticket(reservation_id, principal.user_id, name, key_id, user, key, max_size, declared, discard)


async def reserve(session: repo.Runner, scope: QuotaScope, nbytes: int, *, objects: int = 0, uploads: int = 0) -> None:
    """Hold `nbytes`, `objects` and `uploads` of the scope in one conditional UPDATE, or raise the error naming
    the limit that would be passed and what remains of it."""
    ok = await repo.try_reserve(
        session,
        scope.scope,
        nbytes=nbytes,
        objects=objects,
        uploads=uploads,
        max_bytes=scope.limits.max_bytes,
        max_objects=scope.limits.max_objects,
        max_uploads=scope.limits.max_uploads,
    )
    if ok:
        scope.reserved += nbytes
        scope.objects_reserved += objects
        scope.uploads_reserved += uploads
        return
    counter = await repo.get_counter(session, scope.scope)
    used = counter.bytes_used if counter else 0
    reserved = counter.bytes_reserved if counter else 0
    if uploads and counter and counter.uploads_open + uploads > scope.limits.max_uploads:
        raise TooManyUploads(
            f"At most {scope.limits.max_uploads} uploads may be open at once; retry when one has finished "
            "(a direct upload counts until it is completed or cancelled).",
            retry_after=1,
            details={
                "scope": scope.kind,
                "limit": scope.limits.max_uploads,
                "uploadsOpen": counter.uploads_open,
                "retryAfter": 1,
            },
        )
    if objects and counter and counter.object_count + counter.objects_reserved + objects > scope.limits.max_objects:
        raise ObjectQuotaExceeded(
            f"You have reached the limit of {scope.limits.max_objects} files.",
            details={
                "scope": scope.kind,
                "limit": scope.limits.max_objects,
                "objectCount": counter.object_count,
                "remaining": max(0, scope.limits.max_objects - counter.object_count - counter.objects_reserved),
            },
        )
    remaining = max(0, scope.limits.max_bytes - used - reserved)
    raise StorageQuotaExceeded(
        f"This upload needs more than the {remaining} bytes left of your {scope.limits.max_bytes}-byte quota.",
        details={
            "scope": scope.kind,
            "limitBytes": scope.limits.max_bytes,
            "usedBytes": used,
            "reservedBytes": reserved,
            "remainingBytes": remaining,
        },
    )


def too_large(max_size: int) -> FileTooLarge:
    return FileTooLarge(f"Files may be at most {max_size} bytes.", details={"maxObjectSizeBytes": max_size})


async def grow(db: Database, ticket: Ticket, total: int, policy: UploadPolicy) -> None:
    """Reserve enough for `total` bytes so far (a step ahead when possible) and push the expiry out."""
    async with db.transaction() as session:
        added: dict[str, int] = {}
        for scope in (ticket.user, ticket.key):
            if scope is None:
                continue
            missing = scope.needed(total) - scope.reserved
            before = scope.reserved
            if missing > 0:
                ahead = min(max(missing, policy.reserve_step), max(missing, ticket.max_size - total))
                try:
                    await reserve(session, scope, ahead)
                except (StorageQuotaExceeded, ObjectQuotaExceeded):
                    if ahead == missing:
                        raise
                    await reserve(session, scope, missing)  # near the limit: exactly what this chunk needs
            added[scope.scope] = scope.reserved - before
        await repo.grow_reservation(
            session,
            ticket.reservation_id,
            nbytes=added.get(ticket.user.scope, 0),
            key_bytes=added.get(ticket.key.scope, 0) if ticket.key else 0,
            expires_at=utcnow() + policy.reservation_ttl,
        )


async def metered(
    db: Database, ticket: Ticket, chunks: AsyncIterator[bytes], policy: UploadPolicy
) -> AsyncIterator[bytes]:
    """Pass chunks through, enforcing the size limits and reserving as the stream advances."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > ticket.max_size:
            raise too_large(ticket.max_size)
        if ticket.declared is not None and seen > ticket.declared:
            raise BadRequest("The body is longer than its Content-Length.", code="length_mismatch")
        covered = min(s.reserved + s.credit for s in (ticket.user, ticket.key) if s is not None)
        if seen > covered:
            await grow(db, ticket, seen, policy)
        yield chunk
    if ticket.declared is not None and seen != ticket.declared:
        raise BadRequest("The body ended before its Content-Length.", code="length_mismatch")


class Heartbeat:
    """Pushes a running upload's reservation expiry out every TTL/3, whether or not bytes are flowing (a slow
    client, a slow S3 part, botocore retrying while S3 restarts): the expiry job must never take the name's lock,
    and with a `discard` reservation delete the key, under an upload that is still running."""

    def __init__(self, db: Database, ticket: Ticket, policy: UploadPolicy) -> None:
        self._db, self._ticket, self._policy = db, ticket, policy
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stopped.set()  # the loop ends at its next wait, never in the middle of an UPDATE
        if self._task is not None:
            with anyio.CancelScope(shield=True):
                await self._task

    async def _run(self) -> None:
        interval = self._policy.heartbeat_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), interval)
                return
            try:
                # Bounded, so ending the upload never waits long for a beat stuck on an unreachable database.
                await asyncio.wait_for(self._beat(), min(interval, 10.0))
            except Exception as exc:  # the database may be away for a moment; the next beat tries again
                log.warning("upload heartbeat failed: %s", type(exc).__name__)

    async def _beat(self) -> None:
        async with self._db.transaction() as session:
            await repo.grow_reservation(
                session,
                self._ticket.reservation_id,
                nbytes=0,
                key_bytes=0,
                expires_at=utcnow() + self._policy.reservation_ttl,
            )


async def finish(
    db: Database,
    backend: StorageBackend,
    ticket: Ticket,
    info: ObjectInfo,
    content_type: str | None,
    *,
    headers: dict[str, str] | None = None,
    part_sizes: list[list[int]] | None = None,
    release_also: str | None = None,
) -> StorageObject:
    """Record the stored object and turn the reservation into usage (one unit of work); `release_also` names
    another reservation given back in the same unit of work (a multipart upload's parts)."""
    async with db.transaction() as st:
        held = await repo.take_reservation(st, ticket.reservation_id)
        if held is not None:
            if release_also is not None and (other := await repo.take_reservation(st, release_also)) is not None:
                await repo.release(st, other)
            return await settle(
                st,
                held,
                ticket.user_id,
                ticket.name,
                ticket.key_id,
                info,
                content_type,
                expect_new=ticket.user.new_object,
                headers=headers,
                part_sizes=part_sizes,
            )
    # The reservation expired under the upload (the process stalled past its TTL) and the expiry job took it:
    # the name was unlocked meanwhile, and for a new name the job may have deleted the key before these bytes
    # landed. Recording them now could count a file S3 no longer has.
    await _drop_orphan(db, backend, ticket)
    raise UploadExpired()


async def settle(
    session: repo.Runner,
    held: Reservation | None,
    user_id: str,
    name: str,
    key_id: str | None,
    info: ObjectInfo,
    content_type: str | None,
    *,
    expect_new: bool = False,
    headers: dict[str, str] | None = None,
    part_sizes: list[list[int]] | None = None,
) -> StorageObject:
    """Record the object as stored and give back what its reservation held (None: already released)."""
    return await record_object(
        session,
        user_id,
        name,
        size=info.size,
        etag=info.etag,
        content_type=content_type,
        writer_key_id=key_id,
        release=held,
        expect_new=expect_new,
        headers=headers,
        part_sizes=part_sizes,
    )


async def record_object(
    session: repo.Runner,
    user_id: str,
    name: str,
    *,
    size: int,
    etag: str,
    content_type: str | None,
    writer_key_id: str | None,
    release: Reservation | None = None,
    expect_new: bool = False,
    headers: dict[str, str] | None = None,
    part_sizes: list[list[int]] | None = None,
) -> StorageObject:
    """Create or replace the object row and move usage between scopes by the size difference; with `release`,
    also give back what that (already taken) reservation held, in the same counter UPDATEs. A replacement
    takes the new `headers` and `part_sizes` (None: none), as an S3 PUT replaces an object's metadata. Returns
    the row (read by attribute like the entity). The caller holds the name (its reservation or lock).

    `expect_new` (the name had no row when its upload began) tries the INSERT first: it succeeds only if there
    is still no row, which is what the locking read would have found, so the read is saved; on a conflict
    (the hint was stale) the row is read and replaced as usual. The hint never changes the outcome.
    """
    if content_type is not None and not media_types.is_media_type(content_type):
        content_type = None  # from a backend (adoption): a value that could not be sent back as a header
    st = await repo.statements(session)
    values: dict[str, object] = dict(
        size=size,
        etag=etag,
        content_type=content_type,
        api_key_id=writer_key_id,
        headers=headers,
        part_sizes=part_sizes,
    )
    obj = await repo.insert_object(st, user_id=user_id, name=name, **values) if expect_new else None
    old = None
    if obj is None:
        # Lock order as everywhere: the object's row, then the counters.
        old = await repo.written(st, user_id, name, for_update=True)
        if old is None:
            obj = await repo.insert_object(st, user_id=user_id, name=name, **values)
        else:
            obj = await repo.update_object(st, user_id=user_id, name=name, **values)
        if obj is None:  # only a writer that does not hold the name could have raced us here
            raise ObjectBusy()
    await _move_usage(st, user_id, old, size, writer_key_id, release)
    return obj


async def _move_usage(
    session: repo.Runner,
    user_id: str,
    old: Any | None,
    size: int,
    writer_key_id: str | None,
    release: Reservation | None,
) -> None:
    """Usage moves from the replaced object's scopes to the writer's, and the reservation's hold is given back."""
    moves = _CounterMoves()
    # create=True: an adopted file may be the user's first, an upload the key's first.
    moves.add(user_scope(user_id), create=True, used=size - (old.size if old else 0), count=0 if old else 1)
    if old is not None and old.api_key_id:
        moves.add(key_scope(old.api_key_id), used=-old.size, count=-1)
    if writer_key_id:
        moves.add(key_scope(writer_key_id), create=True, used=size, count=1)
    if release is not None:
        moves.add(
            user_scope(release.user_id),
            reserved=-release.bytes,
            objects_reserved=-release.objects,
            uploads_open=-release.uploads,
        )
        if release.api_key_id:
            moves.add(
                key_scope(release.api_key_id),
                reserved=-release.key_bytes,
                objects_reserved=-release.key_objects,
                uploads_open=-release.uploads,
            )
    await moves.apply(session)


class _CounterMoves:
    """Usage deltas gathered per counter, then applied as ONE UPDATE per counter, in the order first touched.

    The result is what one UPDATE per delta gave, also when a counter is missing: an UPDATE of no row changes
    nothing, except for a scope added with create=True, which is then created (INSERT ... ON CONFLICT DO
    NOTHING) and given what was added from that call on — as when the INSERT ran right before it, every time.
    Creating only on a miss saves that INSERT on every upload.
    """

    def __init__(self) -> None:
        self._all: dict[str, dict[str, int]] = {}
        self._since_create: dict[str, dict[str, int]] = {}

    def add(self, scope: str, *, create: bool = False, **deltas: int) -> None:
        if create:
            self._since_create.setdefault(scope, {})
        sums = [self._all.setdefault(scope, {})]
        if scope in self._since_create:
            sums.append(self._since_create[scope])
        for into in sums:
            for field, n in deltas.items():
                into[field] = into.get(field, 0) + n

    async def apply(self, session: repo.Runner) -> None:
        for scope, deltas in self._all.items():
            if await repo.adjust(session, scope, **deltas) or scope not in self._since_create:
                continue
            await repo.ensure_counter(session, scope)
            await repo.adjust(session, scope, **self._since_create[scope])


def objects_only(held: Reservation) -> Reservation:
    """What a reservation gives back when it becomes a hold: its object count and its upload slot (its bytes
    stay held until the form expires, but no upload is open any more)."""
    return Reservation(
        user_id=held.user_id,
        api_key_id=held.api_key_id,
        bytes=0,
        objects=held.objects,
        key_bytes=0,
        key_objects=held.key_objects,
        uploads=held.uploads,
    )


async def abort(db: Database, ticket: Ticket) -> None:
    """Release what the ticket holds (idempotent; shielded so a cancelled request still releases)."""
    with anyio.CancelScope(shield=True):
        async with db.transaction() as st:
            held = await repo.take_reservation(st, ticket.reservation_id)
            if held is not None:
                await repo.release(st, held)


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed write may still have stored its bytes: not when our own checks stopped the body (the
    backend then stores nothing and aborts a multipart upload) or the backend knows nothing was sent
    (NothingStored: S3 refused the connection), but yes for any other failure of the backend itself."""
    if isinstance(exc, NothingStored):
        return False
    return isinstance(exc, StorageError) or not isinstance(exc, PockityError)


class WatchedBody:
    """The body as the backend reads it, remembering whether reading it failed (the client went away, the
    request was cancelled): a backend sees that before it sends PutObject or CompleteMultipartUpload, so nothing
    was stored, whatever the exception — the name is released at once instead of waiting for the expiry job."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.failed = False

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                yield chunk
        except GeneratorExit:  # closed by its reader, not failed
            raise
        except BaseException:
            self.failed = True
            raise


# How long a write whose outcome is unknown may still land in S3 after we gave up on it (S3 goes on with a
# request whose client went away): the name stays locked that long, and the expiry job deletes once more.
UNKNOWN_OUTCOME_GRACE = timedelta(seconds=60)


async def abort_unknown(db: Database, backend: StorageBackend, ticket: Ticket, policy: UploadPolicy) -> None:
    """End an upload whose write failed with the outcome unknown, so that nothing unacknowledged is counted.

    A new name: delete whatever landed under the key now, and hand the reservation to the expiry job after a
    grace (`UNKNOWN_OUTCOME_GRACE`, at most the reservation TTL): the write may still complete in S3 after this
    delete — seen with a gateway stopping mid-request — and the job deletes again before it releases the name.
    A replacement (whose row must follow what S3 holds: `reconcile_name`) goes to the expiry job at once.
    """
    with anyio.CancelScope(shield=True):
        grace = timedelta(0)
        if ticket.discard:
            grace = min(UNKNOWN_OUTCOME_GRACE, policy.reservation_ttl)
            try:
                await backend.delete(physical_key(ticket.user_id, ticket.name))
            except StorageError as exc:
                log.warning("could not discard an unacknowledged upload yet: %s", exc)
        async with unit_of_work(db) as session:
            await repo.expire_now(session, ticket.reservation_id, utcnow() + grace)


async def _drop_orphan(db: Database, backend: StorageBackend, ticket: Ticket) -> None:
    """After losing the name's lock: retake it and delete a new name's unrecorded bytes (best effort)."""
    if not ticket.discard:
        return  # a replacement's key holds the live file: the reconciliation walk makes its row follow S3
    async with unit_of_work(db) as session:
        lock = await repo.insert_reservation(
            session,
            user_id=ticket.user_id,
            name=ticket.name,
            api_key_id=None,
            kind="lock",
            declared_size=None,
            content_type=None,
            expires_at=utcnow() + timedelta(minutes=1),
        )
    if lock is None:
        return  # another upload holds the name now and will write the key itself
    try:
        async with unit_of_work(db) as session:
            if await repo.get_object(session, ticket.user_id, ticket.name) is None:
                await backend.delete(physical_key(ticket.user_id, ticket.name))
    finally:
        async with unit_of_work(db) as session:
            await repo.take_reservation(session, lock)


async def upload(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    name: str,
    chunks: AsyncIterator[bytes],
    *,
    declared: int | None,
    content_type: str | None,
    policy: UploadPolicy,
    precondition: Precondition | None = None,
    headers: dict[str, str] | None = None,
) -> StorageObject:
    """Reserve, stream, settle. On any failure nothing is stored and nothing stays reserved. `headers`: the
    response headers to store with the file (an S3 client's metadata)."""
    content_type = checked_content_type(content_type)
    ticket = await begin(db, principal, name, declared, policy, precondition=precondition)
    body = WatchedBody(metered(db, ticket, chunks, policy))
    try:
        async with Heartbeat(db, ticket, policy):
            info = await backend.put_stream(
                physical_key(principal.user_id, name), body.stream(), content_type=content_type, size_hint=declared
            )
    except BaseException as exc:
        if outcome_unknown(exc) and not body.failed:
            await abort_unknown(db, backend, ticket, policy)
        else:
            await abort(db, ticket)
        raise
    # If this fails the bytes are stored but not acknowledged: the reservation stays until it expires, and
    # the expiry job then discards a new name's bytes or reconciles a replacement (see module docstring).
    return await finish(db, backend, ticket, info, content_type, headers=headers)


_MAX_FIELD_BYTES = 4096


async def upload_form(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    body: AsyncIterator[bytes],
    content_type: str,
    *,
    name: str | None,
    policy: UploadPolicy,
    check_name: Callable[[str], str],
) -> StorageObject:
    """multipart/form-data with a `file` part (and a `key` field before it, or `?key=`), streamed as it arrives."""
    try:
        boundary = multipart.boundary_of(content_type)
    except multipart.NotMultipart as exc:
        raise UnsupportedMediaType(str(exc)) from None
    except multipart.MultipartError as exc:
        raise BadRequest(f"The multipart body is malformed: {exc}", code="invalid_multipart") from None
    events = multipart.events(body, boundary)
    file_part: multipart.PartStart | None = None
    try:
        async for event in events:
            if isinstance(event, multipart.PartStart):
                if event.name == "file":
                    file_part = event
                    break
                value = await field_bytes(events)
                if event.name == "key" and value:
                    name = utf8_name(value)
        if file_part is None:
            raise ValidationFailed("The form has no 'file' part.", code="missing_file")
        name = check_name(name or utf8_name(file_part.filename or b""))
        obj = await upload(
            db,
            backend,
            principal,
            name,
            part_bytes(events),
            declared=None,
            content_type=file_part.content_type,
            policy=policy,
        )
        async for event in events:  # the rest of the form is read and ignored (bounded)
            if isinstance(event, multipart.PartStart):
                await field_bytes(events)
        return obj
    except multipart.MultipartError as exc:
        raise BadRequest(f"The multipart body is malformed: {exc}", code="invalid_multipart") from None


def utf8_name(raw: bytes) -> str:
    """A file name from a form (a field or a part's filename): valid UTF-8, never a lossy guess."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKey("The file name is not valid UTF-8.") from None


async def field_value(events: AsyncIterator[multipart.Event]) -> str:
    """A form field's text (strict UTF-8: a replaced byte would change what the field says)."""
    try:
        return (await field_bytes(events)).decode("utf-8")
    except UnicodeDecodeError:
        raise multipart.MultipartError("a form field is not valid UTF-8") from None


async def field_bytes(events: AsyncIterator[multipart.Event]) -> bytes:
    data = b""
    async for event in events:
        if isinstance(event, multipart.PartEnd):
            break
        if isinstance(event, multipart.PartData):
            data += event.data
            if len(data) > _MAX_FIELD_BYTES:
                raise BadRequest("A form field is too long.", code="invalid_multipart")
    # Not stripped: a name with a trailing control character must be refused, not turned into another name.
    return data


async def part_bytes(events: AsyncIterator[multipart.Event]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, multipart.PartData):
            yield event.data
        elif isinstance(event, multipart.PartEnd):
            return
    raise multipart.MultipartError("the body ended inside the file part")
