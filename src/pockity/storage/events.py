"""S3 event notifications (the AWS `Records` format that AWS via SNS, Ceph RGW and MinIO send).

Each record is stored once (a unique dedupe key), then its object name is reconciled against the bucket's
current state with a HEAD — never applied from the event's own fields. That makes events idempotent (the
same event twice changes nothing) and order-safe (an older event cannot overwrite newer state: whatever
arrives, the row ends up equal to what the bucket holds now). A direct upload waiting for completion is
completed by whichever comes first — the event for its staging key, or the complete call — exactly once
(both claim the reservation; see storage/direct.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.db import Database, unit_of_work
from pockity.errors import BadRequest, PockityError, Unauthorized
from pockity.kit.crypto import constant_time_equals
from pockity.kit.object_names import InvalidName, validate_object_name
from pockity.models import StorageEvent
from pockity.storage import direct
from pockity.storage import repository as repo
from pockity.storage.backends import StorageBackend
from pockity.storage.keys import parse_staging_key
from pockity.storage.service import lock_name, reconcile_name
from pockity.users import repository as users

MAX_RECORDS = 1000
log = logging.getLogger("pockity.storage.events")


@dataclass(frozen=True)
class Record:
    event_name: str
    bucket: str | None
    key: str
    dedupe_key: str
    raw: dict[str, Any]


def parse(body: Any) -> tuple[list[Record], str | None]:
    """Records from a plain `{"Records": [...]}` body or an SNS envelope; also an SNS subscription URL if any."""
    if not isinstance(body, dict):
        raise BadRequest("Expected a JSON object.", code="invalid_event")
    if body.get("Type") == "SubscriptionConfirmation":
        return [], str(body.get("SubscribeURL") or "")
    if body.get("Type") == "Notification":
        try:
            body = json.loads(body.get("Message") or "")
        except (TypeError, ValueError):
            raise BadRequest("The SNS message is not JSON.", code="invalid_event") from None
    records = body.get("Records") if isinstance(body, dict) else None
    if not isinstance(records, list) or len(records) > MAX_RECORDS:
        raise BadRequest(f"Expected 'Records': a list of at most {MAX_RECORDS} records.", code="invalid_event")
    return [_record(r) for r in records], None


def _record(raw: Any) -> Record:
    try:
        name = str(raw["eventName"]).removeprefix("s3:")
        s3 = raw["s3"]
        bucket = s3.get("bucket", {}).get("name")
        obj = s3["object"]
        key = unquote_plus(str(obj["key"]))  # keys arrive URL-encoded
    except (KeyError, TypeError, AttributeError):
        raise BadRequest("A record lacks eventName or s3.object.key.", code="invalid_event") from None
    marker = raw.get("eventId") or obj.get("sequencer") or f"{raw.get('eventTime')}:{obj.get('eTag')}"
    return Record(name, bucket, key, f"{bucket}/{key}#{name}#{marker}"[:255], raw)


def check_token(given: str | None, expected: str | None) -> None:
    """The sender must present S3_EVENTS_TOKEN (constant-time comparison); with none configured, none is right."""
    if not given:
        raise Unauthorized()
    if not expected:  # the message tells the operator why
        raise Unauthorized("S3 event ingestion is not configured (set S3_EVENTS_TOKEN).", code="invalid_token")
    if not constant_time_equals(given, expected):
        raise Unauthorized("The event token is invalid.", code="invalid_token")


@dataclass(frozen=True)
class Received:
    received: int
    outcomes: dict[str, int]


async def receive(db: Database, backend: StorageBackend, bucket: str, raw: bytes) -> Received:
    """A notification body as it arrived: parsed, each record stored and applied once."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("The body is not valid JSON.", code="invalid_json") from None
    records, subscribe_url = parse(body)
    if subscribe_url is not None:
        # Pockity cannot reach SNS from every network; the operator confirms the subscription by hand.
        log.warning("SNS subscription confirmation received; confirm it by visiting %s", subscribe_url)
        return Received(0, {"subscription_confirmation": 1})
    return Received(len(records), await ingest(db, backend, bucket, records))


