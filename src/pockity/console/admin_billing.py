"""Admin pages for money: invoices (filter, mark paid, void) and payments (the crypto queue: confirm with the
amount received, or reject).

Each action calls the same service function as the admin API (`PATCH /api/admin/invoices/{id}`, `PATCH
/api/admin/payments/{id}`), so it is checked, applied once and audited the same way; a refusal is shown on
the list as the service's sentence with its status.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.auth.dependencies import request_actor
from pockity.billing import invoices
from pockity.console import sessions
from pockity.console.admin_users import money
from pockity.console.sessions import ConsoleAdmin
from pockity.console.templating import render
from pockity.db import ReadSessionDep, SessionDep
from pockity.errors import PockityError
from pockity.payments import crypto
from pockity.payments import service as payments
from pockity.payments.schemas import PaymentActionIn

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
PAGE_SIZE = 50
# The filters the admin API offers (admin/router.py's Literals).
INVOICE_STATUSES = ("PENDING", "PAID", "FAILED", "REFUNDED", "VOID")
PAYMENT_STATUSES = ("PENDING", "CONFIRMED", "REJECTED", "FAILED", "REFUNDED")
PROVIDERS = ("stripe", "razorpay", "crypto", "coinbase", "btcpay", "manual")
DONE = {
    "paid": "The invoice is marked paid.",
    "void": "The invoice is void.",
    "confirm": "The payment is confirmed: its invoice is paid, any difference became credit.",
    "reject": "The payment is rejected.",
}
Filter = Annotated[str, Query(max_length=32)]
Cursor = Annotated[str | None, Query(max_length=64)]
Note = Annotated[str, Form(max_length=2000)]


def _choice(value: str, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None  # an unknown filter lists everything, as no filter does


async def _invoices(
    request: Request,
    session: AsyncSession,
    status: str,
    user: str,
    cursor: str | None,
    *,
    code: int = 200,
    error: str | None = None,
) -> Response:
    page = await invoices.list_invoices(
        session, status=_choice(status, INVOICE_STATUSES), user_id=user or None, cursor=cursor, limit=PAGE_SIZE
    )
    return render(
        request,
        "admin/invoices.html",
        status_code=code,
        money=money,
        page=page,
        status=status,
        user_filter=user,
        statuses=INVOICE_STATUSES,
        first=cursor is None,
        error=error,
        done=DONE.get(request.query_params.get("done", "")) if error is None else None,
    )


@router.get("/invoices")
async def invoice_list(
    request: Request,
    _: ConsoleAdmin,
    session: ReadSessionDep,
    status: Filter = "PENDING",
    user: Annotated[str, Query(max_length=64)] = "",
    cursor: Cursor = None,
) -> Response:
    return await _invoices(request, session, status, user.strip(), cursor or None)


@router.post("/invoices/{invoice_id}")
async def invoice_action(
    request: Request,
    invoice_id: str,
    admin: ConsoleAdmin,
    session: SessionDep,
    status: Annotated[str, Form(max_length=8)],
    note: Note = "",
) -> Response:
    actor = request_actor(request, admin)
    try:
        if status == "PAID":
            await payments.pay_manually(session, invoice_id, actor, note or None)
        elif status == "VOID":
            await invoices.void_invoice(session, invoice_id, actor, note=note or None)
        else:
            raise ValueError(status)
    except PockityError as exc:  # not open any more, already paid, no such invoice
        await session.rollback()
        return await _invoices(request, session, "PENDING", "", None, code=exc.status, error=exc.message)
    except ValueError:
        return await _invoices(request, session, "PENDING", "", None, code=422, error="Choose paid or void.")
    return RedirectResponse(f"/admin/invoices?done={'paid' if status == 'PAID' else 'void'}", status_code=303)


async def _payments(
    request: Request,
    session: AsyncSession,
    status: str,
    provider: str,
    cursor: str | None,
    *,
    code: int = 200,
    error: str | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    page = await payments.list_payments(
        session,
        status=_choice(status, PAYMENT_STATUSES),
        provider=_choice(provider, PROVIDERS),
        user_id=None,
        cursor=cursor,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "admin/payments.html",
        status_code=code,
        money=money,
        page=page,
        status=status,
        provider=provider,
        statuses=PAYMENT_STATUSES,
        providers=PROVIDERS,
        first=cursor is None,
        error=error,
        form=form or {},
        done=DONE.get(request.query_params.get("done", "")) if error is None else None,
    )


@router.get("/payments")
async def payment_list(
    request: Request,
    _: ConsoleAdmin,
    session: ReadSessionDep,
    status: Filter = "PENDING",
    provider: Filter = "crypto",
    cursor: Cursor = None,
) -> Response:
    return await _payments(request, session, status, provider, cursor or None)


@router.post("/payments/{payment_id}")
async def payment_action(
    request: Request,
    payment_id: str,
    admin: ConsoleAdmin,
    session: SessionDep,
    action: Annotated[str, Form(max_length=8)],
    amount_received: Annotated[str, Form(max_length=40)] = "",
    note: Note = "",
) -> Response:
    form = {"id": payment_id, "amount_received": amount_received, "note": note}
    try:
        body = PaymentActionIn.model_validate(
            {"action": action, "amount_received": amount_received.strip() or None, "note": note}
        )
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        sentence = {
            "action": "Choose confirm or reject.",
            "amount_received": "Amount received: a decimal number such as 0.00166667.",
        }.get(field, f"{field}: {exc.errors()[0]['msg']}.")
        return await _payments(request, session, "PENDING", "crypto", None, code=422, error=sentence, form=form)
    try:
        await crypto.resolve(
            session, payment_id, body.action, body.amount_received, body.note or None, request_actor(request, admin)
        )
    except PockityError as exc:  # resolved already, not a crypto payment, no such payment
        await session.rollback()
        return await _payments(
            request, session, "PENDING", "crypto", None, code=exc.status, error=exc.message, form=form
        )
    return RedirectResponse(f"/admin/payments?done={body.action}", status_code=303)
