from __future__ import annotations

from fastapi import APIRouter, Request, status

from pockity.auth.dependencies import AdminPrincipal, request_actor
from pockity.db import SessionDep
from pockity.openapi import CONFLICT
from pockity.tiers import service
from pockity.tiers.schemas import TierAdminList, TierCreateIn, TierList, TierOut, TierUpdateIn

router = APIRouter(prefix="/api/tiers", tags=["tiers"], responses=CONFLICT)


@router.get("", response_model=TierList)
async def list_tiers(session: SessionDep) -> object:
    """The tiers for sale (no authentication)."""
    return {"items": await service.list_public(session)}


@router.get("/admin/all", response_model=TierAdminList)
async def list_all(_: AdminPrincipal, session: SessionDep) -> object:
    return {"items": await service.list_all(session)}


@router.post("/admin", status_code=status.HTTP_201_CREATED, response_model=TierOut)
async def create_tier(body: TierCreateIn, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    return await service.create_tier(session, body, request_actor(request, admin))


@router.patch("/admin/{tier_id}", response_model=TierOut)
async def update_tier(
    tier_id: str, body: TierUpdateIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    return await service.update_tier(session, tier_id, body, request_actor(request, admin))


@router.delete("/admin/{tier_id}", response_model=TierOut)
async def archive_tier(tier_id: str, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    return await service.archive_tier(session, tier_id, request_actor(request, admin))
