"""Friendly error pages for the console; the API keeps its JSON errors.

`install` wraps the app's exception handlers: a request outside the API's paths gets an HTML page (or, for our
upload module, the plain sentence), every other request the handler it had before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pockity.console import sessions
from pockity.console.templating import render
from pockity.errors import PockityError

log = logging.getLogger("pockity.console")
API_PATHS = ("/api/", "/docs", "/openapi.json", "/metrics")
Handler = Callable[[Request, Any], Any]

_TITLES = {403: "Not allowed", 404: "Page not found", 422: "Please check the form", 500: "Something went wrong"}
_HTTP_MESSAGES = {
    404: "There is nothing at this address.",
    405: "This page cannot be used that way.",
}


def is_console(path: str) -> bool:
    return path != "/api" and not path.startswith(API_PATHS)


def _page(request: Request, status: int, message: str) -> Response:
    if "text/plain" in request.headers.get("accept", ""):  # the upload module shows the sentence itself
        return PlainTextResponse(message, status_code=status, headers={"Cache-Control": "no-store"})
    title = _TITLES.get(status, "Something went wrong" if status >= 500 else "That did not work")
    return render(request, "error.html", status_code=status, status=status, title=title, message=message)


async def console_error(request: Request, exc: Exception) -> Response:
    """The console's answer to an exception."""
    if isinstance(exc, sessions.LoginRequired):
        target = "/login?next=" + quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    if isinstance(exc, PockityError):
        return _page(request, exc.status, exc.message)
    if isinstance(exc, RequestValidationError):
        return _page(request, 422, "Some fields are missing or not valid.")
    if isinstance(exc, StarletteHTTPException):
        return _page(request, exc.status_code, _HTTP_MESSAGES.get(exc.status_code, "That did not work."))
    log.exception("unhandled console error", extra={"request_id": getattr(request.state, "request_id", None)})
    request.state.console_unhandled = True
    return _page(request, 500, "An unexpected error occurred. It has been logged; please try again.")


def _wrap(original: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if is_console(request.url.path):
            return await console_error(request, exc)
        response: Response = await original(request, exc)  # every handler Pockity installs is async
        return response

    return handler


def install(app: FastAPI) -> None:
    """Route console paths' exceptions to `console_error` (call after every other handler is installed)."""
    for key, original in list(app.exception_handlers.items()):
        app.exception_handlers[key] = _wrap(original)
