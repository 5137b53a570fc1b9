"""Who is calling: `CurrentPrincipal` (JWT or API key), `JwtPrincipal`, `AdminPrincipal`.

Every router authorizes through one of these aliases; the route-table test checks that none is missed.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from pockity.apikeys import service as apikeys_service
from pockity.audit.service import Actor
from pockity.auth import service as auth_service
from pockity.auth.schemas import Principal
from pockity.db import DatabaseDep
from pockity.errors import Forbidden, Unauthorized
from pockity.kit.time import utcnow
from pockity.ratelimit import checks
from pockity.ratelimit.limiter import RequestLimiter

# Declared as security schemes so /docs offers both ways to authenticate.
_bearer = HTTPBearer(auto_error=False, description="JWT from POST /api/auth/login")
_key_id = APIKeyHeader(name="X-Access-Key-Id", auto_error=False, description="API key id (PK...)")
_key_secret = APIKeyHeader(name="X-Secret-Key", auto_error=False, description="API key secret")


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


async def get_principal(
    request: Request,
    db: DatabaseDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    key_id: Annotated[str | None, Depends(_key_id)],
    key_secret: Annotated[str | None, Depends(_key_secret)],
) -> Principal:
    state = request.app.state
    limiter: RequestLimiter | None = state.limiter
    patience: float = state.settings.rate_limit_patience_seconds
    credential = None
    if limiter is not None and (bearer is not None or key_id):
        credential = checks.credential_id(f"{key_id}:{key_secret}" if key_id else f"jwt:{bearer.credentials}")  # type: ignore[union-attr]
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
        principal = await auth_service.principal_from_token(db, bearer.credentials, state.settings.jwt_secret)
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


async def require_admin(principal: JwtPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("Administrator access is required.", code="admin_required")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