async def ingest(db: Database, backend: StorageBackend, bucket: str, records: list[Record]) -> dict[str, int]:
    """Store and apply each record once; returns how many had each outcome."""
    outcomes: dict[str, int] = {}
    for record in records:
        outcome = await _apply(db, backend, bucket, record)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


async def _apply(db: Database, backend: StorageBackend, bucket: str, record: Record) -> str:
    user_id, name, outcome = await _target(db, bucket, record)
    async with unit_of_work(db) as session:
        row = StorageEvent(
            dedupe_key=record.dedupe_key,
            event_name=record.event_name,
            bucket=record.bucket,
            object_key=record.key,
            user_id=user_id,
            outcome=outcome or "pending",
            payload=record.raw,
        )
        session.add(row)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            return "duplicate"
        if outcome is None and name is None:  # a direct upload's form has been sent: complete it
            row.outcome = "pending:staged"
        elif outcome is None:
            assert user_id is not None and name is not None
            row.outcome = await _sync(session, backend, user_id, name)
    if row.outcome == "pending:staged":
        outcome = await _complete_staged(db, backend, record.key)
        async with unit_of_work(db) as session:
            await repo.set_event_outcome(session, row.id, outcome)
        return outcome
    return row.outcome


async def _target(db: Database, bucket: str, record: Record) -> tuple[str | None, str | None, str | None]:
    """(user id, name, None) for an event to apply; (…, "ignored:<why>") otherwise."""
    if not (record.event_name.startswith("ObjectCreated:") or record.event_name.startswith("ObjectRemoved:")):
        return None, None, "ignored:event_type"
    if record.bucket not in (None, bucket):
        return None, None, "ignored:bucket"
    staged = parse_staging_key(record.key)
    if staged is not None:
        return staged[0], None, None if record.event_name.startswith("ObjectCreated:") else "ignored:staging"
    parts = record.key.split("/", 2)
    if len(parts) != 3 or parts[0] != "users":
        return None, None, "ignored:outside_users"
    user_id, name = parts[1], parts[2]
    try:
        validate_object_name(name, f"users/{user_id}/")
    except InvalidName:
        return user_id, None, "ignored:invalid_name"
    async with db.sessions() as session:
        if await users.get(session, user_id) is None:
            return None, None, "ignored:unknown_user"
    return user_id, name, None


async def _complete_staged(db: Database, backend: StorageBackend, key: str) -> str:
    """The staging key of an open direct upload received its form: complete the upload, as the client would."""
    staged = parse_staging_key(key)
    assert staged is not None
    user_id, upload_id = staged
    async with unit_of_work(db) as session:
        claimed = await repo.claim_reservation(session, upload_id, from_kind="direct", to_kind="closing")
    if claimed is None or claimed.user_id != user_id or claimed.backend_upload_id is not None:
        if claimed is not None:
            await direct.unclaim(db, upload_id)
        return "ignored:not_open"  # completed, cancelled (its hold covers the bytes) or unknown
    try:
        await direct.finish_staged(db, backend, claimed)
    except direct.UploadIncomplete:
        return "unchanged"  # deleted again before we looked
    except PockityError:
        return "deferred"  # the claim is back: the client's complete, or the expiry job, will finish it
    return "settled"


async def _sync(session: AsyncSession, backend: StorageBackend, user_id: str, name: str) -> str:
    if await repo.get_reservation_by_name(session, user_id, name, for_update=True) is not None:
        return "ignored:in_flight"  # an upload or delete through Pockity settles this name itself
    # The name's lock, as reconciliation takes it, so the two never adopt the same file at once.
    lock = await lock_name(session, user_id, name)
    if lock is None:
        return "ignored:in_flight"
    outcome = await reconcile_name(session, backend, user_id, name)
    await session.delete(lock)
    return outcome or "unchanged"
