"""Usage history (own and admin); each route authorizes through a principal dependency."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from pockity.auth.dependencies import AdminPrincipal, CurrentPrincipal
from pockity.db import SessionDep
from pockity.kit.time import utcnow
from pockity.openapi import NOT_FOUND
from pockity.usage import service
from pockity.usage.schemas import AdminUsageHistoryOut, UsageHistoryOut

router = APIRouter(tags=["usage"])
admin_router = APIRouter(prefix="/api/admin", tags=["admin"], responses=NOT_FOUND)

From = Annotated[
    date | None, Query(alias="from", description="First day (UTC, inclusive); default: 29 days before `to`")
]
To = Annotated[date | None, Query(description="Last day (UTC, inclusive); default: today")]


@router.get("/api/storage/usage/history", response_model=UsageHistoryOut)
async def usage_history(principal: CurrentPrincipal, session: SessionDep, from_: From = None, to: To = None) -> object:
    """Daily usage: bytes and objects at each day's last sample, and GB-hours (at most 366 days)."""
    return await service.history(session, principal.user_id, start=from_, end=to, today=utcnow().date())


@admin_router.get("/usage/history", response_model=AdminUsageHistoryOut)
async def admin_usage_history(
    _: AdminPrincipal,
    session: SessionDep,
    from_: From = None,
    to: To = None,
    user_id: Annotated[str | None, Query(alias="userId", max_length=26)] = None,
) -> object:
    """One user's daily usage, or (without userId) the totals per day over all users."""
    return await service.admin_history(session, user_id=user_id, start=from_, end=to, today=utcnow().date())
