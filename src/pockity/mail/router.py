"""Admin routes of the mail outbox (every route depends on AdminPrincipal; the route-table test checks it)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from pockity.auth.dependencies import AdminPrincipal, request_actor
from pockity.db import SessionDep
from pockity.mail import service
from pockity.mail.schemas import OutboxMessageOut, OutboxPage
from pockity.openapi import CONFLICT, NOT_FOUND

admin_router = APIRouter(prefix="/api/admin/outbox", tags=["admin"], responses=CONFLICT | NOT_FOUND)
Status = Literal["pending", "sending", "sent", "failed", "logged"]


@admin_router.get("", response_model=OutboxPage)
async def list_outbox(
    _: AdminPrincipal,
    session: SessionDep,
    status: Status | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> object:
    """The outbox, newest first: each message's status, attempts and the relay's last error."""
    return await service.list_outbox(session, status=status, cursor=cursor, limit=limit)


@admin_router.post("/{message_id}/resend", response_model=OutboxMessageOut)
async def resend(message_id: str, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    """Queue a sent, failed or logged message again (same content and Message-ID); 409 while it is queued."""
    return await service.resend(session, message_id, request_actor(request, admin))
