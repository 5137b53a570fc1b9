from __future__ import annotations

from datetime import datetime
from typing import Any

from pockity.kit.schemas import OutputModel


class NotificationOut(OutputModel):
    id: str
    kind: str
    title: str
    body: str
    data: dict[str, Any]  # free-form JSON, its keys set by the kind
    created_at: datetime
    read_at: datetime | None


class NotificationPage(OutputModel):
    items: list[NotificationOut]
    next_cursor: str | None
