"""Admin pages: the tier-request queue, resolved through the same service (and so the same audit) as the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from pockity.auth.dependencies import request_actor
from pockity.console import sessions
from pockity.console.sessions import ConsoleAdmin
from pockity.console.templating import render
from pockity.db import SessionDep
from pockity.tier_requests import service as tier_requests
from pockity.tiers import service as tiers
from pockity.users import service as users

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
STATUSES = ("PENDING", "APPROVED", "REJECTED", "CANCELLED")


@router.get("/tier-requests")
async def tier_request_queue(
    request: Request,
    _: ConsoleAdmin,
    session: SessionDep,
    status: Annotated[str, Query(max_length=16)] = "PENDING",
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    status = status if status in STATUSES else "PENDING"
    items, next_cursor = await tier_requests.list_requests(session, status=status, cursor=cursor, limit=50)
    names = {t.id: t.name for t in await tiers.list_all(session)}
    people = {r.user_id: await users.get_user(session, r.user_id) for r in items}
    return render(
        request,
        "admin/tier_requests.html",
        items=items,
        next_cursor=next_cursor,
        status=status,
        statuses=STATUSES,
        tier_names=names,
        people=people,
    )


@router.post("/tier-requests/{request_id}")
async def resolve(
    request: Request,
    request_id: str,
    admin: ConsoleAdmin,
    session: SessionDep,
    decision: Annotated[str, Form(pattern="^(approve|reject)$")],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    await tier_requests.resolve(
        session,
        request_id,
        approved=decision == "approve",
        note=note or None,
        admin_id=admin.user_id,
        actor=request_actor(request, admin),
    )
    return RedirectResponse("/admin/tier-requests", status_code=303)
