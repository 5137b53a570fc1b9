"""Admin page for the mail outbox: every message with its status, attempts and the relay's last error; resend.

It reads and resends through `mail.service`, as `GET /api/admin/outbox` and `POST /api/admin/outbox/{id}/resend`
do (a resend is audited alike). Bodies are not shown: a message may carry a link meant for its recipient alone
(account links are kept as a placeholder anyway)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.auth.dependencies import request_actor
from pockity.console import sessions
from pockity.console.sessions import ConsoleAdmin
from pockity.console.templating import render
from pockity.db import ReadSessionDep, SessionDep
from pockity.errors import PockityError
from pockity.mail import service as mail

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
PAGE_SIZE = 50
STATUSES = ("pending", "sending", "sent", "failed", "logged", "unsubscribed")


async def _page(
    request: Request,
    session: AsyncSession,
    status: str,
    cursor: str | None,
    code: int = 200,
    error: str | None = None,
) -> Response:
    chosen = status if status in STATUSES else None
    page = await mail.list_outbox(session, status=chosen, cursor=cursor, limit=PAGE_SIZE)
    return render(
        request,
        "admin/outbox.html",
        status_code=code,
        page=page,
        status=chosen or "",
        statuses=STATUSES,
        query=urlencode({"status": chosen or ""}),
        first=not cursor,
        done="The message is queued to be sent again." if request.query_params.get("done") == "resent" else None,
        error=error,
    )


@router.get("/outbox")
async def outbox(
    request: Request,
    _: ConsoleAdmin,
    session: ReadSessionDep,
    status: Annotated[str, Query(max_length=16)] = "",
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    return await _page(request, session, status, cursor or None)


@router.post("/outbox/{message_id}/resend")
async def resend(request: Request, message_id: str, admin: ConsoleAdmin, session: SessionDep) -> Response:
    try:
        await mail.resend(session, message_id, request_actor(request, admin))
    except PockityError as exc:  # not found, or still queued
        await session.rollback()
        return await _page(request, session, "", None, exc.status, error=exc.message)
    return RedirectResponse("/admin/outbox?done=resent", status_code=303)
