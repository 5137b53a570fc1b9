from __future__ import annotations

from fastapi import APIRouter, Request

from pockity.auth.dependencies import JwtPrincipal, request_actor
from pockity.billing import invoices, service
from pockity.billing.schemas import InvoiceList, SubscriptionOut, SubscriptionView
from pockity.db import SessionDep
from pockity.openapi import CONFLICT

router = APIRouter(prefix="/api/billing", tags=["billing"], responses=CONFLICT)


@router.get("/subscription", response_model=SubscriptionView)
async def get_subscription(principal: JwtPrincipal, session: SessionDep) -> object:
    """The current subscription (and its tier) and a change waiting for payment, if any."""
    return await service.subscription_state(session, principal.user_id)


@router.post("/subscription/cancel", response_model=SubscriptionOut)
async def cancel_subscription(principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    """Cancel a pending change, or else the paid subscription at the end of its period (data is never deleted)."""
    return await service.cancel(session, principal.user_id, request_actor(request, principal))


@router.get("/invoices", response_model=InvoiceList)
async def list_invoices(principal: JwtPrincipal, session: SessionDep) -> object:
    """Your invoices, newest first."""
    return await invoices.own_list(session, principal.user_id)
