"""The OpenAPI document describes every error a route can give, from what the route depends on.

Attached once, when the schema is first built, instead of by hand in every router:
  every operation   400 (malformed URL or body: invalid_value, invalid_json) and 422 (validation_error)
  path parameters   404 (the named resource does not exist)
  authentication    401 (not_authenticated, invalid_token, token_expired, invalid_api_key, account_disabled)
                    and 403 (jwt_required, admin_required, scope_denied, ...), 429 (rate_limited, with
                    Retry-After: fair sharing's request rate, and for uploads the concurrent-upload limit)
  a request body    413 (payload_too_large)
Domain-specific errors (409, 402, 503, ...) are declared by each router (`APIRouter(responses=...)`). Every
4xx/5xx response gets the one error shape, replacing FastAPI's own 422 schema, which Pockity never sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from pockity.auth.dependencies import SECURITY, SECURITY_SCHEMES, get_principal

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before 0.16x
    iter_route_contexts = None  # type: ignore[assignment]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "stable snake_case code"},
                "message": {"type": "string"},
                "details": {"description": "more about the error, or null"},
            },
        }
    },
}
# Declared by routers for their domain's errors.
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "The request conflicts with the current state"}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "A user, tier or other record named in the request"}}
STORAGE: dict[int | str, dict[str, Any]] = {503: {"description": "storage_unavailable"}}
PROVIDER: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid_signature, or a malformed event"},
    402: {"description": "insufficient_credits"},
    503: {"description": "provider_not_configured, or the provider is unreachable"},
}
_ERROR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_DESCRIPTIONS = {
    400: "Malformed request: invalid_value (URL), invalid_json, or a domain rule",
    401: "not_authenticated, invalid_token, token_expired, invalid_api_key, account_disabled",
    403: "jwt_required, admin_required, scope_denied, or another permission rule",
    404: "The resource named in the path does not exist",
    413: "payload_too_large",
    422: "validation_error: the parameters or body do not match the schema (details name each field)",
    429: "rate_limited: over the request rate or the concurrent uploads of the user or key; see Retry-After",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def error_codes(route: APIRoute, streams_body: Callable[[str, str], bool]) -> set[int]:
    """The standard error statuses a route can answer with, from its parameters and dependencies."""
    codes = {400, 422}
    if route.dependant.path_params:
        codes.add(404)
    if _depends_on(route.dependant, get_principal):
        codes |= {401, 403, 429}
    if route.body_field is not None or any(streams_body(m, route.path) for m in route.methods or ()):
        codes.add(413)
    return codes


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every APIRoute with its full path (FastAPI >= 0.16x keeps included routers nested in app.routes)."""
    if iter_route_contexts is None:  # older FastAPI flattens included routers
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [c.route for c in iter_route_contexts(app.routes) if isinstance(c.route, APIRoute)]


def install(app: FastAPI, streams_body: Callable[[str, str], bool]) -> None:
    """Make app.openapi() attach the standard error responses and the error shape."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = ERROR_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schema["components"]["securitySchemes"] = SECURITY_SCHEMES
        for route in api_routes(app):
            if not route.include_in_schema:
                continue
            for method in route.methods or ():
                operation = schema["paths"][route.path_format].get(method.lower())
                if operation is None:
                    continue
                if _depends_on(route.dependant, get_principal):
                    operation["security"] = SECURITY
                responses = operation.setdefault("responses", {})
                for code in error_codes(route, streams_body):
                    responses.setdefault(str(code), {"description": _DESCRIPTIONS[code]})
                if "429" in responses:
                    responses["429"].setdefault("headers", _RETRY_AFTER)
                for code, response in responses.items():
                    if code[:1] in ("4", "5"):
                        response["content"] = _ERROR_REF
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
