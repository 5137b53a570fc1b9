"""Reconciliation: make the database agree with the bucket, user by user, while uploads continue.

The walk. For each user, the backend listing of `users/{id}/` (always with the trailing slash: "users/1"
would also match users/10/...) and the user's rows are read side by side in the same order — a merge join of
two lazy, paged streams (ListObjectsV2 pages; keyset pages of rows, `name > last`), so memory is bounded
whatever the number of objects. Both orders are byte order (S3 lists by UTF-8 bytes, the name column is
`COLLATE "C"`/BINARY, and Python's str order is code-point order, which is the same); each stream is checked
to be strictly ascending, and the run fails rather than act on a walk that is not.

The repair. The walk only *nominates* names where the two sides disagree; both sides move while it runs, so
nothing it saw is acted on. Each nominated name is repaired in its own short unit of work:
  1. take the name's write lock (an empty "lock" reservation, the kind a delete takes). If a reservation
     already holds the name, an upload, direct upload or delete is in flight: the name is skipped ("busy")
     and its own flow — or the expiry job — settles it. While we hold the lock no upload or delete of the
     name can start (on PostgreSQL a concurrent begin() simply waits for our commit, because the lock row is
     inserted and deleted in the same transaction);
  2. lock the row (FOR UPDATE), then HEAD the object: the truth as it is now, not as the listing saw it;
  3. adopt (`record_object`), drop (`forget`) or correct (`record_object`). Both compute usage deltas from
     the row as it is now, so an upload that settled between the listing and the repair is neither counted
     twice nor undone: the re-check finds row and object agreeing and changes nothing.
Locking the row before the HEAD also orders us against writers that record without a reservation (event
ingestion, if it does): one that records after our HEAD waits for our commit and applies its change on top.

The usage recount. After a user's walk, `user:{id}` is set to the sum over the user's rows if it differs.
It is NOT one `UPDATE ... SET bytes_used = (SELECT sum(...))`: under PostgreSQL's READ COMMITTED the
sub-selects read the snapshot taken when the statement starts; if a settle has already updated the counter
but not yet committed, the UPDATE waits for its row lock, re-checks only its WHERE on the new row version, and
writes a sum that lacks the settle's row — that upload's bytes would be lost. So the counter row is locked
first (SELECT ... FOR UPDATE) and the sums are read by a *later* statement, whose snapshot then includes every
settle that had touched the counter (each changes the counter and its rows in one transaction); settles that
have not reached the counter yet wait for us and add their delta on top. The lock also makes two overlapping
runs (job and CLI) apply a counter fix once, not twice.

Names that object_names rejects (`a//b`, `../x`, control characters, S3 "folder" markers ending in "/"): never
adopted. No API call could read, rename or delete such a row, so adopting one would charge the user for bytes
they cannot free; they are counted per user as `invalid` (with a few example keys) for an admin to deal with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.db import Database, unit_of_work
from pockity.kit.object_names import InvalidName, validate_object_name
from pockity.kit.time import utcnow
from pockity.models import ReconciliationReport, StorageObject
from pockity.storage import repository as repo
from pockity.storage.backends import ObjectInfo, ObjectNotFound, StorageBackend
from pockity.storage.keys import physical_key
from pockity.storage.repository import user_scope
from pockity.storage.service import forget, get_report, lock_name
from pockity.storage.uploads import record_object
from pockity.users import repository as users
from pockity.users.service import UserNotFound

log = logging.getLogger("pockity.storage.reconcile")

RUNNING, DONE, FAILED = "RUNNING", "DONE", "FAILED"
ROW_PAGE = 1000  # rows per keyset page (the backend pages itself: 1000 keys per ListObjectsV2)
USER_PAGE = 500
CONCURRENCY = 4  # repairs in flight at once (each holds a connection for a HEAD's duration)
SAVE_EVERY = 5.0  # seconds between progress writes to the report row
INVALID_EXAMPLES = 5


class ReconciliationFailed(RuntimeError):
    """Raised by the job so the runner records the error and retries."""


class ListingOutOfOrder(RuntimeError):
    """A stream of the merge join is not strictly ascending: acting on it could drop live rows."""


# --- one name -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repair:
    """What happened to one name: adopted, removed, corrected, busy or invalid; usage moved by bytes/objects."""

    kind: str
    bytes: int = 0
    objects: int = 0


def _valid(name: str, prefix: str) -> bool:
    try:
        validate_object_name(name, prefix)
    except InvalidName:
        return False
    return True


async def _head(backend: StorageBackend, key: str) -> ObjectInfo | None:
    try:
        return await backend.head(key)
    except ObjectNotFound:
        return None


def _judge(name: str, prefix: str, row: StorageObject | None, info: ObjectInfo | None) -> Repair | None:
    if info is None:
        return None if row is None else Repair("removed", -row.size, -1)
    if row is None:
        return Repair("adopted", info.size, 1) if _valid(name, prefix) else Repair("invalid")
    if row.size == info.size and row.etag == info.etag:
        return None
    return Repair("corrected", info.size - row.size, 0)


async def repair_name(
    db: Database, backend: StorageBackend, user_id: str, name: str, *, dry_run: bool = False
) -> Repair | None:
    """Re-check one name under its write lock and make its row agree with the backend (see module docstring).

    None: row and object agree (or neither exists). A dry run takes no lock and changes nothing; it reports
    what a real run would do now.
    """
    prefix = physical_key(user_id, "")
    key = physical_key(user_id, name)
    if dry_run:
        async with db.sessions() as session:
            if await repo.get_reservation_by_name(session, user_id, name) is not None:
                return Repair("busy")
            row = await repo.get_object(session, user_id, name)
            return _judge(name, prefix, row, await _head(backend, key))
    async with unit_of_work(db) as session:
        lock = await lock_name(session, user_id, name)
        if lock is None:
            return Repair("busy")
        row = await repo.get_object(session, user_id, name, for_update=True)
        info = await _head(backend, key)
        repair = _judge(name, prefix, row, info)
        if repair is not None and repair.kind == "removed":
            assert row is not None
            await forget(session, row)
        elif repair is not None and repair.kind in ("adopted", "corrected"):
            assert info is not None
            await record_object(
                session,
                user_id,
                name,
                size=info.size,
                etag=info.etag,
                content_type=info.content_type or (row.content_type if row else None),
                # A corrected row keeps its writer, so that key's usage is corrected along with the user's.
                writer_key_id=row.api_key_id if row else None,
            )
        await session.delete(lock)
    return repair


# --- usage recount -----------------------------------------------------------------------------------------


async def recount_usage(db: Database, user_id: str, *, dry_run: bool = False) -> tuple[int, int]:
    """Set `user:{id}` bytes_used/object_count to the sums over the user's rows if they differ.

    Returns (bytes, objects) the counter was (or, dry, would be) moved by. Lock first, then sum: see the module
    docstring for why a single UPDATE with sub-selects is not safe against a concurrent settle.
    """
    scope = user_scope(user_id)
    if dry_run:
        async with db.sessions() as session:
            used, count, total, objects = await repo.counter_and_row_sums(session, user_id)
        return total - used, objects - count
    async with unit_of_work(db) as session:
        counter = await repo.lock_counter(session, scope)
        if counter is None:
            total, objects = await repo.row_sums(session, user_id)
            if not total and not objects:
                return 0, 0  # no counter and no rows: nothing to count, and no empty counter row to create
            await repo.ensure_counter(session, scope)
            counter = await repo.lock_counter(session, scope)
            assert counter is not None
        used, count = counter.bytes_used, counter.object_count
        total, objects = await repo.row_sums(session, user_id)  # a statement after the lock: a fresh snapshot
        moved = total - used, objects - count
        if moved != (0, 0):
            await repo.set_usage(session, scope, bytes_used=total, object_count=objects)
    return moved


# --- one run -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    size: int
    etag: str


async def _row_page(db: Database, user_id: str, after: str | None, limit: int) -> list[_Entry]:
    """Keyset page of (name, size, etag) in name order, one AUTOCOMMIT statement (no transaction spans the walk)."""
    return [_Entry(*row) for row in await repo.name_size_etag_page(db.reader, user_id, after, limit)]


@dataclass
class UserDrift:
    """What one user's walk found (and, unless dry, fixed). bytes/objects: the net move of the user's counter."""

    adopted: int = 0
    removed: int = 0
    corrected: int = 0
    bytes: int = 0
    objects: int = 0
    busy: int = 0
    invalid: int = 0
    invalid_keys: list[str] = field(default_factory=list)
    counter_fixed: bool = False
    objects_seen: int = 0

    def add(self, repair: Repair | None) -> None:
        if repair is None:
            return
        if repair.kind in ("adopted", "removed", "corrected", "busy", "invalid"):
            setattr(self, repair.kind, getattr(self, repair.kind) + 1)
        self.bytes += repair.bytes
        self.objects += repair.objects

    def add_invalid(self, key: str) -> None:
        self.invalid += 1
        if len(self.invalid_keys) < INVALID_EXAMPLES:
            self.invalid_keys.append(key[:300])

    @property
    def applied(self) -> bool:
        """Anything that changed (or, dry, would change) rows or usage."""
        return bool(self.adopted or self.removed or self.corrected or self.counter_fixed)

    @property
    def drifted(self) -> bool:
        return self.applied or bool(self.invalid)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "adopted": self.adopted,
            "removed": self.removed,
            "corrected": self.corrected,
            "bytesDrift": self.bytes,
            "objectsDrift": self.objects,
            "counterFixed": self.counter_fixed,
        }
        if self.busy:
            data["busy"] = self.busy
        if self.invalid:
            data["invalid"] = self.invalid
            data["invalidKeys"] = list(self.invalid_keys)
        return data


def _error_text(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return f"{type(exc).__name__}: {exc}"[:2000]


class _Run:
    def __init__(
        self,
        db: Database,
        backend: StorageBackend,
        report: ReconciliationReport,
        *,
        actor: Actor,
        concurrency: int,
    ) -> None:
        self.db, self.backend, self.report, self.actor = db, backend, report, actor
        self.dry_run = report.dry_run
        self.concurrency = max(1, concurrency)
        self.objects_seen = self.adopted = self.removed = self.corrected = 0
        self.drift: dict[str, dict[str, Any]] = {}
        self.users = 0
        self._saved_at = time.monotonic()

    # --- the two sorted streams ---

    async def _listing(self, prefix: str, drift: UserDrift) -> AsyncGenerator[_Entry, None]:
        last: str | None = None
        async for info in self.backend.iter_objects(prefix):
            if not info.key.startswith(prefix):  # never attribute another prefix's key to this user
                log.warning("listing of %r returned %r; ignored", prefix, info.key)
                continue
            name = info.key[len(prefix) :]
            if last is not None and name <= last:
                raise ListingOutOfOrder(f"the backend listed {info.key!r} after {prefix + last!r}")
            last = name
            drift.objects_seen += 1
            yield _Entry(name, info.size, info.etag)

    async def _rows(self, user_id: str) -> AsyncGenerator[_Entry, None]:
        after: str | None = None
        while True:
            page = await _row_page(self.db, user_id, after, ROW_PAGE)
            for entry in page:
                if after is not None and entry.name <= after:
                    raise ListingOutOfOrder(f"the database returned {entry.name!r} after {after!r}")
                after = entry.name
                yield entry
            if len(page) < ROW_PAGE:
                return

    async def _differences(self, user_id: str, drift: UserDrift) -> AsyncGenerator[str, None]:
        """Names where the listing and the rows disagree, in order (the merge join)."""
        prefix = physical_key(user_id, "")
        assert prefix.endswith("/")
        async with aclosing(self._listing(prefix, drift)) as objects, aclosing(self._rows(user_id)) as rows:
            obj, row = await anext(objects, None), await anext(rows, None)
            while obj is not None or row is not None:
                if row is None or (obj is not None and obj.name < row.name):
                    assert obj is not None
                    if _valid(obj.name, prefix):
                        yield obj.name  # no row: adopt
                    else:
                        drift.add_invalid(prefix + obj.name)
                    obj = await anext(objects, None)
                elif obj is None or row.name < obj.name:
                    yield row.name  # no object: remove
                    row = await anext(rows, None)
                else:
                    if obj.size != row.size or obj.etag != row.etag:
                        yield obj.name  # differ: correct
                    obj, row = await anext(objects, None), await anext(rows, None)

    # --- per user ---

    async def _repair(self, user_id: str, name: str, drift: UserDrift, slots: asyncio.Semaphore) -> None:
        try:
            drift.add(await repair_name(self.db, self.backend, user_id, name, dry_run=self.dry_run))
        finally:
            slots.release()

    async def walk_user(self, user_id: str) -> None:
        drift = UserDrift()
        try:
            async with asyncio.TaskGroup() as tasks:
                slots = asyncio.Semaphore(self.concurrency)
                async with aclosing(self._differences(user_id, drift)) as names:
                    async for name in names:
                        await slots.acquire()  # bounded: at most `concurrency` repairs pending
                        tasks.create_task(self._repair(user_id, name, drift, slots))
            moved_bytes, moved_objects = await recount_usage(self.db, user_id, dry_run=self.dry_run)
            if moved_bytes or moved_objects:
                drift.counter_fixed = True
                drift.bytes += moved_bytes
                drift.objects += moved_objects
        finally:
            # Also after a failure: what was already applied is counted and audited.
            with anyio.CancelScope(shield=True):
                await self._user_done(user_id, drift)

    async def _user_done(self, user_id: str, drift: UserDrift) -> None:
        self.users += 1
        self.objects_seen += drift.objects_seen
        self.adopted += drift.adopted
        self.removed += drift.removed
        self.corrected += drift.corrected
        if drift.drifted:
            self.drift[user_id] = drift.as_json()
            log.info("reconcile %s: %s%s", user_id, drift.as_json(), " (dry run)" if self.dry_run else "")
        audit = drift.applied and not self.dry_run
        save = time.monotonic() - self._saved_at > SAVE_EVERY  # progress, without rewriting it per user
        if audit or save:
            async with unit_of_work(self.db) as session:
                if audit:  # once per user: the batch of corrections just applied
                    record(
                        session,
                        self.actor,
                        "storage.reconciled",
                        target_type="user",
                        target_id=user_id,
                        details={**drift.as_json(), "reportId": self.report.id},
                    )
                if save:
                    await self._save(session)

    async def _save(self, session: AsyncSession, **final: Any) -> None:
        self._saved_at = time.monotonic()
        await repo.update_report(
            session,
            self.report.id,
            objects_seen=self.objects_seen,
            adopted=self.adopted,
            removed=self.removed,
            corrected=self.corrected,
            drift=dict(self.drift),
            **final,
        )

    async def _user_ids(self) -> AsyncGenerator[str, None]:
        if self.report.scope_user_id is not None:
            yield self.report.scope_user_id
            return
        after: str | None = None
        while True:
            async with self.db.sessions() as session:
                ids = [u.id for u in await users.list_page(session, after_id=after, limit=USER_PAGE)]
            for user_id in ids:
                yield user_id
            if len(ids) < USER_PAGE:
                return
            after = ids[-1]

    async def execute(self) -> ReconciliationReport:
        error: str | None = None
        started = time.monotonic()
        try:
            async with aclosing(self._user_ids()) as ids:
                async for user_id in ids:
                    await self.walk_user(user_id)
        except BaseException as exc:
            error = _error_text(exc)
            log.error("reconciliation %s failed: %s", self.report.id, error, exc_info=isinstance(exc, Exception))
            with anyio.CancelScope(shield=True):
                await self._finish(error)
            if not isinstance(exc, Exception):
                raise  # cancelled or interrupted: the report says so, the caller still stops
        else:
            await self._finish(None)
        log.info(
            "reconciliation %s %s in %.1fs: %d users, %d objects, adopted %d, removed %d, corrected %d%s",
            self.report.id,
            FAILED if error else DONE,
            time.monotonic() - started,
            self.users,
            self.objects_seen,
            self.adopted,
            self.removed,
            self.corrected,
            " (dry run)" if self.dry_run else "",
        )
        async with self.db.sessions() as session:
            return await get_report(session, self.report.id)

    async def _finish(self, error: str | None) -> None:
        status = FAILED if error else DONE
        async with unit_of_work(self.db) as session:
            await self._save(session, status=status, error=error, finished_at=utcnow())
            record(
                session,
                self.actor,
                "storage.reconciliation_run",
                target_type="reconciliation_report",
                target_id=self.report.id,
                details={
                    "status": status,
                    "trigger": self.report.trigger,
                    "dryRun": self.dry_run,
                    "userId": self.report.scope_user_id,
                    "users": self.users,
                    "objectsSeen": self.objects_seen,
                    "adopted": self.adopted,
                    "removed": self.removed,
                    "corrected": self.corrected,
                    "usersWithDrift": len(self.drift),
                    "error": error,
                },
            )


# --- entry points ------------------------------------------------------------------------------------------


async def begin_report(
    db: Database, *, user_id: str | None = None, dry_run: bool = False, trigger: str = "cli"
) -> ReconciliationReport:
    """Create the RUNNING report row (committed). Raises UserNotFound for an unknown `user_id`."""
    async with unit_of_work(db) as session:
        if user_id is not None and await users.get(session, user_id) is None:
            raise UserNotFound(details={"userId": user_id})
        report = ReconciliationReport(
            scope_user_id=user_id,
            dry_run=dry_run,
            status=RUNNING,
            trigger=trigger,
            objects_seen=0,
            adopted=0,
            removed=0,
            corrected=0,
            drift={},
        )
        session.add(report)
    return report


async def reconcile(
    db: Database,
    backend: StorageBackend,
    *,
    user_id: str | None = None,
    dry_run: bool = False,
    trigger: str = "cli",
    actor: Actor,
    concurrency: int = CONCURRENCY,
    report: ReconciliationReport | None = None,
) -> ReconciliationReport:
    """Walk every user (id order) or one, repair drift (unless dry), recount usage; returns the stored report.

    A failure does not raise: the report comes back FAILED with `error` (cancellation does re-raise, after
    marking the report FAILED). `report`: one made by begin_report (for runs started in the background); its
    scope and dry_run then apply, not `user_id`/`dry_run`/`trigger`.
    """
    if report is None:
        report = await begin_report(db, user_id=user_id, dry_run=dry_run, trigger=trigger)
    return await _Run(db, backend, report, actor=actor, concurrency=concurrency).execute()


_background: set[asyncio.Task[ReconciliationReport]] = set()


async def start_reconcile(
    db: Database,
    backend: StorageBackend,
    *,
    user_id: str | None = None,
    dry_run: bool = False,
    trigger: str = "admin",
    actor: Actor,
) -> tuple[ReconciliationReport, asyncio.Task[ReconciliationReport]]:
    """Create the report and run it in a background task of this process; returns the RUNNING report at once."""
    report = await begin_report(db, user_id=user_id, dry_run=dry_run, trigger=trigger)
    task = asyncio.create_task(reconcile(db, backend, actor=actor, report=report), name=f"reconcile-{report.id}")
    _background.add(task)  # a reference, so the task is not garbage-collected mid-run
    task.add_done_callback(_background.discard)
    return report, task


async def cancel_background() -> None:
    """For the app's shutdown: stop background runs (each marks its report FAILED, "cancelled")."""
    tasks = list(_background)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
