"""Usage history (own and admin) and notifications; each route authorizes through a principal dependency."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from pockity.auth.dependencies import AdminPrincipal, CurrentPrincipal, JwtPrincipal
from pockity.db import SessionDep
from pockity.kit.time import utcnow
from pockity.usage import service
from pockity.usage.schemas import AdminUsageHistoryOut, NotificationOut, NotificationPage, UsageHistoryOut

router = APIRouter(tags=["usage"])
admin_router = APIRouter(prefix="/api/admin", tags=["admin"])

From = Annotated[
    date | None, Query(alias="from", description="First day (UTC, inclusive); default: 29 days before `to`")
]
To = Annotated[date | None, Query(description="Last day (UTC, inclusive); default: today")]


def _out(h: service.History) -> dict[str, Any]:
    return {"from": h.start, "to": h.end, "items": h.items, "as_of": h.as_of, "user_id": h.user_id}


@router.get("/api/storage/usage/history", response_model=UsageHistoryOut)
async def usage_history(principal: CurrentPrincipal, session: SessionDep, from_: From = None, to: To = None) -> object:
    """Daily usage: bytes and objects at each day's last sample, and GB-hours (at most 366 days)."""
    h = await service.history(session, principal.user_id, start=from_, end=to, today=utcnow().date())
    return _out(h)


@router.get("/api/notifications", response_model=NotificationPage)
async def list_notifications(
    principal: JwtPrincipal,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    unread: Annotated[bool, Query(description="Only notifications not yet read")] = False,
) -> object:
    """Your notifications, newest first."""
    items, next_cursor = await service.list_notifications(
        session, principal.user_id, cursor=cursor, limit=limit, unread_only=unread
    )
    return {"items": items, "next_cursor": next_cursor}


@router.post("/api/notifications/{notification_id}/read", response_model=NotificationOut)
async def read_notification(notification_id: str, principal: JwtPrincipal, session: SessionDep) -> object:
    return await service.mark_read(session, principal.user_id, notification_id, utcnow())


@admin_router.get("/usage/history", response_model=AdminUsageHistoryOut)
async def admin_usage_history(
    _: AdminPrincipal,
    session: SessionDep,
    from_: From = None,
    to: To = None,
    user_id: Annotated[str | None, Query(alias="userId", max_length=26)] = None,
) -> object:
    """One user's daily usage, or (without userId) the totals per day over all users."""
    h = await service.admin_history(session, user_id=user_id, start=from_, end=to, today=utcnow().date())
    return _out(h)
