"""Admin pages: the overview and user management (search, detail, disable/enable, role, tier, credits, keys).

Every figure comes from a service and every action goes through the same service function as the admin API
(src/pockity/admin/router.py), so it is checked and audited the same way. A service's refusal is shown on the
user's page as its own sentence with its own status.
"""

from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.admin import service as admin
from pockity.apikeys import service as apikeys
from pockity.auth.dependencies import request_actor
from pockity.console import charts, sessions
from pockity.console.sessions import ConsoleAdmin
from pockity.console.templating import render
from pockity.credits import service as credits
from pockity.credits.schemas import CreditGrantIn
from pockity.db import ReadSessionDep, SessionDep
from pockity.errors import PockityError, ValidationFailed
from pockity.kit.money import amount
from pockity.kit.time import utcnow
from pockity.models import Role
from pockity.payments import service as payments
from pockity.storage import service as storage
from pockity.tiers import service as tiers
from pockity.users import service as users
from pockity.users.schemas import UserUpdateIn

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
PAGE_SIZE = 50
LEDGER_ROWS = 20
# What a redirect back to the user's page says happened (a fixed word in the URL, never reflected text).
DONE = {
    "disabled": "The account is disabled: its sessions, tokens and keys stop working at once.",
    "enabled": "The account is enabled again.",
    "role": "The role has been changed.",
    "tier": "The tier has been assigned.",
    "credits": "The credit has been granted.",
    "revoked": "The key has been revoked.",
}


money = amount  # the templates' name for it


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    return render(request, template, status_code=status_code, money=money, **context)


def _user_url(user_id: str, done: str | None = None) -> str:
    return f"/admin/users/{user_id}" + (f"?done={done}" if done else "")


def _first_error(exc: ValidationError, names: dict[str, str]) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{names.get(field, field.capitalize())}: {err['msg']}."


@router.get("")
async def overview(request: Request, _: ConsoleAdmin, session: ReadSessionDep) -> Response:
    figures = await admin.overview(session, utcnow())
    near = [
        {
            **row,
            "bytes": charts.meter("Storage", row["bytes_used"], row["storage_limit_bytes"]),
            "files": charts.meter("Files", row["object_count"], row["max_objects"]),
        }
        for row in figures.usage.near_quota
    ]
    return _page(request, "admin/overview.html", figures=figures, near=near)


