"""Account pages: name, password, email (verification, change), sign-in sessions, two-factor sign-in, the
new-sign-in email; and the pages reached without a session: forgot password, the links in emails (reset,
verify, confirm a new address) and the second step of a login.

Every action calls the service its API route calls (users, accounts, accounts.two_factor, auth), so rules,
refusals and audit entries are the same; a refused call's unit of work is rolled back before the page is shown
again. Links from emails open a page with a button: a mail scanner that fetches the link uses nothing up.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.accounts import service as accounts
from pockity.accounts import two_factor
from pockity.auth import service as auth
from pockity.auth.dependencies import request_actor
from pockity.auth.schemas import Principal, describe_device
from pockity.console import qr, sessions
from pockity.console.sessions import ConsoleUser
from pockity.console.templating import render
from pockity.db import DatabaseDep, SessionDep
from pockity.errors import PockityError
from pockity.users import service as users

router = APIRouter(include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
Text = Annotated[str, Form(max_length=1024)]
Token = Annotated[str, Form(max_length=200)]
Code = Annotated[str, Form(max_length=40)]
Done = Annotated[str | None, Query(max_length=32)]

# Fixed sentences for `?done=` after a redirect (never user text).
NOTICES = {
    "renamed": "Your name was changed.",
    "password": "Your password was changed: every other session and sign-in token is signed out (keys still work).",
    "email_change": "Follow the link we sent to the new address to finish the change. Until then your address "
    "stays as it is.",
    "verification_sent": "A new verification link is on its way.",
    "signed_out": "That session was signed out.",
    "signed_out_others": "Every other session was signed out.",
    "two_factor_off": "Two-factor sign-in is off.",
    "sign_in_mail_on": "We will email you when your account is signed in from a new device.",
    "sign_in_mail_off": "No more emails about sign-ins from new devices.",
}


def _see(target: str) -> Response:
    return RedirectResponse(target, status_code=303)


async def _account(
    request: Request, session: AsyncSession, principal: Principal, status: int = 200, **extra: Any
) -> Response:
    user = await users.get_user(session, principal.user_id)
    rows = await auth.list_sessions(session, principal.user_id)
    values: dict[str, Any] = {
        "name_error": None,
        "password_error": None,
        "email_error": None,
        "new_email": None,
        "notice": None,
        "name": None,
        "account": user,
        "verification_required": request.app.state.account_policy.verification_required,
        "sessions": [
            {"row": row, "device": describe_device(row.user_agent), "current": row.id == principal.session_id}
            for row in rows
        ],
        "codes_left": await two_factor.codes_left(session, user.id) if user.totp_enabled_at else 0,
        "two_factor_error": None,
        **extra,
    }
    return render(request, "account/account.html", status_code=status, **values)


async def _refused(
    request: Request, session: AsyncSession, principal: Principal, exc: PockityError, field: str, **extra: Any
) -> Response:
    await session.rollback()
    return await _account(request, session, principal, exc.status, **{field: exc.message}, **extra)


@router.get("/account")
async def account(request: Request, principal: ConsoleUser, session: SessionDep, done: Done = None) -> Response:
    return await _account(request, session, principal, notice=NOTICES.get(done or ""))


@router.post("/account/name")
async def rename(request: Request, principal: ConsoleUser, session: SessionDep, name: Text) -> Response:
    try:
        await users.rename(session, principal.user_id, name, request_actor(request, principal))
    except PockityError as exc:
        return await _refused(request, session, principal, exc, "name_error", name=name)
    return _see("/account?done=renamed")


@router.post("/account/password")
async def change_password(
    request: Request,
    principal: ConsoleUser,
    session: SessionDep,
    current_password: Text,
    new_password: Text,
    confirm_password: Text,
) -> Response:
    if new_password != confirm_password:
        message = "The new password and its confirmation differ."
        return await _account(request, session, principal, 422, password_error=message)
    actor = request_actor(request, principal)
    policy = request.app.state.login_policy
    try:
        user = await users.change_password(
            session,
            principal.user_id,
            current=current_password,
            new=new_password,
            bcrypt_rounds=policy.bcrypt_rounds,
            actor=actor,
        )
    except PockityError as exc:  # a wrong current password, a new one too short
        return await _refused(request, session, principal, exc, "password_error")
    # Every session ended with the change; this browser gets a new one, so whoever changed it stays signed in.
    token, expires_at = await auth.start_session(session, user, policy, sessions.console_device(request), actor)
    response = _see("/account?done=password")
    sessions.start_session(request, response, token, expires_at)
    return response


@router.post("/account/email")
async def change_email(
    request: Request, principal: ConsoleUser, session: SessionDep, new_email: Text, password: Text
) -> Response:
    try:
        await accounts.request_email_change(
            session,
            principal.user_id,
            new_email=new_email,
            password=password,
            policy=request.app.state.account_policy,
            actor=request_actor(request, principal),
        )
    except PockityError as exc:
        return await _refused(request, session, principal, exc, "email_error", new_email=new_email)
    return _see("/account?done=email_change")


@router.post("/account/verify/resend")
async def resend_verification(request: Request, principal: ConsoleUser, session: SessionDep) -> Response:
    try:
        await accounts.resend_verification(
            session, principal.user_id, request.app.state.account_policy, request_actor(request, principal)
        )
    except PockityError as exc:
        return await _refused(request, session, principal, exc, "email_error")
    return _see("/account?done=verification_sent")


@router.post("/account/sessions/others/sign-out")
async def sign_out_others(request: Request, principal: ConsoleUser, session: SessionDep) -> Response:
    await auth.sign_out_all(session, principal.user_id, request_actor(request, principal), keep=principal.session_id)
    return _see("/account?done=signed_out_others#sessions")


@router.post("/account/sessions/{session_id}/sign-out")
async def sign_out_one(request: Request, principal: ConsoleUser, session: SessionDep, session_id: str) -> Response:
    await auth.sign_out(session, principal.user_id, session_id, request_actor(request, principal))
    if session_id == principal.session_id:  # this browser's own
        response = _see("/login")
        sessions.end_session(response)
        return response
    return _see("/account?done=signed_out#sessions")


@router.post("/account/sign-in-mail")
async def sign_in_mail(
    request: Request, principal: ConsoleUser, session: SessionDep, on: Annotated[bool, Form()] = False
) -> Response:
    await users.set_new_sign_in_mail(session, principal.user_id, on, request_actor(request, principal))
    return _see(f"/account?done=sign_in_mail_{'on' if on else 'off'}")


# --- two-factor sign-in ------------------------------------------------------------------------------------


@router.post("/account/2fa/setup")
async def two_factor_setup(request: Request, principal: ConsoleUser, session: SessionDep) -> Response:
    state = request.app.state
    try:
        setup = await two_factor.begin_setup(session, principal.user_id, state.keyring, state.settings.product_name)
    except PockityError as exc:
        return await _refused(request, session, principal, exc, "two_factor_error")
    return _setup_page(request, setup.secret, setup.uri)


def _setup_page(request: Request, secret: str, uri: str, status: int = 200, error: str | None = None) -> Response:
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return render(
        request,
        "account/two_factor_setup.html",
        status_code=status,
        secret=grouped,
        qr_svg=qr.svg(uri, "QR code for your authenticator app"),
        error=error,
    )


@router.post("/account/2fa/enable")
async def two_factor_enable(request: Request, principal: ConsoleUser, session: SessionDep, code: Code) -> Response:
    state = request.app.state
    try:
        codes = await two_factor.enable(
            session, principal.user_id, code, state.keyring, request_actor(request, principal)
        )
    except PockityError as exc:
        await session.rollback()
        user = await users.get_user(session, principal.user_id)
        if user.totp_secret_sealed is None or user.totp_enabled_at is not None:
            return await _account(request, session, principal, exc.status, two_factor_error=exc.message)
        secret = two_factor.pending_secret(user, state.keyring)
        uri = two_factor.provisioning_uri(user, secret, state.settings.product_name)
        return _setup_page(request, secret, uri, exc.status, exc.message)
    return render(request, "account/recovery_codes.html", codes=codes, first=True)


@router.post("/account/2fa/recovery-codes")
async def two_factor_codes(request: Request, principal: ConsoleUser, session: SessionDep, code: Code) -> Response:
    try:
        codes = await two_factor.new_recovery_codes(
            session, principal.user_id, code, request.app.state.keyring, request_actor(request, principal)
        )
    except PockityError as exc:
        return await _refused(request, session, principal, exc, "two_factor_error")
    return render(request, "account/recovery_codes.html", codes=codes, first=False)


@router.post("/account/2fa/disable")
async def two_factor_disable(
    request: Request, principal: ConsoleUser, session: SessionDep, password: Text, code: Code
) -> Response:
    state = request.app.state
    try:
        await two_factor.disable(
            session,
            principal.user_id,
            password=password,
            code=code,
            keyring=state.keyring,
            admins_must_use_it=state.settings.require_admin_2fa,
            actor=request_actor(request, principal),
        )
    except PockityError as exc:
        return await _refused(request, session, principal, exc, "two_factor_error")
    return _see("/account?done=two_factor_off")


# --- without a session: the second step of a login, forgotten passwords, links from emails -----------------


def code_page(
    request: Request, challenge: str, next_path: str, status: int = 200, error: str | None = None
) -> Response:
    """The second step of a login: the challenge rides in the form, never in a cookie or the address."""
    return render(request, "login_code.html", status_code=status, challenge=challenge, next=next_path, error=error)


@router.post("/login/code")
async def login_code(
    request: Request,
    db: DatabaseDep,
    challenge: Annotated[str, Form(max_length=2000)],
    code: Code,
    next: Annotated[str, Form()] = "/",
) -> Response:
    target = sessions.safe_next(next)
    state = request.app.state
    try:
        _, token, expires_at = await two_factor.second_step(
            db,
            state.login_policy,
            state.keyring,
            challenge=challenge,
            code=code,
            device=sessions.console_device(request),
            actor=request_actor(request),
        )
    except PockityError as exc:
        if exc.code in ("challenge_expired", "invalid_challenge"):
            return render(request, "login.html", status_code=exc.status, next=target, error=exc.message, email="")
        return code_page(request, challenge, target, exc.status, exc.message)
    response = _see(target)
    sessions.start_session(request, response, token, expires_at)
    return response


@router.get("/forgot-password")
async def forgot_page(request: Request) -> Response:
    return render(request, "account/forgot.html", sent=False, error=None, email="")


@router.post("/forgot-password")
async def forgot(request: Request, session: SessionDep, email: Text) -> Response:
    try:
        await accounts.request_password_reset(session, email, request.app.state.account_policy, request_actor(request))
    except PockityError as exc:  # throttled (the same for every address)
        await session.rollback()
        return render(
            request, "account/forgot.html", status_code=exc.status, sent=False, error=exc.message, email=email
        )
    return render(request, "account/forgot.html", sent=True, error=None, email="")


@router.get("/reset-password")
async def reset_page(request: Request, token: Annotated[str, Query(max_length=200)] = "") -> Response:
    return render(request, "account/reset.html", token=token, error=None)


@router.post("/reset-password")
async def reset(
    request: Request, session: SessionDep, token: Token, new_password: Text, confirm_password: Text
) -> Response:
    if new_password != confirm_password:
        error = "The new password and its confirmation differ."
        return render(request, "account/reset.html", status_code=422, token=token, error=error)
    actor = request_actor(request)
    try:
        user = await accounts.reset_password(session, token, new_password, request.app.state.account_policy, actor)
    except PockityError as exc:
        await session.rollback()
        return render(request, "account/reset.html", status_code=exc.status, token=token, error=exc.message)
    policy = request.app.state.login_policy
    if user.totp_enabled_at is not None:  # the new password is set; the code is still needed to sign in
        challenge, _ = auth.issue_challenge(user, policy)
        return code_page(request, challenge, "/")
    token_value, expires_at = await auth.start_session(
        session, user, policy, sessions.console_device(request), actor.as_user(user.id)
    )
    response = _see("/")
    sessions.start_session(request, response, token_value, expires_at)
    return response


@router.get("/verify-email")
@router.get("/confirm-email")
async def confirm_page(request: Request, token: Annotated[str, Query(max_length=200)] = "") -> Response:
    change = request.url.path == "/confirm-email"
    return render(request, "account/confirm_email.html", token=token, change=change, error=None, done=False)


@router.post("/verify-email")
@router.post("/confirm-email")
async def confirm(request: Request, session: SessionDep, token: Token) -> Response:
    change = request.url.path == "/confirm-email"
    try:
        user = await accounts.confirm_email(session, token, request.app.state.account_policy, request_actor(request))
    except PockityError as exc:
        await session.rollback()
        page = "account/confirm_email.html"
        return render(request, page, status_code=exc.status, token=token, change=change, error=exc.message, done=False)
    return render(
        request, "account/confirm_email.html", token="", change=change, error=None, done=True, email=user.email
    )
