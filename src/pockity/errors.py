"""One error base and one handler: every failure leaves as {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pockity.security_headers import headers_for

log = logging.getLogger("pockity.errors")


class PockityError(Exception):
    """A failure the client is told about: a status, a stable snake_case code and a message."""

    status: int = 400
    code: str = "bad_request"
    message: str = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or type(self).message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.message)


class BadRequest(PockityError):
    status, code, message = 400, "bad_request", "The request could not be processed."


class Unauthorized(PockityError):
    status, code, message = 401, "not_authenticated", "Authentication is required."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class Forbidden(PockityError):
    status, code, message = 403, "forbidden", "You are not allowed to do this."


class NotFound(PockityError):
    status, code, message = 404, "not_found", "Not found."


class Conflict(PockityError):
    status, code, message = 409, "conflict", "The request conflicts with the current state."


class PayloadTooLarge(PockityError):
    status, code, message = 413, "payload_too_large", "The request body is too large."


class ValidationFailed(PockityError):
    status, code, message = 422, "validation_error", "The request is not valid."


class TooManyRequests(PockityError):
    status, code, message = 429, "too_many_requests", "Too many requests; try again later."

    def __init__(self, message: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(max(1, retry_after))})
        kwargs.setdefault("details", {"retryAfter": max(1, retry_after)})
        super().__init__(message, **kwargs)


# What a 503 tells clients (and load balancers) to wait before retrying: a restart of PostgreSQL or of the
# S3 gateway takes seconds, not minutes.
RETRY_AFTER_SECONDS = 2


class ServiceUnavailable(PockityError):
    status, code, message = 503, "service_unavailable", "The service is temporarily unavailable."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(RETRY_AFTER_SECONDS)})
        super().__init__(message, **kwargs)


class DatabaseUnavailable(ServiceUnavailable):
    message = "The database is unavailable; try again shortly."


# SQLSTATEs that say "the database is not there right now", not "this request is wrong": class 08 (connection
# exception), 57P01-57P03 (shut down by an administrator, crash shutdown, starting up), 53300 (too many clients).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def database_unavailable(exc: DBAPIError) -> bool:
    """True when `exc` means the database could not be reached or went away (a restart, a refused connect)."""
    if exc.connection_invalidated:
        return True
    if _sqlstate(exc).startswith(_UNAVAILABLE_SQLSTATES):
        return True
    return isinstance(exc.orig, OSError) or isinstance(getattr(exc.orig, "__cause__", None), OSError)


def _sqlstate(exc: BaseException) -> str:
    """The driver's SQLSTATE of a database error (asyncpg: `sqlstate`, psycopg: `pgcode`), or ""."""
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(exc: PockityError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)


# Starlette raises HTTPException for routing failures; give each a stable code.
_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details.append(
            {
                "field": ".".join(loc) or None,
                "location": str(err.get("loc", ("body",))[0]),
                "message": str(err.get("msg", "invalid")),
                "type": str(err.get("type", "invalid")),
            }
        )
    return details


async def _pockity_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PockityError)
    return error_response(exc)


async def _validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    if any(d["type"] == "json_invalid" for d in details):
        return error_response(BadRequest("The request body is not valid JSON.", code="invalid_json"))
    return error_response(ValidationFailed(details=details))


# nginx's code for "the client closed the connection before the response": nobody reads this response (the
# server drops it); it exists so the access log and the metrics say what happened instead of a 500.
CLIENT_CLOSED = 499


async def _client_closed_handler(request: Request, _: Exception) -> JSONResponse:
    log.info("client closed the connection", extra={"request_id": getattr(request.state, "request_id", None)})
    return JSONResponse(
        error_body("client_closed_request", "The client closed the connection."), status_code=CLIENT_CLOSED
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's "error parsing the body" while reading it
        return await _client_closed_handler(request, exc)
    if isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI's "error parsing the body": JSON must be UTF-8 (RFC 8259), and a lossy decode would
        # change what the body says, so it is the same error as any other body that is not JSON.
        return error_response(BadRequest("The request body is not valid UTF-8 JSON.", code="invalid_json"))
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http_error")
    try:
        default_message = HTTPStatus(status).phrase
    except ValueError:
        default_message = "HTTP error"
    message = exc.detail if isinstance(exc.detail, str) else default_message
    return JSONResponse(error_body(code, message), status_code=status, headers=getattr(exc, "headers", None))


async def _database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    orig = getattr(exc, "orig", None)
    if isinstance(exc, DataError) or _sqlstate(exc).startswith("22"):
        # SQLSTATE class 22, "data exception": a value validation let through (a NUL byte, an out-of-range
        # number) that the database refused. The client's input, so a 4xx.
        log.warning("database refused a value: %s", type(orig or exc).__name__)
        return error_response(BadRequest("The request contains a value that cannot be stored.", code="invalid_value"))
    if isinstance(exc, DBAPIError) and database_unavailable(exc):
        return await _unavailable_handler(request, exc)
    return await _unhandled_handler(request, exc)


async def _unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    orig = getattr(exc, "orig", None)
    log.warning(  # the driver's error and SQLSTATE tell "restarting" from "too many clients" (pool sizing)
        "database unavailable: %s (%s%s)",
        type(exc).__name__,
        type(orig).__name__ if orig is not None else "-",
        f", SQLSTATE {_sqlstate(exc)}" if _sqlstate(exc) else "",
        extra={"request_id": getattr(request.state, "request_id", None)},
    )
    return error_response(DatabaseUnavailable())


async def _unreachable_handler(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "a dependency could not be reached: %s",
        type(exc).__name__,
        extra={"request_id": getattr(request.state, "request_id", None)},
    )
    return error_response(ServiceUnavailable())


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    # The trace goes to the log with the request id, never to the client.
    log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
    # Sent by Starlette's outermost middleware, past SecurityHeadersMiddleware, so the headers are added here.
    return JSONResponse(
        error_body("internal_error", "An unexpected error occurred."),
        status_code=500,
        headers=headers_for(request.url.scheme),
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PockityError, _pockity_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(ClientDisconnect, _client_closed_handler)
    app.add_exception_handler(DBAPIError, _database_error_handler)
    app.add_exception_handler(SQLAlchemyTimeoutError, _unavailable_handler)  # no pooled connection came free
    # Raised as they are by the driver when a connect is refused or times out; any other dependency that cannot
    # be reached raises the same, so the answer says only that the service is unavailable, not which part.
    for unreachable in (ConnectionError, TimeoutError):
        app.add_exception_handler(unreachable, _unreachable_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
