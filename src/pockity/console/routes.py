"""The console's pages: sign-up, login, logout and the dashboard; files, keys and admin pages in their modules.

Pages call services and render templates; rules stay in the services (login throttling, disabled accounts,
registration checks, quota levels).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from pockity.accounts import service as accounts
from pockity.auth import service as auth_service
from pockity.auth.dependencies import request_actor
from pockity.billing import service as billing
from pockity.console import (
    account,
    admin,
    admin_billing,
    admin_mail,
    admin_records,
    admin_tiers,
    admin_users,
    charts,
    errors,
    files,
    keys,
    sessions,
)
from pockity.console import billing as billing_pages
from pockity.console.sessions import ConsoleUser
from pockity.console.templating import STATIC_DIR, render
from pockity.db import DatabaseDep, ReadSessionDep, unit_of_work
from pockity.errors import PockityError
from pockity.kit.time import utcnow
from pockity.notifications import service as notifications
from pockity.storage import service as storage
from pockity.usage import service as usage
from pockity.users import service as users
from pockity.users.schemas import RegisterIn

router = APIRouter(include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
Text = Annotated[str, Form(max_length=1024)]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{field.capitalize()}: {err['msg']}."


def _logged_in(request: Request, target: str, token: str, expires_at: object) -> Response:
    response = RedirectResponse(target, status_code=303)
    sessions.start_session(request, response, token, expires_at)  # type: ignore[arg-type]
    return response


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", next=sessions.safe_next(next), error=None, email="")


@router.post("/login")
async def login(
    request: Request, db: DatabaseDep, email: Text, password: Text, next: Annotated[str, Form()] = "/"
) -> Response:
    target = sessions.safe_next(next)
    try:
        result = await auth_service.login(
            db,
            request.app.state.login_policy,
            email=email,
            password=password,
            actor=request_actor(request),
            device=sessions.console_device(request),
        )
    except PockityError as exc:  # wrong password, disabled account, throttled: the service's own sentence
        return render(request, "login.html", status_code=exc.status, next=target, error=exc.message, email=email)
    if result.challenge is not None:  # two-factor sign-in: the code comes next
        return account.code_page(request, result.challenge, target)
    return _logged_in(request, target, result.token, result.expires_at)


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    return render(request, "signup.html", error=None, email="", name="")


@router.post("/signup")
async def signup(request: Request, db: DatabaseDep, email: Text, name: Text, password: Text) -> Response:
    def again(status: int, error: str) -> Response:
        return render(request, "signup.html", status_code=status, error=error, email=email, name=name)

    try:
        body = RegisterIn(email=email, password=password, name=name)
    except ValidationError as exc:
        return again(422, _first_error(exc))
    settings = request.app.state.settings
    try:
        # Committed before logging in: login reads the account in its own unit of work.
        async with unit_of_work(db) as session:
            user = await users.register(
                session,
                email=body.email,
                password=body.password,
                name=body.name,
                bcrypt_rounds=settings.bcrypt_rounds,
                actor=request_actor(request),
            )
            await accounts.send_verification(session, user, request.app.state.account_policy)
        result = await auth_service.login(
            db,
            request.app.state.login_policy,
            email=body.email,
            password=body.password,
            actor=request_actor(request),
            device=sessions.console_device(request),
        )
    except PockityError as exc:
        return again(exc.status, exc.message)
    return _logged_in(request, "/", result.token, result.expires_at)


@router.post("/logout")
async def logout(request: Request, db: DatabaseDep) -> Response:
    """End this browser's session on the server too (its token stops working everywhere), then the cookie."""
    principal = await sessions.session_principal(request, db)
    if principal is not None and principal.session_id is not None:
        async with unit_of_work(db) as session:
            await auth_service.sign_out(
                session, principal.user_id, principal.session_id, request_actor(request, principal)
            )
    response = RedirectResponse("/login", status_code=303)
    sessions.end_session(response)
    return response


@router.get("/")
async def dashboard(request: Request, principal: ConsoleUser, db: DatabaseDep, session: ReadSessionDep) -> Response:
    counters = await storage.read_usage(db, principal.user_id)
    meters = [
        charts.meter("Storage", counters.bytes_used, counters.storage_limit_bytes),
        charts.meter("Files", counters.object_count, counters.max_objects),
    ]
    state = await billing.subscription_state(session, principal.user_id)
    today = utcnow().date()
    history = await usage.history(session, principal.user_id, start=None, end=None, today=today)
    chart = charts.daily_chart(history.items, history.from_, history.to)
    recent = await notifications.list_own(session, principal.user_id, cursor=None, limit=20)
    alerts = [n for n in recent.items if n.kind == usage.ALERT_KIND][:5]
    return render(
        request,
        "dashboard.html",
        usage=counters,
        meters=meters,
        state=state,
        chart=chart,
        history=history,
        alerts=alerts,
    )


def install(app: FastAPI) -> None:
    """Serve the console at `/` beside the API: its pages, /static, and its error pages (after all handlers)."""
    for console_router in (router, files.router, keys.router, admin.router):
        app.include_router(console_router)
    app.include_router(billing_pages.router)
    app.include_router(account.router)
    app.include_router(admin_users.router)
    app.include_router(admin_billing.router)
    app.include_router(admin_tiers.router)
    app.include_router(admin_records.router)
    app.include_router(admin_mail.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    errors.install(app)
