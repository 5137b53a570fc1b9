"""Request ids, one structured log line per request, Prometheus metrics, and the body-size guard."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pockity.errors import error_body

access_log = logging.getLogger("pockity.access")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOG_EXTRAS = (
    "request_id",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "user_id",
    "api_key_id",
    "client",
)

REQUESTS = Counter("pockity_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "pockity_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _LOG_EXTRAS:
            if (value := getattr(record, key, None)) is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(f"{k}={getattr(record, k)}" for k in _LOG_EXTRAS if getattr(record, k, None) is not None)
        return f"{base} {extras}" if extras else base


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def metrics_payload() -> tuple[bytes, str]:
    """Metrics of this process, or of every worker when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class RequestContextMiddleware:
    """Gives each request an id (echoed in X-Request-ID), then logs and measures it once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            duration = time.perf_counter() - start
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            LATENCY.labels(scope["method"], template).observe(duration)
            if access_log.isEnabledFor(logging.INFO):  # the record's fields are built only when it is written
                _log_access(scope, state, request_id, status, template, duration)


def _log_access(
    scope: Scope, state: dict[str, Any], request_id: str, status: int, template: str, duration: float
) -> None:
    access_log.info(
        "%s %s %s %.1fms",
        scope["method"],
        scope["path"],
        status,
        duration * 1000,
        extra={
            "request_id": request_id,
            "method": scope["method"],
            "route": template,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(duration * 1000, 2),
            "user_id": state.get("user_id"),
            "api_key_id": state.get("api_key_id"),
            "client": scope["client"][0] if scope.get("client") else None,
        },
    )


def is_utf8_url(scope: Scope) -> bool:
    """True if the path and query, percent-decoded, are valid UTF-8.

    Servers decode them with replacement (`%ff` becomes U+FFFD), so two different names would become one;
    only the raw bytes can tell. httpx's ASGI transport puts the query into raw_path too, uvicorn does not.
    """
    raw = scope.get("raw_path") or b""
    for part in (raw.split(b"?", 1)[0], scope.get("query_string", b"")):
        if part.isascii() and b"%" not in part:
            continue
        try:
            unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


class RequestGuardMiddleware:
    """Refuses control characters and invalid UTF-8 in URLs (400; 422 `invalid_key` under `name_paths`, where
    the URL carries file names) and request bodies over `limit` bytes (413), except the bodies of routes that
    stream them to storage."""

    def __init__(
        self, app: ASGIApp, limit: int, streaming: Callable[[str, str], bool], name_paths: tuple[str, ...] = ()
    ) -> None:
        self.app, self.limit, self.streaming, self.name_paths = app, limit, streaming, name_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _CONTROL.search(scope["path"]) or b"%00" in scope.get("query_string", b""):
            # Control characters are never part of a valid id or name (and a trailing newline would
            # otherwise match a route pattern as if it were absent); NUL never reaches SQL either.
            await _error(400, "invalid_value", "The URL contains a control character.")(scope, receive, send)
            return
        if not is_utf8_url(scope):
            if scope["path"].startswith(self.name_paths):
                error = _error(422, "invalid_key", "The file name, prefix or cursor in the URL is not valid UTF-8.")
            else:
                error = _error(400, "invalid_value", "The URL is not valid UTF-8.")
            await error(scope, receive, send)
            return
        if self.streaming(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error(
                413, "payload_too_large", f"The request body is larger than {self.limit} bytes.", {"limit": self.limit}
            )(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # An HTTPException passes FastAPI's body parsing untouched; the error handler renders it as 413.
                raise HTTPException(413, f"The request body is larger than {self.limit} bytes.")
            return message

        await self.app(scope, counted, send)


def _error(status: int, code: str, message: str, details: Any = None) -> ASGIApp:
    return JSONResponse(error_body(code, message, details), status_code=status)
