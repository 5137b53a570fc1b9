"""The one way to write the audit log; every sensitive action calls `record`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit import repository
from pockity.kit.pagination import keyset_page
from pockity.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who did it: a user (by JWT), an API key, or the system (CLI, jobs)."""

    type: str
    id: str | None = None
    ip: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls, what: str = "system") -> Actor:
        return cls(type="system", id=what)

    def as_user(self, user_id: str) -> Actor:
        """The same request, acting as the user it has just authenticated (a login, a followed link)."""
        return Actor(type="user", id=user_id, ip=self.ip, request_id=self.request_id)


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to the caller's unit of work (it commits with the action it describes)."""
    event = AuditEvent(
        actor_type=actor.type,
        actor_id=actor.id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        ip=actor.ip,
        request_id=actor.request_id,
        details=details or {},
    )
    repository.add(session, event)
    return event


async def list_events(
    session: AsyncSession,
    *,
    action: str | None = None,
    actor_id: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[Sequence[AuditEvent], str | None]:
    """Newest first; the cursor is the id of the last event of the previous page."""
    rows = await repository.list_events(
        session,
        action=action,
        actor_id=actor_id,
        target_id=target_id,
        since=since,
        until=until,
        before_id=cursor,
        limit=limit + 1,
    )
    return keyset_page(rows, limit)
