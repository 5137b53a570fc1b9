"""API keys: create (the secret shown once, with ready snippets), list with last use, revoke with confirmation."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from pockity.apikeys import service
from pockity.apikeys.schemas import ApiKeyCreateIn
from pockity.auth.dependencies import request_actor
from pockity.auth.schemas import SCOPES
from pockity.console import sessions
from pockity.console.sessions import ConsoleUser
from pockity.console.templating import render
from pockity.db import DatabaseDep, SessionDep
from pockity.errors import PockityError
from pockity.kit.time import utcnow
from pockity.tiers import service as tiers

router = APIRouter(
    prefix="/keys",
    include_in_schema=False,
    dependencies=[Depends(sessions.check_csrf), Depends(sessions.console_verified)],
)
EXPIRY_CHOICES = ((0, "Never"), (30, "30 days"), (90, "90 days"), (365, "1 year"))


async def _list(
    request: Request, db: DatabaseDep, principal: ConsoleUser, status: int = 200, **form: object
) -> Response:
    rows = await service.list_key_rows(db, principal.user_id)
    async with db.sessions() as session:
        offered = list(await tiers.list_public(session))
    values = {"name": "", "prefix": "", "scopes": list(SCOPES), "expiry_days": 0, "tier_id": "", "error": None, **form}
    return render(
        request,
        "keys/list.html",
        status_code=status,
        keys=rows,
        tiers=offered,
        tier_names={t.id: t.name for t in offered},
        all_scopes=SCOPES,
        expiry_choices=EXPIRY_CHOICES,
        form=values,
    )


@router.get("")
async def list_keys(request: Request, principal: ConsoleUser, db: DatabaseDep) -> Response:
    return await _list(request, db, principal)


def _endpoints(request: Request) -> dict[str, str | None]:
    settings = request.app.state.settings
    host = request.url.hostname or "localhost"
    s3 = f"{request.url.scheme}://{host}:{settings.s3_api_port}" if settings.s3_api_port else None
    return {"api": str(request.base_url).rstrip("/"), "s3": s3, "bucket": settings.s3_api_bucket}


@router.post("")
async def create_key(
    request: Request,
    principal: ConsoleUser,
    db: DatabaseDep,
    session: SessionDep,
    name: Annotated[str, Form(max_length=200)] = "",
    prefix: Annotated[str, Form(max_length=1024)] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    expiry_days: Annotated[int, Form()] = 0,
    tier_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    form = {"name": name, "prefix": prefix, "scopes": scopes or [], "expiry_days": expiry_days, "tier_id": tier_id}
    expires_at = utcnow() + timedelta(days=expiry_days) if expiry_days in {d for d, _ in EXPIRY_CHOICES[1:]} else None
    try:
        data = ApiKeyCreateIn(
            name=name, scopes=scopes or [], prefix=prefix or None, expires_at=expires_at, tier_id=tier_id or None
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "value"
        return await _list(request, db, principal, 422, **form, error=f"{field.capitalize()}: {err['msg']}.")
    try:
        key, secret = await service.create_key(
            session,
            request.app.state.keyring,
            principal,
            data,
            max_keys=request.app.state.settings.max_api_keys_per_user,
            actor=request_actor(request, principal),
        )
    except PockityError as exc:  # the key limit, as the service words it
        return await _list(request, db, principal, exc.status, **form, error=exc.message)
    return render(request, "keys/created.html", key=key, secret=secret, endpoints=_endpoints(request))


@router.get("/{key_id}/revoke")
async def confirm_revoke(request: Request, key_id: str, principal: ConsoleUser, session: SessionDep) -> Response:
    key = await service.get_key(session, principal.user_id, key_id)
    return render(request, "keys/revoke.html", key=key)


@router.post("/{key_id}/revoke")
async def revoke(request: Request, key_id: str, principal: ConsoleUser, session: SessionDep) -> Response:
    await service.revoke_key(session, principal.user_id, key_id, request_actor(request, principal))
    return RedirectResponse("/keys", status_code=303)
