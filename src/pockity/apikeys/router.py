from __future__ import annotations

from fastapi import APIRouter, Request, status

from pockity.apikeys import service
from pockity.apikeys.schemas import ApiKeyCreatedOut, ApiKeyCreateIn, ApiKeyList, ApiKeyOut
from pockity.auth.dependencies import VERIFIED_EMAIL, JwtPrincipal, request_actor
from pockity.db import DatabaseDep, ReadSessionDep, SessionDep
from pockity.openapi import CONFLICT

router = APIRouter(prefix="/api/apikeys", tags=["api keys"], responses=CONFLICT, dependencies=VERIFIED_EMAIL)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreatedOut)
async def create_key(body: ApiKeyCreateIn, principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    key, secret = await service.create_key(
        session,
        request.app.state.keyring,
        principal,
        body,
        max_keys=request.app.state.settings.max_api_keys_per_user,
        actor=request_actor(request, principal),
    )
    return ApiKeyCreatedOut.model_validate({**ApiKeyOut.model_validate(key).model_dump(), "secret_key": secret})


@router.get("", response_model=ApiKeyList)
async def list_keys(principal: JwtPrincipal, db: DatabaseDep) -> object:
    return {"items": await service.list_key_rows(db, principal.user_id)}


@router.get("/{key_id}", response_model=ApiKeyOut)
async def get_key(key_id: str, principal: JwtPrincipal, session: ReadSessionDep) -> object:
    return await service.get_key(session, principal.user_id, key_id)


@router.delete("/{key_id}", response_model=ApiKeyOut)
async def revoke_key(key_id: str, principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    return await service.revoke_key(session, principal.user_id, key_id, request_actor(request, principal))
