"""The payments inbox: every verified provider event is stored once and processed exactly once.

1. The route verifies the signature over the raw body (nothing is stored for a bad one).
2. The event is inserted unless (provider, event id) exists — its own short transaction, so it is on record
   even if processing fails.
3. Processing runs under the event row's lock and marks it processed in the same transaction as its effects:
   a redelivery (or a concurrent duplicate) finds it processed and does nothing. A failure rolls the effects
   back, records the error and answers 503 so the provider delivers again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor
from pockity.config import Settings
from pockity.db import Database, unit_of_work
from pockity.errors import PockityError
from pockity.kit.time import utcnow
from pockity.payments import repository as repo
from pockity.payments.service import InvalidSignature, NotYet, Unapplicable

log = logging.getLogger("pockity.payments")

# A provider's decoded JSON. No narrower type holds for every provider's events, so each value's shape is
# checked where a handler reads it (`field`, isinstance), never assumed.
JsonObject = dict[str, Any]


class EventProcessingFailed(PockityError):
    status, code, message = 503, "event_processing_failed", "The event was stored but could not be processed yet."


@dataclass(frozen=True)
class Verified:
    provider: str
    event_id: str
    event_type: str
    body: JsonObject
    raw: str


@dataclass(frozen=True)
class Handling:
    settings: Settings
    actor: Actor

    @property
    def grace(self) -> timedelta:
        return timedelta(days=self.settings.billing_grace_days)


Handler = Callable[[AsyncSession, Verified, Handling], Awaitable[str]]


def parse_json(raw: bytes) -> tuple[str, JsonObject]:
    """The body as text (what signatures are computed over) and as a JSON object; 400 otherwise."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise InvalidSignature("The body is not JSON.", code="invalid_payload") from None
    if not isinstance(body, dict):
        raise InvalidSignature("The body is not a JSON object.", code="invalid_payload")
    return text, body


def field(obj: object, *path: str) -> Any:
    """obj[a][b]... or None when any step is missing or not an object."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


@dataclass(frozen=True)
class Ack:
    """The answer to the provider: stored (always), seen before, and what processing did."""

    received: bool
    duplicate: bool
    outcome: str | None


async def deliver(db: Database, event: Verified, handler: Handler, handling: Handling) -> Ack:
    """Store the event once, then process it once under its row's lock (see the module docstring)."""
    async with unit_of_work(db) as session:
        await repo.store_event(session, event.provider, event.event_id, event.event_type, event.raw)
    try:
        async with unit_of_work(db) as session:
            row = await repo.lock_event(session, event.provider, event.event_id)
            assert row is not None
            if row.processed_at is not None:
                return Ack(received=True, duplicate=True, outcome=row.outcome)
            try:
                async with session.begin_nested():
                    outcome = await handler(session, event, handling)
                error = None
            except Unapplicable as exc:  # permanent: recorded for an admin, not retried
                outcome, error = "unapplicable", str(exc)
                log.warning("%s event %s not applied: %s", event.provider, event.event_id, exc)
            row.processed_at, row.outcome, row.error = utcnow(), outcome, error
            row.attempts += 1
        return Ack(received=True, duplicate=False, outcome=outcome)
    except Exception as exc:
        if isinstance(exc, NotYet):
            log.warning("%s event %s must wait: %s", event.provider, event.event_id, exc)
        else:
            log.exception("processing %s event %s failed", event.provider, event.event_id)
        async with unit_of_work(db) as session:
            row = await repo.lock_event(session, event.provider, event.event_id)
            if row is not None:
                await repo.record_event_error(session, row.id, f"{type(exc).__name__}: {exc}")
        raise EventProcessingFailed() from None