@router.get("/users")
async def user_list(
    request: Request,
    _: ConsoleAdmin,
    session: ReadSessionDep,
    q: Annotated[str, Query(max_length=320)] = "",
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    query = q.strip()
    items, next_cursor = await storage.users_with_usage(session, cursor=cursor or None, limit=PAGE_SIZE, query=query)
    rows = [
        {
            "user": u,
            "bytes": charts.meter("Storage", u.bytes_used, u.storage_limit_bytes),
            "files": charts.meter("Files", u.object_count, u.max_objects),
        }
        for u in items
    ]
    return _page(request, "admin/users.html", rows=rows, q=query, next_cursor=next_cursor, first=cursor is None)


async def _detail(
    request: Request,
    session: AsyncSession,
    user_id: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    grant: dict[str, str] | None = None,
) -> Response:
    detail = await admin.user_detail(session, user_id)
    paid = await payments.own_payments(session, user_id)
    ledger = await credits.view(session, user_id, "USD", limit=LEDGER_ROWS)
    catalogue = [t for t in await tiers.list_all(session) if not t.is_archived]
    done = DONE.get(request.query_params.get("done", "")) if error is None else None
    return _page(
        request,
        "admin/user.html",
        status_code=status_code,
        d=detail,
        person=detail.user,
        meters=[
            charts.meter("Storage", detail.usage.bytes_used, detail.usage.storage_limit_bytes),
            charts.meter("Files", detail.usage.object_count, detail.usage.max_objects),
        ],
        payments=paid.items,
        ledger=ledger,
        tiers=catalogue,
        error=error,
        done=done,
        grant={"amount": "", "currency": "USD", "note": "", **(grant or {}), "key": secrets.token_urlsafe(16)},
    )


@router.get("/users/{user_id}")
async def user_page(request: Request, user_id: str, _: ConsoleAdmin, session: ReadSessionDep) -> Response:
    return await _detail(request, session, user_id)


async def _refused(request: Request, session: AsyncSession, user_id: str, exc: PockityError, **form: Any) -> Response:
    """The user's page again with the service's sentence and status; nothing of the failed action is kept."""
    await session.rollback()
    return await _detail(request, session, user_id, status_code=exc.status, error=exc.message, **form)


@router.post("/users/{user_id}/state")
async def set_state(
    request: Request,
    user_id: str,
    admin_user: ConsoleAdmin,
    session: SessionDep,
    disabled: Annotated[str, Form(pattern="^(true|false)$")],
) -> Response:
    off = disabled == "true"
    try:
        await users.update_user(session, user_id, UserUpdateIn(disabled=off), request_actor(request, admin_user))
    except PockityError as exc:
        return await _refused(request, session, user_id, exc)
    return RedirectResponse(_user_url(user_id, "disabled" if off else "enabled"), status_code=303)


@router.post("/users/{user_id}/role")
async def set_role(
    request: Request,
    user_id: str,
    admin_user: ConsoleAdmin,
    session: SessionDep,
    role: Annotated[Role, Form()],
) -> Response:
    try:
        await users.update_user(session, user_id, UserUpdateIn(role=role), request_actor(request, admin_user))
    except PockityError as exc:
        return await _refused(request, session, user_id, exc)
    return RedirectResponse(_user_url(user_id, "role"), status_code=303)


@router.post("/users/{user_id}/tier")
async def assign_tier(
    request: Request,
    user_id: str,
    admin_user: ConsoleAdmin,
    session: SessionDep,
    tier_id: Annotated[str, Form(min_length=1, max_length=26)],
) -> Response:
    try:
        await admin.assign_tier(session, user_id, tier_id, request_actor(request, admin_user))
    except PockityError as exc:
        return await _refused(request, session, user_id, exc)
    return RedirectResponse(_user_url(user_id, "tier"), status_code=303)


def cents_of(amount: str) -> int | None:
    """A typed amount ("12.5", "12.50", "3") in cents; None unless it is a plain number with ≤ 2 decimals."""
    try:
        value = Decimal(amount.strip().replace(",", ""))
        if not value.is_finite() or value != value.quantize(Decimal("0.01")):
            return None
    except InvalidOperation:  # not a number, or too many digits to hold in cents
        return None
    return int(value * 100)


class AmountInvalid(ValidationFailed):
    code, message = "invalid_amount", "Amount: enter a number with at most two decimals, like 12.50."


@router.post("/users/{user_id}/credits")
async def grant_credits(
    request: Request,
    user_id: str,
    admin_user: ConsoleAdmin,
    session: SessionDep,
    amount: Annotated[str, Form(max_length=32)],
    note: Annotated[str, Form(max_length=2000)] = "",
    currency: Annotated[str, Form(max_length=3)] = "USD",
    idempotency_key: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    """Grant credit; the form carries a key of its own (`idempotency_key`), so a resent form grants once."""
    form = {"grant": {"amount": amount, "currency": currency, "note": note}}
    currency = currency.strip().upper()
    cents = cents_of(amount)
    try:
        if cents is None:
            raise AmountInvalid()
        try:
            body = CreditGrantIn(
                amount_cents=cents, reason=note.strip(), currency=currency, idempotency_key=idempotency_key or None
            )
        except ValidationError as exc:
            names = {"amount_cents": "Amount", "reason": "Note", "currency": "Currency"}
            raise ValidationFailed(_first_error(exc, names)) from None
        await admin.grant_credits(session, user_id, body, request_actor(request, admin_user))
    except PockityError as exc:
        return await _refused(request, session, user_id, exc, **form)
    return RedirectResponse(_user_url(user_id, "credits"), status_code=303)


@router.get("/users/{user_id}/keys/{key_id}/revoke")
async def confirm_revoke(
    request: Request, user_id: str, key_id: str, _: ConsoleAdmin, session: ReadSessionDep
) -> Response:
    person = await users.get_user(session, user_id)
    key = await apikeys.get_key(session, user_id, key_id)
    return _page(request, "admin/revoke_key.html", person=person, key=key)


@router.post("/users/{user_id}/keys/{key_id}/revoke")
async def revoke_key(
    request: Request, user_id: str, key_id: str, admin_user: ConsoleAdmin, session: SessionDep
) -> Response:
    try:
        await apikeys.get_key(session, user_id, key_id)  # this user's key: the page's address says whose
        await apikeys.admin_revoke_key(session, key_id, request_actor(request, admin_user))
    except PockityError as exc:
        return await _refused(request, session, user_id, exc)
    return RedirectResponse(_user_url(user_id, "revoked"), status_code=303)
