from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status

from pockity.auth.dependencies import AdminPrincipal, JwtPrincipal, request_actor
from pockity.db import SessionDep
from pockity.openapi import CONFLICT, NOT_FOUND
from pockity.tier_requests import service
from pockity.tier_requests.schemas import ResolvedOut, ResolveIn, TierRequestIn, TierRequestList, TierRequestOut

router = APIRouter(prefix="/api/tier-requests", tags=["tier requests"], responses=CONFLICT | NOT_FOUND)
Status = Literal["PENDING", "APPROVED", "REJECTED", "CANCELLED"]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TierRequestOut)
async def create_request(body: TierRequestIn, principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    return await service.create_request(
        session, principal.user_id, body.tier_id, body.reason, request_actor(request, principal)
    )


@router.get("", response_model=TierRequestList)
async def list_own(principal: JwtPrincipal, session: SessionDep) -> object:
    return {"items": await service.own_requests(session, principal.user_id)}


@router.delete("/{request_id}", response_model=TierRequestOut)
async def cancel_request(request_id: str, principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    return await service.cancel_request(session, principal.user_id, request_id, request_actor(request, principal))


@router.get("/admin/all", response_model=TierRequestList)
async def list_all(
    _: AdminPrincipal,
    session: SessionDep,
    status: Status | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> object:
    items, next_cursor = await service.list_requests(session, status=status, cursor=cursor, limit=limit)
    return {"items": items, "next_cursor": next_cursor}


@router.patch("/admin/{request_id}/approve", response_model=ResolvedOut)
async def resolve(
    request_id: str, body: ResolveIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    """Approve (`approved: true`) or reject a pending request."""
    return await service.resolve(
        session,
        request_id,
        approved=body.approved,
        note=body.note,
        admin_id=admin.user_id,
        actor=request_actor(request, admin),
    )
