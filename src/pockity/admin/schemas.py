from __future__ import annotations

from datetime import datetime
from typing import Any

from pockity.kit.schemas import OutputModel


class AuditEventOut(OutputModel):
    id: str
    actor_type: str
    actor_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    created_at: datetime


class AuditPage(OutputModel):
    items: list[AuditEventOut]
    next_cursor: str | None
