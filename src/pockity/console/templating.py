"""Jinja2 (autoescaped) and the headers every console page carries."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from pockity.console import sessions
from pockity.security_headers import headers_for

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

# No inline script or style anywhere: everything the pages run comes from /static (htmx, Alpine's CSP build,
# our own modules). SVG presentation attributes (the usage bars and chart) are not styles, so 'self' suffices.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
# The one page that runs a provider's script: Razorpay's checkout widget (its documented origins). Still no
# inline script; its widget adds inline styles to the page, which only this page allows.
RAZORPAY_CSP = (
    "default-src 'self'; script-src 'self' https://checkout.razorpay.com; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https://*.razorpay.com; connect-src 'self' https://api.razorpay.com "
    "https://lumberjack.razorpay.com; frame-src https://api.razorpay.com https://checkout.razorpay.com; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: int | None) -> str:
    """Bytes as a short human figure: 1.5 MiB."""
    value = float(n or 0)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined)
env.filters["size"] = size
env.filters["when"] = when


def render(request: Request, template: str, status_code: int = 200, *, csp: str = CSP, **context: Any) -> HTMLResponse:
    """A page (or an htmx fragment) with the session's CSRF token and the console's security headers."""
    values = {
        "request": request,
        "user": getattr(request.state, "console_user", None),
        "csrf_token": sessions.csrf_token(request),
        "path": request.url.path,
        **context,
    }
    html = env.get_template(template).render(values)
    headers = {**PAGE_HEADERS, "Content-Security-Policy": csp, **headers_for_error(request)}
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    anon = sessions.anonymous_cookie(request)
    if anon is not None:
        sessions.set_anonymous(request, response, anon)
    return response


def headers_for_error(request: Request) -> dict[str, str]:
    """Error pages from the 500 handler are sent past SecurityHeadersMiddleware, so they add its headers too."""
    return headers_for(request.url.scheme) if getattr(request.state, "console_unhandled", False) else {}
