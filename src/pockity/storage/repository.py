"""SQL for stored objects, usage counters and reservations.

Quota changes are single conditional UPDATEs: the limit check and the increment happen in one statement,
so concurrent uploads in any number of processes can never pass a limit together.
Tenant queries start from `_owned(user_id)`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pockity.db import HotReads, Statements, statements_of
from pockity.kit.ids import new_id
from pockity.kit.time import utcnow
from pockity.models import ReconciliationReport, Reservation, StorageEvent, StorageObject, Tier, UsageCounter, User
from pockity.users import repository as users


def user_scope(user_id: str) -> str:
    return f"user:{user_id}"


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def _owned(user_id: str) -> Select[StorageObject]:
    return select(StorageObject).where(StorageObject.user_id == user_id)


# The write path's statements are built once, with named parameters, and run either in an ORM session's
# transaction or in a `Database.transaction` (straight on asyncpg): `Runner` is either.
Runner = AsyncSession | Statements


async def statements(runner: Runner) -> Statements:
    """The runner as Statements (a session's own transaction, or the transaction it already is)."""
    return await statements_of(runner) if isinstance(runner, AsyncSession) else runner


_st = statements


def _dialect(st: Statements) -> str:
    return st.dialect_name


_counters: Table = UsageCounter.__table__  # type: ignore[assignment]
_reservations: Table = Reservation.__table__  # type: ignore[assignment]
_objects: Table = StorageObject.__table__  # type: ignore[assignment]
_now = bindparam("now", type_=UsageCounter.updated_at.type)


# --- usage counters -------------------------------------------------------------------------------


def _ensure_counter(insert: Any) -> Any:
    values = dict(bytes_used=0, object_count=0, bytes_reserved=0, objects_reserved=0, uploads_open=0)
    stmt = insert(_counters).values(scope=bindparam("scope"), updated_at=_now, **values)
    return stmt.on_conflict_do_nothing(index_elements=["scope"])


_ENSURE_COUNTER = {"postgresql": _ensure_counter(postgresql.insert), "sqlite": _ensure_counter(sqlite.insert)}
_COUNTER = select(
    _counters.c.scope,
    _counters.c.bytes_used,
    _counters.c.object_count,
    _counters.c.bytes_reserved,
    _counters.c.objects_reserved,
    _counters.c.uploads_open,
).where(_counters.c.scope == bindparam("scope"))


async def ensure_counter(runner: Runner, scope: str) -> None:
    st = await _st(runner)
    await st.count(_ENSURE_COUNTER[_dialect(st)], {"scope": scope, "now": utcnow()})


async def get_counter(runner: Runner, scope: str) -> Any | None:
    """The counter's figures (a row read by attribute: bytes_used, object_count, ...), or None."""
    rows = await (await _st(runner)).rows(_COUNTER, {"scope": scope})
    return rows[0] if rows else None


# The user's counters (NULL without a counter row) and tier (NULL without one); no row: no such user.
UsageLimitsRow = Row[int | None, int | None, int | None, str | None, str | None, int | None, int | None, int | None]
_USAGE = (
    select(
        UsageCounter.bytes_used,
        UsageCounter.object_count,
        UsageCounter.bytes_reserved,
        Tier.id.label("tier_id"),
        Tier.name.label("tier_name"),
        Tier.storage_bytes,
        Tier.max_objects,
        Tier.max_object_size_bytes,
    )
    .select_from(User)
    .outerjoin(Tier, Tier.id == User.tier_id)
    .outerjoin(UsageCounter, UsageCounter.scope == bindparam("scope"))
    .where(User.id == bindparam("user_id"))
)


async def usage_row(hot: HotReads, user_id: str) -> UsageLimitsRow | None:
    """The user's usage counters and tier limits in one AUTOCOMMIT round trip (the statement is built once)."""
    row: UsageLimitsRow | None = await hot.first(_USAGE, {"user_id": user_id, "scope": user_scope(user_id)})
    return row


def _try_reserve() -> Any:
    c = _counters.c
    nbytes, objects = bindparam("nbytes", type_=BigInteger), bindparam("objects", type_=BigInteger)
    uploads = bindparam("uploads", type_=Integer)
    fits_bytes = or_(nbytes == 0, c.bytes_used + c.bytes_reserved + nbytes <= bindparam("max_bytes", type_=BigInteger))
    fits_objects = or_(
        objects == 0, c.object_count + c.objects_reserved + objects <= bindparam("max_objects", type_=BigInteger)
    )
    fits_uploads = or_(
        bindparam("uploads_unlimited", type_=Boolean),
        c.uploads_open + uploads <= bindparam("max_uploads", type_=BigInteger),
    )
    return (
        update(_counters)
        .where(c.scope == bindparam("b_scope"), fits_bytes, fits_objects, fits_uploads)
        .values(
            bytes_reserved=c.bytes_reserved + nbytes,
            objects_reserved=c.objects_reserved + objects,
            uploads_open=c.uploads_open + uploads,
            updated_at=_now,
        )
    )


_TRY_RESERVE = _try_reserve()


async def try_reserve(
    runner: Runner,
    scope: str,
    *,
    nbytes: int,
    objects: int,
    max_bytes: int,
    max_objects: int,
    uploads: int = 0,
    max_uploads: int = 0,
) -> bool:
    """Hold `nbytes`, `objects` and `uploads` (upload slots) if used + reserved + them stays within the limits
    (one statement: the concurrent-upload limit holds across processes exactly like the quota).

    No row matched: over a limit, or the scope has no counter yet (its first upload). Only then is the counter
    created and the same statement run once more, instead of an INSERT ... ON CONFLICT before every upload. The
    retry is needed even when the INSERT finds a row: another transaction may have created it meanwhile.
    """
    st = await _st(runner)
    params = {
        "b_scope": scope,
        "nbytes": nbytes,
        "objects": objects,
        "uploads": uploads,
        "max_bytes": max_bytes,
        "max_objects": max_objects,
        # No upload limit (fair sharing off: NO_LIMIT) means no condition; the column is a 32-bit integer.
        "uploads_unlimited": uploads == 0 or max_uploads >= 2**31,
        "max_uploads": min(max_uploads, 2**31 - 1),
        "now": utcnow(),
    }
    if await st.count(_TRY_RESERVE, params) == 1:
        return True
    await ensure_counter(st, scope)
    return await st.count(_TRY_RESERVE, params) == 1


def _adjust() -> Any:
    c = _counters.c
    return (
        update(_counters)
        .where(c.scope == bindparam("b_scope"))
        .values(
            bytes_used=c.bytes_used + bindparam("used", type_=BigInteger),
            object_count=c.object_count + bindparam("count", type_=BigInteger),
            bytes_reserved=c.bytes_reserved + bindparam("reserved", type_=BigInteger),
            objects_reserved=c.objects_reserved + bindparam("objects_reserved", type_=BigInteger),
            uploads_open=c.uploads_open + bindparam("uploads_open", type_=Integer),
            updated_at=_now,
        )
    )


_ADJUST = _adjust()


async def adjust(
    runner: Runner,
    scope: str,
    *,
    used: int = 0,
    count: int = 0,
    reserved: int = 0,
    objects_reserved: int = 0,
    uploads_open: int = 0,
) -> bool:
    """Apply settled deltas (after the bytes are stored or the reservation released); False: no such counter."""
    params = {
        "b_scope": scope,
        "used": used,
        "count": count,
        "reserved": reserved,
        "objects_reserved": objects_reserved,
        "uploads_open": uploads_open,
        "now": utcnow(),
    }
    return await (await _st(runner)).count(_ADJUST, params) == 1


async def release(runner: Runner, held: Reservation) -> None:
    """Give back what a reservation held, to the user's and (if any) the writing key's counters."""
    session = await _st(runner)
    await adjust(
        session,
        user_scope(held.user_id),
        reserved=-held.bytes,
        objects_reserved=-held.objects,
        uploads_open=-held.uploads,
    )
    if held.api_key_id:
        await adjust(
            session,
            key_scope(held.api_key_id),
            reserved=-held.key_bytes,
            objects_reserved=-held.key_objects,
            uploads_open=-held.uploads,
        )


# --- reservations ---------------------------------------------------------------------------------


def add_reservation(session: AsyncSession, reservation: Reservation) -> None:
    session.add(reservation)


def _insert_reservation(insert: Any) -> Any:
    r = _reservations.c
    names = ("id", "user_id", "name", "api_key_id", "kind", "declared_size", "content_type", "created_at")
    stmt = insert(_reservations).values(
        **{n: bindparam(n, type_=r[n].type) for n in names},
        expires_at=bindparam("expires_at", type_=r.expires_at.type),
        bytes=0,
        objects=0,
        key_bytes=0,
        key_objects=0,
        uploads=0,
        discard=False,
    )
    return stmt.on_conflict_do_nothing(index_elements=["user_id", "name"]).returning(r.id)


_INSERT_RESERVATION = {
    "postgresql": _insert_reservation(postgresql.insert),
    "sqlite": _insert_reservation(sqlite.insert),
}


async def insert_reservation(
    runner: Runner,
    *,
    user_id: str,
    name: str,
    api_key_id: str | None,
    kind: str,
    declared_size: int | None,
    content_type: str | None,
    expires_at: datetime,
) -> str | None:
    """Take the name's write lock: insert an empty reservation and return its id, or None if the name is held.

    One `INSERT ... ON CONFLICT (user_id, name) DO NOTHING RETURNING id`: a conflict is an answer, not an error,
    so it needs no savepoint and leaves the transaction usable. On PostgreSQL a conflicting row that is not
    committed yet makes it wait for that transaction, exactly as the unique index did for a plain INSERT.
    """
    st = await _st(runner)
    params = {
        "id": new_id(),
        "user_id": user_id,
        "name": name,
        "api_key_id": api_key_id,
        "kind": kind,
        "declared_size": declared_size,
        "content_type": content_type,
        "created_at": utcnow(),
        "expires_at": expires_at,
    }
    rows = await st.rows(_INSERT_RESERVATION[_dialect(st)], params)
    return rows[0].id if rows else None


_HOLD = (
    update(_reservations)
    .where(_reservations.c.id == bindparam("b_id"))
    .values(
        bytes=bindparam("nbytes", type_=BigInteger),
        objects=bindparam("objects", type_=Integer),
        key_bytes=bindparam("key_bytes", type_=BigInteger),
        key_objects=bindparam("key_objects", type_=Integer),
        uploads=1,
        discard=bindparam("discard", type_=Boolean),
    )
)


async def hold(
    runner: Runner,
    reservation_id: str,
    *,
    nbytes: int,
    objects: int,
    key_bytes: int,
    key_objects: int,
    discard: bool = False,
) -> None:
    """Record on a reservation just taken what `begin` reserved for it, its upload slot, and whether a left-over
    write under its key is to be discarded (one UPDATE for all of it)."""
    params = {
        "b_id": reservation_id,
        "nbytes": nbytes,
        "objects": objects,
        "key_bytes": key_bytes,
        "key_objects": key_objects,
        "discard": discard,
    }
    await (await _st(runner)).count(_HOLD, params)


_GROW = (
    update(_reservations)
    .where(_reservations.c.id == bindparam("b_id"))
    .values(
        bytes=_reservations.c.bytes + bindparam("nbytes", type_=BigInteger),
        key_bytes=_reservations.c.key_bytes + bindparam("key_bytes", type_=BigInteger),
        expires_at=bindparam("b_expires_at", type_=_reservations.c.expires_at.type),
    )
)


async def grow_reservation(
    runner: Runner, reservation_id: str, *, nbytes: int, key_bytes: int, expires_at: datetime
) -> None:
    params = {"b_id": reservation_id, "nbytes": nbytes, "key_bytes": key_bytes, "b_expires_at": expires_at}
    await (await _st(runner)).count(_GROW, params)


async def expire_now(session: AsyncSession, reservation_id: str, now: datetime) -> None:
    """Hand a reservation to the expiry job from `now` on (its upload ended with the outcome unknown)."""
    r = Reservation
    await session.execute(
        update(r).where(r.id == reservation_id).values(expires_at=now).execution_options(synchronize_session=False)
    )


_TAKE_RESERVATION = delete(_reservations).where(_reservations.c.id == bindparam("id")).returning(*_reservations.c)


async def take_reservation(runner: Runner, reservation_id: str) -> Reservation | None:
    """Remove a reservation and return what it held (None if the expiry job already released it): its row, read
    by attribute like the entity."""
    rows = await (await _st(runner)).rows(_TAKE_RESERVATION, {"id": reservation_id})
    return rows[0] if rows else None


async def get_reservation_by_id(session: AsyncSession, reservation_id: str) -> Reservation | None:
    """A reservation by id alone: only for the signed endpoints, whose signature names the upload."""
    return await session.get(Reservation, reservation_id, populate_existing=True)


async def get_reservation_by_backend_upload_id(session: AsyncSession, backend_upload_id: str) -> Reservation | None:
    """The reservation of a direct multipart upload, by the backend's upload id (signed part URLs name it)."""
    stmt = select(Reservation).where(Reservation.backend_upload_id == backend_upload_id)
    return (await session.scalars(stmt)).first()


async def claim_reservation(
    session: AsyncSession, reservation_id: str, *, from_kind: str, to_kind: str
) -> Reservation | None:
    """Move a reservation to `to_kind` if it is still `from_kind` (one statement: one claimant wins)."""
    r = Reservation
    stmt = (
        update(r)
        .where(r.id == reservation_id, r.kind == from_kind)
        .values(kind=to_kind)
        .returning(r)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.execute(stmt)).scalars().first()


async def make_hold(session: AsyncSession, reservation_id: str) -> None:
    """Turn a reservation into a hold: it no longer locks its name, holds no object and no upload slot (the
    caller gives those back: `uploads.objects_only`), only its bytes."""
    r = Reservation
    await session.execute(
        update(r)
        .where(r.id == reservation_id)
        .values(kind="hold", name=None, objects=0, key_objects=0, uploads=0)
        .execution_options(synchronize_session=False)
    )


async def expired_reservations(session: AsyncSession, now: datetime, limit: int) -> Sequence[Reservation]:
    stmt = select(Reservation).where(Reservation.expires_at < now).order_by(Reservation.expires_at).limit(limit)
    return (await session.scalars(stmt)).all()


async def take_expired_reservation(session: AsyncSession, reservation_id: str, now: datetime) -> Reservation | None:
    """Claim an expired reservation (only one process wins it)."""
    stmt = (
        delete(Reservation).where(Reservation.id == reservation_id, Reservation.expires_at < now).returning(Reservation)
    )
    return (await session.execute(stmt)).scalars().first()


# --- objects --------------------------------------------------------------------------------------


async def get_object(
    session: AsyncSession, user_id: str, name: str, *, for_update: bool = False
) -> StorageObject | None:
    stmt = _owned(user_id).where(StorageObject.name == name)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


# user_id, name, size, etag, content_type, updated_at, headers, part_sizes
ObjectMetaRow = Row[str, str, int, str, str | None, datetime, dict[str, str] | None, list[list[int]] | None]
_OBJECT_META = (
    select(
        StorageObject.user_id,
        StorageObject.name,
        StorageObject.size,
        StorageObject.etag,
        StorageObject.content_type,
        StorageObject.updated_at,
        StorageObject.headers,
        StorageObject.part_sizes,
    )
    .where(StorageObject.user_id == bindparam("user_id"))
    .where(StorageObject.name == bindparam("name"))
)


async def object_meta(hot: HotReads, user_id: str, name: str) -> ObjectMetaRow | None:
    """The owner's object by name (the columns a download needs) in one AUTOCOMMIT round trip, no entity built;
    the statement is built once."""
    row: ObjectMetaRow | None = await hot.first(_OBJECT_META, {"user_id": user_id, "name": name})
    return row


def add_object(session: AsyncSession, obj: StorageObject) -> None:
    session.add(obj)


_OBJECT_VALUES = ("size", "etag", "content_type", "api_key_id", "headers", "part_sizes")


def _insert_object(insert: Any) -> Any:
    o = _objects.c
    names = ("id", "user_id", "name", *_OBJECT_VALUES)
    stmt = insert(_objects).values(
        **{n: bindparam(n, type_=o[n].type) for n in names},
        created_at=bindparam("now", type_=o.created_at.type),
        updated_at=bindparam("now", type_=o.updated_at.type),
    )
    return stmt.on_conflict_do_nothing(index_elements=["user_id", "name"]).returning(*_objects.c)


_INSERT_OBJECT = {"postgresql": _insert_object(postgresql.insert), "sqlite": _insert_object(sqlite.insert)}
_UPDATE_OBJECT = (
    update(_objects)
    .where(_objects.c.user_id == bindparam("b_user_id"), _objects.c.name == bindparam("b_name"))
    .values(
        **{n: bindparam("b_" + n, type_=_objects.c[n].type) for n in _OBJECT_VALUES},
        updated_at=bindparam("b_now", type_=_objects.c.updated_at.type),
    )
    .returning(*_objects.c)
)
_WRITTEN = select(_objects.c.size, _objects.c.etag, _objects.c.api_key_id).where(
    _objects.c.user_id == bindparam("user_id"), _objects.c.name == bindparam("name")
)
_WRITTEN_FOR_UPDATE = _WRITTEN.with_for_update()


async def written(runner: Runner, user_id: str, name: str, *, for_update: bool = False) -> Any | None:
    """What a write replaces: the name's size, etag and writing key (a row), or None for a new name."""
    stmt = _WRITTEN_FOR_UPDATE if for_update else _WRITTEN
    rows = await (await _st(runner)).rows(stmt, {"user_id": user_id, "name": name})
    return rows[0] if rows else None


def _object_params(user_id: str, name: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": user_id, "name": name, "now": utcnow(), **{n: values.get(n) for n in _OBJECT_VALUES}}


async def insert_object(runner: Runner, *, user_id: str, name: str, **values: Any) -> StorageObject | None:
    """Insert the name's row unless it has one (None then): `INSERT ... ON CONFLICT DO NOTHING RETURNING` the row
    (read by attribute like the entity). `values`: size, etag, content_type, api_key_id, headers, part_sizes.

    On PostgreSQL an uncommitted row of the same name makes it wait for that transaction, like the unique index
    does for a plain INSERT; a conflict is an answer here, not an error that would abort the transaction.
    """
    st = await _st(runner)
    params = {"id": new_id(), **_object_params(user_id, name, values)}
    rows = await st.rows(_INSERT_OBJECT[_dialect(st)], params)
    return rows[0] if rows else None


async def update_object(runner: Runner, *, user_id: str, name: str, **values: Any) -> StorageObject | None:
    """Replace the name's row's content and metadata (the same `values` as insert_object); its row, or None."""
    params = {"b_" + k: v for k, v in _object_params(user_id, name, values).items()}
    rows = await (await _st(runner)).rows(_UPDATE_OBJECT, params)
    return rows[0] if rows else None


async def delete_object(session: AsyncSession, obj: StorageObject) -> None:
    await session.delete(obj)


# What a listing shows of each object, as plain rows (no entities): key (the name), size, content_type, etag,
# last_modified (updated_at). Labelled as the response fields are named, so validating ObjectListItem from a row
# finds each on the first try (a miss on a Row raises and catches an AttributeError).
ListedRow = Row[str, int, str | None, str, datetime]
_LISTED = select(
    StorageObject.name.label("key"),
    StorageObject.size,
    StorageObject.content_type,
    StorageObject.etag,
    StorageObject.updated_at.label("last_modified"),
)


@functools.cache
def _listing(low: bool, high: bool, after: bool) -> Any:
    """The listing statement for one combination of bounds (eight in all, each built once):
    `name >= :low`, `name < :high`, `name > :after`, always `user_id = :user_id` and `LIMIT :limit`."""
    stmt: Any = (
        _LISTED.where(StorageObject.user_id == bindparam("user_id"))
        .order_by(StorageObject.name)
        .limit(bindparam("limit"))
    )
    if low:
        stmt = stmt.where(StorageObject.name >= bindparam("low"))
    if high:
        stmt = stmt.where(StorageObject.name < bindparam("high"))
    if after:
        stmt = stmt.where(StorageObject.name > bindparam("after"))
    return stmt


async def _list_between(
    hot: HotReads, user_id: str, *, low: str, high: str | None, after: str | None, limit: int
) -> Sequence[ListedRow]:
    stmt = _listing(bool(low), high is not None, after is not None)
    params = {"user_id": user_id, "low": low, "high": high, "after": after, "limit": limit}
    rows: Sequence[ListedRow] = await hot.all(stmt, params)
    return rows


async def list_names(hot: HotReads, user_id: str, *, prefix: str, after: str | None, limit: int) -> Sequence[ListedRow]:
    """Objects whose name starts with `prefix`, in byte order, strictly after `after` (one AUTOCOMMIT read)."""
    high = prefix_end(prefix) if prefix else None
    return await _list_between(hot, user_id, low=prefix, high=high, after=after, limit=limit)


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix`, for an index range scan.

    UTF-8 byte order equals code point order, so incrementing the last code point is enough.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= 0x10FFFF:
            return "".join(chars) + chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)
    return None


async def get_objects(session: AsyncSession, user_id: str, names: Sequence[str]) -> Sequence[StorageObject]:
    if not names:
        return []
    return (await session.scalars(_owned(user_id).where(StorageObject.name.in_(names)))).all()


async def list_from(hot: HotReads, user_id: str, *, prefix: str, start: str, limit: int) -> Sequence[ListedRow]:
    """Like list_names, but from `start` inclusive (used to skip past a whole folder)."""
    high = prefix_end(prefix) if prefix else None
    return await _list_between(hot, user_id, low=max(start, prefix), high=high, after=None, limit=limit)


# --- admin overview -----------------------------------------------------------------------------------------


async def usage_totals(session: AsyncSession) -> tuple[int, int, int, int]:
    """Bytes used, objects, bytes reserved and users with usage, over every user scope."""
    c = UsageCounter
    stmt = select(
        func.coalesce(func.sum(c.bytes_used), 0),
        func.coalesce(func.sum(c.object_count), 0),
        func.coalesce(func.sum(c.bytes_reserved), 0),
        func.count(),
    ).where(c.scope.like("user:%"))
    used, objects, reserved, users = (await session.execute(stmt)).one()
    return int(used), int(objects), int(reserved), int(users)


# user id, email, tier name, bytes used, object count, the tier's byte and object limits (None: no tier)
UsageRow = Row[str, str, str | None, int, int, int | None, int | None]


def _per_user() -> Select[str, str, str | None, int, int, int | None, int | None]:
    c = UsageCounter
    return (
        select(User.id, User.email, Tier.name, c.bytes_used, c.object_count, Tier.storage_bytes, Tier.max_objects)
        .join(c, c.scope == literal("user:") + User.id)
        .outerjoin(Tier, Tier.id == User.tier_id)
    )


async def top_users(session: AsyncSession, limit: int) -> Sequence[UsageRow]:
    stmt = _per_user().order_by(UsageCounter.bytes_used.desc()).limit(limit)
    return (await session.execute(stmt)).all()


async def users_near_quota(session: AsyncSession, ratio_percent: int, limit: int) -> Sequence[UsageRow]:
    """Users at or above `ratio_percent` of their byte or object limit (no tier counts as a limit of 0)."""
    c = UsageCounter
    byte_limit = func.coalesce(Tier.storage_bytes, 0)
    object_limit = func.coalesce(Tier.max_objects, 0)
    stmt = (
        _per_user()
        .where(
            or_(
                c.bytes_used * 100 >= byte_limit * ratio_percent,
                c.object_count * 100 >= object_limit * ratio_percent,
            ),
            or_(c.bytes_used > 0, c.object_count > 0),
        )
        .order_by(c.bytes_used.desc())
        .limit(limit)
    )
    return (await session.execute(stmt)).all()


async def users_page(
    session: AsyncSession, *, after_id: str | None, limit: int, query: str | None, email_query: str | None
) -> Sequence[Any]:
    """Admin list: a page of users (id order, the users domain's search) with tier and usage, in one query."""
    c = UsageCounter
    stmt = (
        select(
            User.id,
            User.email,
            User.name,
            User.role,
            User.is_active,
            User.created_at,
            Tier.name.label("tier_name"),
            func.coalesce(c.bytes_used, 0).label("bytes_used"),
            func.coalesce(c.object_count, 0).label("object_count"),
            Tier.storage_bytes,
            Tier.max_objects,
        )
        .outerjoin(c, c.scope == literal("user:") + User.id)
        .outerjoin(Tier, Tier.id == User.tier_id)
        .order_by(User.id)
        .limit(limit)
    )
    if after_id:
        stmt = stmt.where(User.id > after_id)
    if query:
        stmt = stmt.where(users.matching(query, email_query))
    return (await session.execute(stmt)).all()


async def get_reservation(session: AsyncSession, user_id: str, reservation_id: str) -> Reservation | None:
    """One of the user's reservations (another user's id is indistinguishable from a missing one)."""
    stmt = select(Reservation).where(Reservation.id == reservation_id, Reservation.user_id == user_id)
    return (await session.scalars(stmt)).first()


async def get_reservation_by_name(
    session: AsyncSession, user_id: str, name: str, *, for_update: bool = False
) -> Reservation | None:
    stmt = select(Reservation).where(Reservation.user_id == user_id, Reservation.name == name)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def set_backend_upload_id(session: AsyncSession, reservation_id: str, backend_upload_id: str) -> None:
    await session.execute(
        update(Reservation)
        .where(Reservation.id == reservation_id)
        .values(backend_upload_id=backend_upload_id)
        .execution_options(synchronize_session=False)
    )


# --- reconciliation ---------------------------------------------------------------------------------------


def _sums(user_id: str) -> Any:
    o = StorageObject
    return (
        select(func.coalesce(func.sum(o.size), 0)).where(o.user_id == user_id).scalar_subquery(),
        select(func.count(o.id)).where(o.user_id == user_id).scalar_subquery(),
    )


async def row_sums(session: AsyncSession, user_id: str) -> tuple[int, int]:
    """Bytes and objects over the user's rows (a statement of its own: its own snapshot)."""
    o = StorageObject
    stmt = select(func.coalesce(func.sum(o.size), 0), func.count(o.id)).where(o.user_id == user_id)
    total, objects = (await session.execute(stmt)).one()
    return int(total), int(objects)


async def counter_and_row_sums(session: AsyncSession, user_id: str) -> tuple[int, int, int, int]:
    """(counter bytes, counter objects, row bytes, row objects) in ONE statement, so from one snapshot."""
    c, scope = UsageCounter, user_scope(user_id)
    sum_bytes, sum_count = _sums(user_id)
    stmt = select(
        func.coalesce(select(c.bytes_used).where(c.scope == scope).scalar_subquery(), 0),
        func.coalesce(select(c.object_count).where(c.scope == scope).scalar_subquery(), 0),
        sum_bytes,
        sum_count,
    )
    used, count, total, objects = (await session.execute(stmt)).one()
    return int(used), int(count), int(total), int(objects)


async def lock_counter(session: AsyncSession, scope: str) -> UsageCounter | None:
    return await session.get(UsageCounter, scope, with_for_update=True, populate_existing=True)


async def set_usage(session: AsyncSession, scope: str, *, bytes_used: int, object_count: int) -> None:
    """Overwrite a counter's usage (only under its row lock: see reconcile.recount_usage)."""
    await session.execute(
        update(UsageCounter)
        .where(UsageCounter.scope == scope)
        .values(bytes_used=bytes_used, object_count=object_count)
        .execution_options(synchronize_session=False)
    )


async def name_size_etag_page(
    reader: AsyncEngine, user_id: str, after: str | None, limit: int
) -> list[tuple[str, int, str]]:
    """Keyset page of (name, size, etag) in name order, without building entities, as one AUTOCOMMIT read."""
    o = StorageObject
    stmt = select(o.name, o.size, o.etag).where(o.user_id == user_id).order_by(o.name).limit(limit)
    if after is not None:
        stmt = stmt.where(o.name > after)
    async with reader.connect() as conn:
        return [(name, size, etag) for name, size, etag in (await conn.execute(stmt)).all()]


async def update_report(session: AsyncSession, report_id: str, **values: Any) -> None:
    await session.execute(
        update(ReconciliationReport)
        .where(ReconciliationReport.id == report_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def list_reports(session: AsyncSession, *, before_id: str | None, limit: int) -> Sequence[ReconciliationReport]:
    stmt = select(ReconciliationReport).order_by(ReconciliationReport.id.desc()).limit(limit)
    if before_id:
        stmt = stmt.where(ReconciliationReport.id < before_id)
    return (await session.scalars(stmt)).all()


async def set_event_outcome(session: AsyncSession, event_id: str, outcome: str) -> None:
    await session.execute(
        update(StorageEvent)
        .where(StorageEvent.id == event_id)
        .values(outcome=outcome)
        .execution_options(synchronize_session=False)
    )


# --- S3 multipart uploads (reservations of kind "parts") -------------------------------------------------


async def insert_parts_upload(
    session: AsyncSession,
    *,
    user_id: str,
    target: str,
    api_key_id: str | None,
    backend_upload_id: str,
    content_type: str | None,
    headers: dict[str, str] | None,
    expires_at: datetime,
) -> str:
    """A multipart upload in progress: a reservation holding nothing yet, naming no file (it locks nothing)."""
    row = Reservation(
        user_id=user_id,
        name=None,
        target=target,
        api_key_id=api_key_id,
        kind="parts",
        backend_upload_id=backend_upload_id,
        content_type=content_type,
        headers=headers,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row.id


async def get_parts_upload(session: AsyncSession, user_id: str, upload_id: str) -> Reservation | None:
    """One of the user's multipart uploads (another user's id is indistinguishable from a missing one)."""
    r = Reservation
    stmt = select(r).where(r.id == upload_id, r.user_id == user_id, r.kind == "parts")
    return (await session.scalars(stmt)).first()


async def add_part_bytes(
    session: AsyncSession, upload_id: str, *, nbytes: int, key_bytes: int, expires_at: datetime | None = None
) -> bool:
    """Add (or, negative, give back) bytes held for a part, if the upload is still open (one UPDATE; False:
    it was completed or aborted meanwhile, and whoever took it released what it held)."""
    r = Reservation
    values: dict[str, Any] = {"bytes": r.bytes + nbytes, "key_bytes": r.key_bytes + key_bytes}
    if expires_at is not None:
        values["expires_at"] = expires_at
    stmt = (
        update(r)
        .where(r.id == upload_id, r.kind == "parts")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def list_parts_uploads(
    session: AsyncSession, user_id: str, *, prefix: str, after: tuple[str, str] | None, limit: int
) -> Sequence[Reservation]:
    """The user's multipart uploads under `prefix`, by (target, id) — key order, then initiation (ids are ULIDs)
    — starting after `after`."""
    r = Reservation
    stmt = select(r).where(r.user_id == user_id, r.kind == "parts")
    if prefix:
        stmt = stmt.where(r.target >= prefix)
        end = prefix_end(prefix)
        if end is not None:
            stmt = stmt.where(r.target < end)
    if after is not None:
        stmt = stmt.where(or_(r.target > after[0], and_(r.target == after[0], r.id > after[1])))
    return (await session.scalars(stmt.order_by(r.target, r.id).limit(limit))).all()


async def tracked_backend_uploads(session: AsyncSession) -> set[str]:
    """The backend upload ids of every multipart upload Pockity still tracks (the stale-upload job keeps them)."""
    stmt = select(Reservation.backend_upload_id).where(Reservation.backend_upload_id.is_not(None))
    return {row for row in (await session.scalars(stmt)).all() if row is not None}
