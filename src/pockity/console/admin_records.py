"""Admin pages for the records: subscriptions, the payment events inbox, reconciliation (run, reports with the
drift per user) and the audit log.

The lists read through the services behind the admin API's list routes (`GET /api/admin/subscriptions`,
`/payment-events`, `/reconciliations`, `/audit`), with the same filters; running a reconciliation starts it
through `storage.reconcile.start_reconcile`, as `POST /api/admin/reconcile` does (so it is audited alike).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.admin.schemas import ReconcileIn
from pockity.audit import service as audit
from pockity.auth.dependencies import request_actor
from pockity.billing import service as billing
from pockity.console import sessions
from pockity.console.admin_billing import PROVIDERS
from pockity.console.sessions import ConsoleAdmin
from pockity.console.templating import render
from pockity.db import DatabaseDep, ReadSessionDep
from pockity.errors import PockityError, ValidationFailed
from pockity.payments import service as payments
from pockity.storage import reconcile
from pockity.storage import service as storage
from pockity.tiers import service as tiers

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
PAGE_SIZE = 50
REPORTS_PER_PAGE = 20
DRIFT_SHOWN = 10  # users of a report's drift listed on the reports page; its own page lists them all
# The filter the admin API offers (admin/router.py's SubscriptionStatus).
SUBSCRIPTION_STATUSES = ("TRIALING", "ACTIVE", "PENDING_PAYMENT", "PAST_DUE", "CANCELLED", "EXPIRED")
Filter = Annotated[str, Query(max_length=32)]
Id = Annotated[str, Query(max_length=64)]
Cursor = Annotated[str | None, Query(max_length=64)]


def _choice(value: str, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None  # an unknown filter lists everything, as no filter does


# --- subscriptions -----------------------------------------------------------------------------------------


@router.get("/subscriptions")
async def subscription_list(
    request: Request,
    _: ConsoleAdmin,
    session: ReadSessionDep,
    status: Filter = "",
    user: Id = "",
    cursor: Cursor = None,
) -> Response:
    page = await billing.list_subscriptions(
        session,
        status=_choice(status, SUBSCRIPTION_STATUSES),
        user_id=user.strip() or None,
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "admin/subscriptions.html",
        page=page,
        tier_names={t.id: t.name for t in await tiers.list_all(session)},
        status=status,
        user_filter=user.strip(),
        statuses=SUBSCRIPTION_STATUSES,
        query=urlencode({"status": status, "user": user.strip()}),
        first=not cursor,
    )


# --- payment events ----------------------------------------------------------------------------------------


@router.get("/payment-events")
async def payment_events(
    request: Request,
    _: ConsoleAdmin,
    session: ReadSessionDep,
    provider: Filter = "",
    unprocessed: Filter = "",
    cursor: Cursor = None,
) -> Response:
    page = await payments.list_events(
        session,
        provider=_choice(provider, PROVIDERS),
        unprocessed=unprocessed == "on",
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "admin/payment_events.html",
        page=page,
        provider=provider,
        providers=PROVIDERS,
        unprocessed=unprocessed == "on",
        query=urlencode({"provider": provider, "unprocessed": unprocessed}),
        first=not cursor,
    )


# --- reconciliation ----------------------------------------------------------------------------------------


async def _reports(
    request: Request,
    session: AsyncSession,
    cursor: str | None,
    *,
    code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    reports, next_cursor = await storage.list_reports(session, cursor=cursor, limit=REPORTS_PER_PAGE)
    started = request.query_params.get("done") == "started" and error is None
    return render(
        request,
        "admin/reconciliation.html",
        status_code=code,
        reports=reports,
        next_cursor=next_cursor,
        first=cursor is None,
        shown=DRIFT_SHOWN,
        error=error,
        done="The reconciliation has started; reload this page to follow it." if started else None,
        form=form or {"scope": "all", "user_id": "", "dry_run": ""},
    )


@router.get("/reconciliation")
async def reconciliation(request: Request, _: ConsoleAdmin, session: ReadSessionDep, cursor: Cursor = None) -> Response:
    return await _reports(request, session, cursor or None)


@router.get("/reconciliation/{report_id}")
async def reconciliation_report(request: Request, report_id: str, _: ConsoleAdmin, session: ReadSessionDep) -> Response:
    return render(request, "admin/reconciliation_report.html", report=await storage.get_report(session, report_id))


def _reconcile_input(scope: str, user_id: str, dry_run: str) -> ReconcileIn:
    if scope not in ("all", "user"):
        raise ValidationFailed("Choose every user or one user.")
    if scope == "user" and not user_id.strip():
        raise ValidationFailed("User id: enter the id of the user to reconcile.")
    try:
        return ReconcileIn(user_id=user_id.strip() if scope == "user" else None, dry_run=dry_run == "on")
    except ValidationError:
        raise ValidationFailed("User id: a user's id has 26 characters.") from None


@router.post("/reconciliation")
async def run_reconciliation(
    request: Request,
    admin: ConsoleAdmin,
    db: DatabaseDep,
    session: ReadSessionDep,
    scope: Annotated[str, Form(max_length=8)] = "",
    user_id: Annotated[str, Form(max_length=64)] = "",
    dry_run: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Start a run in the background (as the API does); the report is RUNNING until it is done."""
    form = {"scope": scope, "user_id": user_id, "dry_run": dry_run}
    try:
        body = _reconcile_input(scope, user_id, dry_run)
        await reconcile.start_reconcile(
            db,
            request.app.state.storage,
            user_id=body.user_id,
            dry_run=body.dry_run,
            trigger="admin",
            actor=request_actor(request, admin),
        )
    except PockityError as exc:  # no such user
        return await _reports(request, session, None, code=exc.status, error=exc.message, form=form)
    return RedirectResponse("/admin/reconciliation?done=started", status_code=303)


# --- the audit log -----------------------------------------------------------------------------------------


def _moment(value: str, label: str) -> datetime | None:
    """A typed time (the date-time field's 2026-12-04T21:00, or ISO 8601 with an offset); naive means UTC."""
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailed(f"{label}: a date and time such as 2026-12-04T21:00 (UTC).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/audit")
async def audit_log(
    request: Request,
    _: ConsoleAdmin,
    session: ReadSessionDep,
    actor: Id = "",
    action: Id = "",
    target: Id = "",
    since: Annotated[str, Query(alias="from", max_length=40)] = "",
    until: Annotated[str, Query(alias="to", max_length=40)] = "",
    cursor: Cursor = None,
) -> Response:
    filters = {"actor": actor.strip(), "action": action.strip(), "target": target.strip(), "from": since, "to": until}
    items, next_cursor, code, error = [], None, 200, None
    try:
        found, next_cursor = await audit.list_events(
            session,
            actor_id=filters["actor"] or None,
            action=filters["action"] or None,
            target_id=filters["target"] or None,
            since=_moment(since, "From"),
            until=_moment(until, "To"),
            cursor=cursor or None,
            limit=PAGE_SIZE,
        )
        items = list(found)
    except PockityError as exc:
        code, error = exc.status, exc.message
    return render(
        request,
        "admin/audit.html",
        status_code=code,
        items=items,
        next_cursor=next_cursor,
        filters=filters,
        query=urlencode({k: v for k, v in filters.items() if v}),
        first=not cursor,
        error=error,
    )
