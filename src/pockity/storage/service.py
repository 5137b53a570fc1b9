"""Files of one user: names, listing, downloads, name locks and usage. Uploads live in uploads.py, deletes in
deletes.py (flows that commit between their steps)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.auth.schemas import Principal
from pockity.auth.service import ScopeDenied, authorize
from pockity.db import Database
from pockity.errors import NotFound, ValidationFailed
from pockity.kit import media_types
from pockity.kit.object_names import InvalidName, has_control_characters, validate_object_name
from pockity.kit.pagination import keyset_page
from pockity.kit.time import utcnow
from pockity.models import ReconciliationReport, Reservation, StorageObject, Tier
from pockity.storage import repository as repo
from pockity.storage.backends import (
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    StorageBackend,
)
from pockity.storage.backends.base import content_disposition
from pockity.storage.keys import physical_key
from pockity.storage.quota import user_tier
from pockity.storage.repository import key_scope, user_scope
from pockity.storage.uploads import record_object
from pockity.users.schemas import normalise_search

DELIMITER = "/"
LOCK_TTL = timedelta(minutes=15)


class FileNotFound(NotFound):
    code, message = "file_not_found", "The file does not exist."


def checked_name(principal: Principal, name: str, scope: str) -> str:
    """Validate a user-chosen name and check the caller may use `scope` on it."""
    try:
        validate_object_name(name, physical_key(principal.user_id, ""))
    except InvalidName as exc:
        raise InvalidKey(f"The file name {exc}.", details={"key": name[:200]}) from None
    authorize(principal, scope, name)
    return name


# --- listing ------------------------------------------------------------------------------------------


def not_a_name_prefix(prefix: str) -> bool:
    """Whether no valid name can start with `prefix` (a leading '/', a backslash, a control character)."""
    return prefix.startswith("/") or "\\" in prefix or has_control_characters(prefix)


def listing_prefix(principal: Principal, prefix: str) -> str:
    """An API key limited to a folder lists inside it: a broader prefix is narrowed, another is refused."""
    key = principal.key
    authorize(principal, "list", key.prefix if key and key.prefix else prefix)
    if key and key.prefix and not prefix.startswith(key.prefix):
        if key.prefix.startswith(prefix):
            return key.prefix
        raise ScopeDenied(f"This API key is limited to names under '{key.prefix}'.", details={"prefix": key.prefix})
    return prefix


def _decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
        validate_object_name(value.rstrip(DELIMITER) or "x")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed("The cursor is not valid.", code="invalid_cursor") from None
    return value


def _encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


@dataclass
class Page:
    items: list[repo.ListedRow]
    folders: list[str]
    next_cursor: str | None


async def list_objects(
    db: Database,
    principal: Principal,
    *,
    prefix: str,
    delimiter: str | None,
    limit: int,
    cursor: str | None,
    after: str | None = None,
) -> Page:
    """One page in name order, after the `cursor` (or a plain name, `after`); with a delimiter (S3 allows any
    string, "/" is the usual one) the names that contain it after the prefix fold into their folder (the name up
    to and including the delimiter's first occurrence), S3-style. Each read is one
    AUTOCOMMIT statement of plain rows: each sees the latest commit, as in a READ COMMITTED transaction on
    PostgreSQL (on SQLite a page's statements no longer share one snapshot)."""
    if prefix and (not_a_name_prefix(prefix) or len(prefix.encode()) > 1024):
        raise InvalidKey("The prefix is not valid.")  # the S3 API lists nothing instead (s3api/buckets.py)
    if after and "\x00" in after:  # PostgreSQL cannot compare text with a NUL (any other position is fine)
        raise ValidationFailed("The listing's start is not valid.", code="invalid_cursor")
    prefix = listing_prefix(principal, prefix)
    last = _decode_cursor(cursor)
    if last is None and after:  # S3's start-after / marker: any name, not necessarily under the prefix
        if after < prefix:
            last = None
        elif not after.startswith(prefix):
            return Page(items=[], folders=[], next_cursor=None)  # past every name under the prefix
        else:
            last = after
    if last is not None and not last.startswith(prefix):
        raise ValidationFailed("The cursor does not belong to this listing.", code="invalid_cursor")
    items: list[repo.ListedRow] = []
    folders: list[str] = []
    # Position: after the last entry; after a folder means past every name inside it.
    start, inclusive = (last, False) if last is not None else (prefix, True)
    if last is not None and delimiter and last.endswith(delimiter):
        start, inclusive = repo.prefix_end(last) or "\U0010ffff", True
    more = False
    probe = False  # right after a folder, look one name ahead: most probes just find the next folder
    while True:
        want = 1 if probe else limit - len(items) - len(folders) + 1
        rows = await _fetch(db, principal.user_id, prefix, start, inclusive, want)
        if not rows:
            break
        skipped = False
        for row in rows:
            if len(items) + len(folders) == limit:
                more = True
                break
            rest = row.key[len(prefix) :]
            cut = rest.find(delimiter) if delimiter else -1
            if delimiter and cut >= 0:
                folders.append(prefix + rest[: cut + len(delimiter)])
                start, inclusive = repo.prefix_end(folders[-1]) or "\U0010ffff", True
                skipped = True
                break
            items.append(row)
            start, inclusive = row.key, False
        if more:
            break
        if not skipped and len(rows) < want:
            break
        probe = skipped
    entries = [*(o.key for o in items), *folders]
    next_cursor = _encode_cursor(max(entries)) if more and entries else None
    return Page(items=items, folders=folders, next_cursor=next_cursor)


async def _fetch(
    db: Database, user_id: str, prefix: str, start: str, inclusive: bool, limit: int
) -> Sequence[repo.ListedRow]:
    if inclusive:
        return await repo.list_from(db.hot, user_id, prefix=prefix, start=start, limit=limit)
    return await repo.list_names(db.hot, user_id, prefix=prefix, after=start, limit=limit)


# --- reading --------------------------------------------------------------------------------------------


async def get_object(session: AsyncSession, principal: Principal, name: str) -> StorageObject:
    """The caller's object by name (read scope)."""
    checked_name(principal, name, "read")
    obj = await repo.get_object(session, principal.user_id, name)
    if obj is None:
        raise FileNotFound(details={"key": name})
    return obj


# What a download reads of an object: a StorageObject, or the row of `get_object_meta` (same attribute names).
ObjectMeta = StorageObject | repo.ObjectMetaRow


async def get_object_meta(db: Database, principal: Principal, name: str) -> ObjectMeta:
    """Like get_object for read-only requests: one AUTOCOMMIT read of the columns a download needs (no
    transaction, no ORM entity), for the metadata and content routes."""
    checked_name(principal, name, "read")
    row = await repo.object_meta(db.hot, principal.user_id, name)
    if row is None:
        raise FileNotFound(details={"key": name})
    return row


@dataclass(frozen=True)
class Download:
    """A file's metadata and a time-limited URL to fetch it (the REST API's `GET /files/{key}`)."""

    key: str
    url: str
    expires_at: datetime
    size: int
    content_type: str | None
    etag: str
    last_modified: datetime


def download(backend: StorageBackend, obj: ObjectMeta, expires_in: int) -> Download:
    """A presigned (S3) or HMAC-signed (local) URL valid for `expires_in` seconds, with the file's metadata."""
    filename = obj.name.rsplit("/", 1)[-1]
    url = backend.presign_get(physical_key(obj.user_id, obj.name), expires_in, filename=filename)
    return Download(
        key=obj.name,
        url=url,
        expires_at=utcnow() + timedelta(seconds=expires_in),
        size=obj.size,
        content_type=obj.content_type,
        etag=obj.etag,
        last_modified=obj.updated_at,
    )


def download_headers(name: str, content_type: str | None) -> dict[str, str]:
    """Headers for serving a user's file from Pockity's own origin: active types (HTML, SVG, XML, JavaScript,
    anything not known to be passive) go out as an attachment under `Content-Security-Policy: sandbox`, so a
    file can never run as a page of this origin (with the caller's token or cookies in reach)."""
    if media_types.is_passive(media_types.safe(content_type)):
        return {}
    return {"Content-Disposition": content_disposition(name.rsplit("/", 1)[-1]), "Content-Security-Policy": "sandbox"}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range → inclusive (start, end); None for the whole object."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # unsupported forms are ignored, as RFC 9110 allows
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0 or size == 0:
                raise InvalidRange(details={"size": size})
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return None
    if end is not None and end < start:
        return None  # not a valid byte-range-spec: the header is ignored (RFC 9110 §14.1.1)
    if start >= size:
        raise InvalidRange(details={"size": size})
    return start, size - 1 if end is None else min(end, size - 1)


async def open_content(
    backend: StorageBackend, obj: ObjectMeta, byte_range: tuple[int, int] | None
) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
    """Stream the object (or a range of it) from the backend."""
    start, end = byte_range if byte_range else (None, None)
    try:
        return await backend.open_range(physical_key(obj.user_id, obj.name), start, end)
    except ObjectNotFound:
        raise FileNotFound(details={"key": obj.name}) from None


# --- deleting -------------------------------------------------------------------------------------------


async def lock_name(session: AsyncSession, user_id: str, name: str) -> Reservation | None:
    """Take the name's write lock (an empty reservation, unique per user and name); None if it is held.

    Deletes commit it while the backend works; repairs insert and delete it in one transaction, so on
    PostgreSQL an upload that tries to take the name meanwhile waits for the commit instead of failing.
    """
    lock = Reservation(
        user_id=user_id,
        name=name,
        kind="lock",
        bytes=0,
        objects=0,
        key_bytes=0,
        key_objects=0,
        expires_at=utcnow() + LOCK_TTL,
    )
    try:
        async with session.begin_nested():
            repo.add_reservation(session, lock)
            await session.flush()
    except IntegrityError:
        return None  # the savepoint's rollback has already removed `lock` from the session
    return lock


async def forget(session: AsyncSession, obj: StorageObject) -> None:
    await repo.adjust(session, user_scope(obj.user_id), used=-obj.size, count=-1)
    if obj.api_key_id:
        await repo.adjust(session, key_scope(obj.api_key_id), used=-obj.size, count=-1)
    await repo.delete_object(session, obj)


# --- usage ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierLimits:
    """The tier fields a usage report shows (what `read_usage` reads instead of a Tier entity)."""

    id: str
    name: str
    storage_bytes: int
    max_objects: int
    max_object_size_bytes: int | None


@dataclass
class Usage:
    """A user's counters against their tier's limits, as of when they were read."""

    bytes_used: int
    object_count: int
    bytes_reserved: int
    tier: Tier | TierLimits | None
    as_of: datetime = field(default_factory=utcnow)

    @property
    def storage_limit_bytes(self) -> int:
        return self.tier.storage_bytes if self.tier else 0

    @property
    def max_objects(self) -> int:
        return self.tier.max_objects if self.tier else 0

    @property
    def percent_used(self) -> float:
        """Bytes used as a percentage of the limit; with no storage allowed, 100 once anything is stored."""
        limit = self.storage_limit_bytes
        if limit:
            return round(100 * self.bytes_used / limit, 2)
        return 100.0 if self.bytes_used else 0.0

    @property
    def over_quota(self) -> bool:
        return self.bytes_used > self.storage_limit_bytes or self.object_count > self.max_objects


async def usage(session: AsyncSession, user_id: str) -> Usage:
    """The user's counters and tier."""
    counter = await repo.get_counter(session, user_scope(user_id))
    tier = await user_tier(session, user_id)
    if counter is None:
        return Usage(0, 0, 0, tier)
    return Usage(counter.bytes_used, counter.object_count, counter.bytes_reserved, tier)


async def read_usage(db: Database, user_id: str) -> Usage:
    """The same as `usage` for the usage route: one AUTOCOMMIT read of the counters and the tier, no entities."""
    row = await repo.usage_row(db.hot, user_id)
    if row is None:
        return Usage(0, 0, 0, None)
    tier = None
    if row.tier_id is not None:
        tier = TierLimits(row.tier_id, row.tier_name, row.storage_bytes, row.max_objects, row.max_object_size_bytes)
    return Usage(row.bytes_used or 0, row.object_count or 0, row.bytes_reserved or 0, tier)


# --- repair -------------------------------------------------------------------------------------------------


async def reconcile_name(session: AsyncSession, backend: StorageBackend, user_id: str, name: str) -> str | None:
    """Make one name's row agree with the backend: adopt, correct or drop. Returns what changed, if anything.

    The hook for crashes between a backend write and the database commit; the caller must hold the name
    (an upload's expired reservation, or the name's lock) so no upload of it runs meanwhile.
    """
    try:
        info: ObjectInfo | None = await backend.head(physical_key(user_id, name))
    except ObjectNotFound:
        info = None
    obj = await repo.get_object(session, user_id, name, for_update=True)
    if info is None:
        if obj is None:
            return None
        await forget(session, obj)
        return "dropped"
    if obj is not None and obj.size == info.size and obj.etag == info.etag:
        return None
    await record_object(
        session,
        user_id,
        name,
        size=info.size,
        etag=info.etag,
        content_type=info.content_type or (obj.content_type if obj else None),
        writer_key_id=None,
    )
    return "adopted" if obj is None else "corrected"


@dataclass
class Overview:
    bytes_used: int
    object_count: int
    bytes_reserved: int
    users_with_usage: int
    top: list[dict[str, Any]]
    near_quota: list[dict[str, Any]]


def _usage_row(row: repo.UsageRow) -> dict[str, Any]:
    user_id, email, tier_name, used, count, limit, max_objects = row
    return {
        "user_id": user_id,
        "email": email,
        "tier": tier_name,
        "bytes_used": used,
        "object_count": count,
        "storage_limit_bytes": limit or 0,
        "max_objects": max_objects or 0,
        "percent_used": round(100 * used / limit, 2) if limit else None,
        "over_quota": used > (limit or 0) or count > (max_objects or 0),
    }


async def overview(session: AsyncSession, *, top: int = 10, near_percent: int = 90) -> Overview:
    """Admin: totals, the biggest users, and users near (≥ near_percent) or over their quota."""
    used, objects, reserved, users = await repo.usage_totals(session)
    return Overview(
        used,
        objects,
        reserved,
        users,
        [_usage_row(r) for r in await repo.top_users(session, top)],
        [_usage_row(r) for r in await repo.users_near_quota(session, near_percent, 100)],
    )


@dataclass(frozen=True)
class UserUsage:
    """One row of the admin user list: the account, its tier's name and limits, and its usage."""

    id: str
    email: str
    name: str
    role: str
    is_active: bool
    created_at: datetime
    tier_name: str | None
    bytes_used: int
    object_count: int
    storage_limit_bytes: int
    max_objects: int


async def users_with_usage(
    session: AsyncSession, *, cursor: str | None, limit: int, query: str | None
) -> tuple[Sequence[UserUsage], str | None]:
    """Admin: a page of users (the same search and order as `users.service.list_users`) with tier and usage,
    read with one query however long the page."""
    rows = await repo.users_page(
        session,
        after_id=cursor,
        limit=limit + 1,
        query=query,
        email_query=normalise_search(query) if query else None,
    )
    items = [
        UserUsage(
            r.id,
            r.email,
            r.name,
            r.role,
            r.is_active,
            r.created_at,
            r.tier_name,
            int(r.bytes_used),
            int(r.object_count),
            r.storage_bytes or 0,
            r.max_objects or 0,
        )
        for r in rows
    ]
    return keyset_page(items, limit)


class ReconciliationNotFound(NotFound):
    code, message = "reconciliation_not_found", "No such reconciliation report."


# --- reading reports ---------------------------------------------------------------------------------------


async def get_report(session: AsyncSession, report_id: str) -> ReconciliationReport:
    """One report, as stored now."""
    found = await session.get(ReconciliationReport, report_id, populate_existing=True)
    if found is None:
        raise ReconciliationNotFound(details={"id": report_id})
    return found


async def list_reports(
    session: AsyncSession, *, cursor: str | None = None, limit: int = 50
) -> tuple[Sequence[ReconciliationReport], str | None]:
    """Newest first (ids are time-ordered); the cursor is the id of the previous page's last report."""
    return keyset_page(await repo.list_reports(session, before_id=cursor, limit=limit + 1), limit)
