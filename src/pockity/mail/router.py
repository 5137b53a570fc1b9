"""Admin routes of the mail outbox (every route depends on AdminPrincipal; the route-table test checks it)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from pockity.auth.dependencies import AdminPrincipal, request_actor
from pockity.db import SessionDep
from pockity.mail import service
from pockity.mail.links import OPTIONAL_KINDS, unsubscribe_key
from pockity.mail.rendering import page
from pockity.mail.schemas import OutboxMessageOut, OutboxPage
from pockity.openapi import CONFLICT, NOT_FOUND

admin_router = APIRouter(prefix="/api/admin/outbox", tags=["admin"], responses=CONFLICT | NOT_FOUND)
router = APIRouter(
    prefix="/api/mail",
    tags=["mail"],
    responses={403: {"description": "invalid_signature: the token is missing, forged or not for an optional notice"}},
)
Status = Literal["pending", "sending", "sent", "failed", "logged", "unsubscribed"]
Token = Annotated[str | None, Query(max_length=300, description="the signed token of the link")]


async def _key(request: Request) -> bytes:
    return unsubscribe_key(request.app.state.settings.jwt_secret)


UnsubscribeKey = Annotated[bytes, Depends(_key)]


def _page(request: Request, kind: str, *, done: bool) -> HTMLResponse:
    settings = request.app.state.settings
    html = page(
        "unsubscribe_page",
        product_name=settings.product_name,
        console_url=settings.console_base_url,
        label=OPTIONAL_KINDS[kind],
        done=done,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_page(request: Request, key: UnsubscribeKey, token: Token = None) -> HTMLResponse:
    """The email's unsubscribe link: a page asking to confirm (a GET changes nothing: link scanners follow it)."""
    _, kind = service.check_unsubscribe(key, token)
    return _page(request, kind, done=False)


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(request: Request, key: UnsubscribeKey, session: SessionDep, token: Token = None) -> HTMLResponse:
    """Stop emails of the link's kind: the page's button, or a mail client's one-click POST (RFC 8058)."""
    kind = await service.unsubscribe(session, key, token)
    return _page(request, kind, done=True)


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
