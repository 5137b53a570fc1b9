"""Browser sessions and CSRF for the console.

The session cookie holds the login JWT that `auth.service.login` issues, so a console request is authenticated by
the same `principal_from_token` as the API (disabled or deleted accounts stop at once). The cookie is HttpOnly,
SameSite=Lax, and Secure in production. Every state-changing request carries a CSRF token: an HMAC of the
session cookie (or, before login, of a random `pockity_anon` cookie), sent as the `X-CSRF-Token` header (htmx and
our upload module) or the `csrf_token` field of a urlencoded form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from pockity.auth import service as auth_service
from pockity.auth.schemas import Principal
from pockity.db import DatabaseDep
from pockity.errors import Forbidden, PockityError, Unauthorized

SESSION_COOKIE = "pockity_session"
ANON_COOKIE = "pockity_anon"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class LoginRequired(PockityError):
    """No (valid) session: the console answers with a redirect to the login page."""

    status, code, message = 401, "login_required", "Please log in."


class CsrfRefused(Forbidden):
    code, message = (
        "csrf_failed",
        "This form has expired or did not come from this site. Reload the page and try again.",
    )


class AdminOnly(Forbidden):
    code, message = "admin_required", "This page is for administrators."


def _secret(request: Request) -> bytes:
    secret: str = request.app.state.settings.jwt_secret
    return secret.encode()


def _binding(request: Request) -> str | None:
    """What the CSRF token is tied to: the session, or the anonymous visitor before login."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        return "s:" + session
    anon = getattr(request.state, "console_anon", None) or request.cookies.get(ANON_COOKIE)
    return "a:" + anon if anon else None


def csrf_token(request: Request) -> str:
    """The token a page embeds in its forms (creating the anonymous binding on first visit)."""
    binding = _binding(request)
    if binding is None:
        request.state.console_anon = secrets.token_urlsafe(24)
        binding = "a:" + request.state.console_anon
    return hmac.new(_secret(request), b"console-csrf|" + binding.encode(), hashlib.sha256).hexdigest()


def anonymous_cookie(request: Request) -> str | None:
    """A new anonymous binding created while rendering, to be set on the response."""
    value: str | None = getattr(request.state, "console_anon", None)
    return value if value and not request.cookies.get(ANON_COOKIE) else None


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request without the token of this session (router-wide dependency)."""
    if request.method not in UNSAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        value = (await request.form()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    binding = _binding(request)
    if not given or binding is None:
        raise CsrfRefused()
    expected = hmac.new(_secret(request), b"console-csrf|" + binding.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfRefused()


async def session_principal(request: Request, db: DatabaseDep) -> Principal | None:
    """The user of this browser's session cookie, verified like an API JWT; None without a working one."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    client = request.client.host if request.client else None
    try:
        return await auth_service.principal_from_token(db, token, request.app.state.settings.jwt_secret, client)
    except Unauthorized:
        return None


async def console_principal(request: Request, db: DatabaseDep) -> Principal:
    """The logged-in user of this browser; otherwise a redirect to the login page."""
    principal = await session_principal(request, db)
    if principal is None:
        raise LoginRequired()
    request.state.console_user = principal
    request.state.user_id = principal.user_id
    return principal


ConsoleUser = Annotated[Principal, Depends(console_principal)]


async def console_admin(request: Request, principal: ConsoleUser) -> Principal:
    if not principal.is_admin:
        raise AdminOnly()
    if request.app.state.settings.require_admin_2fa and not principal.two_factor:
        raise auth_service.TwoFactorRequiredForAdmins()
    return principal


async def console_verified(request: Request, principal: ConsoleUser) -> Principal:
    """Files and keys pages, as the API's: with REQUIRE_EMAIL_VERIFICATION on, an unproven address waits."""
    if not principal.email_verified and request.app.state.settings.email_verification_required:
        raise auth_service.EmailNotVerified()
    return principal


ConsoleAdmin = Annotated[Principal, Depends(console_admin)]


def console_device(request: Request) -> auth_service.Device:
    """The browser signing in, as its session list will show it."""
    return auth_service.Device.of(request.client.host if request.client else None, request.headers.get("user-agent"))


def start_session(request: Request, response: Response, token: str, expires_at: datetime) -> None:
    """Set the session cookie (the anonymous binding is no longer needed)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        expires=expires_at,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.environment == "production",
    )
    response.delete_cookie(ANON_COOKIE, path="/")


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


def set_anonymous(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        ANON_COOKIE,
        value,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.environment == "production",
    )


def safe_next(value: str | None, default: str = "/") -> str:
    """A `next=` target only if it is a path on this site (no scheme, host, `//` or backslash tricks)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value
