from __future__ import annotations

from datetime import datetime

from pockity.kit.schemas import OutputModel


class OutboxMessageOut(OutputModel):
    """An outbox message as admins see it: no bodies (a reset or sign-in link is the user's alone)."""

    id: str
    user_id: str | None
    recipient: str
    kind: str
    subject: str | None  # rendered when first claimed
    message_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class OutboxPage(OutputModel):
    items: list[OutboxMessageOut]
    next_cursor: str | None
