"""The user's notifications: list and mark read (a JWT, like the rest of the account API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from pockity.auth.dependencies import JwtPrincipal
from pockity.db import SessionDep
from pockity.kit.time import utcnow
from pockity.notifications import service
from pockity.notifications.schemas import NotificationOut, NotificationPage

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


@router.get("", response_model=NotificationPage)
async def list_notifications(
    principal: JwtPrincipal,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    unread: Annotated[bool, Query(description="Only notifications not yet read")] = False,
) -> object:
    """Your notifications, newest first."""
    return await service.list_own(session, principal.user_id, cursor=cursor, limit=limit, unread_only=unread)


@router.post("/{notification_id}/read", response_model=NotificationOut)
async def read_notification(notification_id: str, principal: JwtPrincipal, session: SessionDep) -> object:
    return await service.mark_read(session, principal.user_id, notification_id, utcnow())
