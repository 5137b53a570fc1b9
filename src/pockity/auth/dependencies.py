"""Who is calling: `CurrentPrincipal` (JWT or API key), `JwtPrincipal`, `AdminPrincipal`; `VERIFIED_EMAIL`, the
router dependency of keys and storage.

Every router authorizes through one of these aliases; the route-table test checks that none is missed.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from pockity.apikeys import service as apikeys_service
from pockity.audit.service import Actor
from pockity.auth import service as auth_service
from pockity.auth.schemas import Principal
from pockity.db import Database
from pockity.errors import Forbidden, Unauthorized
from pockity.kit.time import utcnow
from pockity.ratelimit import checks
from pockity.ratelimit.limiter import RequestLimiter

# The ways to authenticate, as OpenAPI security schemes (openapi.py attaches them to every operation that
# depends on get_principal). get_principal reads the headers itself: three security-scheme dependencies cost
# FastAPI a dependency resolution each on every request.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "JWT from POST /api/auth/login"},
    "AccessKeyId": {"type": "apiKey", "in": "header", "name": "X-Access-Key-Id", "description": "API key id (PK...)"},
    "SecretKey": {"type": "apiKey", "in": "header", "name": "X-Secret-Key", "description": "API key secret"},
}
SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"AccessKeyId": [], "SecretKey": []}]


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if not scheme or not token or scheme.lower() != "bearer":
        return None
    return token


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def request_actor(request: Request, principal: Principal | None = None) -> Actor:
    """The audit actor of this request."""
    request_id = getattr(request.state, "request_id", None)
    if principal is None:
        return Actor(type="anonymous", ip=client_ip(request), request_id=request_id)
    if principal.key is not None:
        return Actor(type="api_key", id=principal.key.id, ip=client_ip(request), request_id=request_id)
    return Actor(type="user", id=principal.user_id, ip=client_ip(request), request_id=request_id)


async def get_principal(request: Request) -> Principal:
    state = request.app.state
    db: Database = state.db
    headers = request.headers
    bearer = bearer_token(headers.get("authorization"))
    key_id = headers.get("x-access-key-id") or None
    key_secret = headers.get("x-secret-key") or None
    limiter: RequestLimiter | None = state.limiter
    patience: float = state.settings.rate_limit_patience_seconds
    credential = None
    if limiter is not None and (bearer is not None or key_id):
        credential = checks.credential_id(f"{key_id}:{key_secret}" if key_id else f"jwt:{bearer}")
        known = limiter.blocked(credential)
        if known is not None:  # refused a moment ago, and its turn could not come within the patience yet
            await asyncio.sleep(patience)
            raise known
    if key_id is not None or key_secret is not None:
        if not key_id or not key_secret:
            raise apikeys_service.InvalidApiKey("Send both X-Access-Key-Id and X-Secret-Key.")
        principal = await apikeys_service.authenticate(db, state.keyring, key_id.strip(), key_secret.strip())
        assert principal.key is not None
        state.key_activity.note(principal.key.id, client_ip(request), utcnow())
        request.state.api_key_id = principal.key.id
    elif bearer is not None:
        principal = await auth_service.principal_from_token(db, bearer, state.settings.jwt_secret, client_ip(request))
    elif request.headers.get("authorization"):
        raise auth_service.InvalidToken("Use 'Authorization: Bearer <token>'.")
    else:
        raise Unauthorized()
    request.state.user_id = principal.user_id
    if limiter is not None:
        refused = await checks.spend(limiter, principal, state.default_rate, patience)
        if refused is not None:
            if credential is not None:
                limiter.block(credential, refused.wait, refused.details)
            raise refused
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_jwt(principal: CurrentPrincipal) -> Principal:
    if principal.key is not None:
        raise Forbidden("This action needs a login token (JWT), not an API key.", code="jwt_required")
    return principal


JwtPrincipal = Annotated[Principal, Depends(require_jwt)]


async def require_admin(request: Request, principal: JwtPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("Administrator access is required.", code="admin_required")
    if request.app.state.settings.require_admin_2fa and not principal.two_factor:
        raise auth_service.TwoFactorRequiredForAdmins()
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]


async def require_verified_email(request: Request, principal: CurrentPrincipal) -> Principal:
    """Router-wide on keys and storage: with REQUIRE_EMAIL_VERIFICATION on, an unproven address is refused."""
    if not principal.email_verified and request.app.state.settings.email_verification_required:
        raise auth_service.EmailNotVerified()
    return principal


VERIFIED_EMAIL = [Depends(require_verified_email)]  # router-wide, where every route has a principal
VerifiedPrincipal = Annotated[Principal, Depends(require_verified_email)]  # per route, beside token-only routes
