"""Unauthenticated operational routes: health and metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pockity import __version__
from pockity.db import DatabaseDep, ping
from pockity.errors import Unauthorized, error_body
from pockity.kit.crypto import constant_time_equals
from pockity.observability import metrics_payload
from pockity.open.health import StorageHealth

router = APIRouter(tags=["open"])
log = logging.getLogger("pockity.health")
_CHECK_TIMEOUT = 3.0


@router.get("/api/open/health")
async def health(db: DatabaseDep, request: Request) -> JSONResponse:
    """200 when every part answers; 503 naming the failing part otherwise."""
    parts: dict[str, str] = {}
    try:
        await asyncio.wait_for(ping(db), _CHECK_TIMEOUT)
        parts["database"] = "ok"
    except Exception as exc:
        log.warning("health: database check failed: %s", type(exc).__name__)
        parts["database"] = "unavailable"
    try:
        # Not a storage call per probe: a recent ok is reused until a request sees the storage fail.
        storage_health: StorageHealth = request.app.state.storage_health
        if not storage_health.fresh():  # (no timer task for the common case)
            await asyncio.wait_for(storage_health.check(request.app.state.storage.ping), _CHECK_TIMEOUT)
        parts["storage"] = "ok"
    except Exception as exc:
        log.warning("health: storage check failed: %s", type(exc).__name__)
        parts["storage"] = "unavailable"
    failing = [name for name, state in parts.items() if state != "ok"]
    body: dict[str, object] = {
        "status": "ok" if not failing else "unavailable",
        **parts,
        "version": __version__,
    }
    if failing:
        body.update(error_body("service_unavailable", f"Unavailable: {', '.join(failing)}.", {"failing": failing}))
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not constant_time_equals(given, token):
            raise Unauthorized()
    payload, content_type = metrics_payload()
    return Response(payload, media_type=content_type)
