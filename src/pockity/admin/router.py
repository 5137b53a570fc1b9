"""Admin API: every route here depends on AdminPrincipal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from pockity.admin.schemas import AuditPage
from pockity.apikeys import service as apikeys_service
from pockity.apikeys.schemas import ApiKeyList, ApiKeyOut
from pockity.audit import service as audit_service
from pockity.auth.dependencies import AdminPrincipal, request_actor
from pockity.db import SessionDep
from pockity.users import service as users_service
from pockity.users.schemas import UserOut, UserPage, UserUpdateIn

router = APIRouter(prefix="/api/admin", tags=["admin"])
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/users", response_model=UserPage)
async def list_users(
    _: AdminPrincipal,
    session: SessionDep,
    cursor: str | None = None,
    limit: Limit = 50,
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> object:
    items, next_cursor = await users_service.list_users(session, cursor=cursor, limit=limit, email_contains=email)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(user_id: str, _: AdminPrincipal, session: SessionDep) -> object:
    return await users_service.get_user(session, user_id)


@router.patch("/users/{user_id}", response_model=UserOut)
async def update_user(
    user_id: str, body: UserUpdateIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    return await users_service.update_user(session, user_id, body, request_actor(request, admin))


@router.get("/users/{user_id}/apikeys", response_model=ApiKeyList)
async def list_user_keys(user_id: str, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    await users_service.get_user(session, user_id)
    audit_service.record(
        session, request_actor(request, admin), "admin.apikeys_listed", target_type="user", target_id=user_id
    )
    return {"items": await apikeys_service.list_keys(session, user_id)}


@router.delete("/apikeys/{key_id}", response_model=ApiKeyOut)
async def revoke_key(key_id: str, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    return await apikeys_service.admin_revoke_key(session, key_id, request_actor(request, admin))


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    _: AdminPrincipal,
    session: SessionDep,
    cursor: str | None = None,
    limit: Limit = 50,
    action: str | None = None,
    actor_id: Annotated[str | None, Query(alias="actorId")] = None,
    target_id: Annotated[str | None, Query(alias="targetId")] = None,
) -> object:
    items, next_cursor = await audit_service.list_events(
        session, action=action, actor_id=actor_id, target_id=target_id, cursor=cursor, limit=limit
    )
    return {"items": items, "next_cursor": next_cursor}
