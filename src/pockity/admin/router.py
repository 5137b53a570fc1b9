"""Admin API: every route here depends on AdminPrincipal (the route-table test checks it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status

from pockity.admin import service
from pockity.admin.schemas import (
    AssignTierIn,
    AuditPage,
    InvoiceActionIn,
    ReconcileIn,
    ReconciliationOut,
    ReconciliationPage,
    UsageOverviewOut,
    UserDetailOut,
)
from pockity.apikeys import service as apikeys_service
from pockity.apikeys.schemas import ApiKeyList, ApiKeyOut
from pockity.audit import service as audit_service
from pockity.auth.dependencies import AdminPrincipal, request_actor
from pockity.billing import invoices
from pockity.billing import service as billing
from pockity.billing.schemas import InvoiceList, InvoiceOut, SubscriptionList, SubscriptionOut
from pockity.credits.schemas import CreditGrantIn, CreditsOut
from pockity.db import DatabaseDep, SessionDep
from pockity.openapi import CONFLICT, NOT_FOUND
from pockity.payments import crypto
from pockity.payments import service as payments
from pockity.payments.schemas import (
    PaymentActionIn,
    PaymentEventList,
    PaymentList,
    PaymentOut,
    RatesIn,
    RatesOut,
)
from pockity.storage import reconcile
from pockity.storage import service as storage
from pockity.users import service as users_service
from pockity.users.schemas import AdminUserOut, UserPage, UserUpdateIn

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=CONFLICT | NOT_FOUND)
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=64)]
InvoiceStatus = Literal["PENDING", "PAID", "FAILED", "REFUNDED", "VOID"]
PaymentStatus = Literal["PENDING", "CONFIRMED", "REJECTED", "FAILED", "REFUNDED"]
Provider = Literal["stripe", "razorpay", "crypto", "coinbase", "btcpay", "manual"]
SubscriptionStatus = Literal["TRIALING", "ACTIVE", "PENDING_PAYMENT", "PAST_DUE", "CANCELLED", "EXPIRED"]


@router.get("/users", response_model=UserPage)
async def list_users(
    _: AdminPrincipal,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Limit = 50,
    q: Annotated[str | None, Query(max_length=320, description="part of an email or name")] = None,
) -> object:
    items, next_cursor = await users_service.list_users(session, cursor=cursor, limit=limit, query=q)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/users/{user_id}", response_model=UserDetailOut)
async def get_user(user_id: str, _: AdminPrincipal, session: SessionDep) -> object:
    """The user with tier, subscription, usage, API keys and invoices."""
    return await service.user_detail(session, user_id)


@router.patch("/users/{user_id}", response_model=AdminUserOut)
async def update_user(
    user_id: str, body: UserUpdateIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    """Disable/enable (`disabled`), change `role` or `name`; disabled users' tokens and keys stop at once."""
    return await users_service.update_user(session, user_id, body, request_actor(request, admin))


@router.put("/users/{user_id}/tier", response_model=SubscriptionOut)
async def assign_tier(
    user_id: str, body: AssignTierIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    """Assign any tier directly (private ones included) as an ACTIVE subscription with no invoice."""
    return await service.assign_tier(session, user_id, body.tier_id, request_actor(request, admin))


@router.get("/users/{user_id}/apikeys", response_model=ApiKeyList)
async def list_user_keys(user_id: str, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    return {"items": await service.user_keys(session, user_id, request_actor(request, admin))}


@router.delete("/apikeys/{key_id}", response_model=ApiKeyOut)
async def revoke_key(key_id: str, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    return await apikeys_service.admin_revoke_key(session, key_id, request_actor(request, admin))


@router.get("/usage", response_model=UsageOverviewOut)
async def usage_overview(_: AdminPrincipal, session: SessionDep) -> object:
    """Totals, the top users by bytes, and users at ≥ 90 % of (or over) their quota."""
    return await storage.overview(session)


@router.get("/invoices", response_model=InvoiceList)
async def list_invoices(
    _: AdminPrincipal,
    session: SessionDep,
    status: InvoiceStatus | None = None,
    user_id: Annotated[str | None, Query(alias="userId", max_length=64)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> object:
    return await invoices.list_invoices(session, status=status, user_id=user_id, cursor=cursor, limit=limit)


@router.patch("/invoices/{invoice_id}", response_model=InvoiceOut)
async def update_invoice(
    invoice_id: str, body: InvoiceActionIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    """Mark an open invoice PAID (confirmed by hand: bank, crypto) or VOID; each happens at most once."""
    actor = request_actor(request, admin)
    if body.status == "PAID":
        return await payments.pay_manually(session, invoice_id, actor, body.note)
    return await invoices.void_invoice(session, invoice_id, actor, note=body.note)


@router.get("/subscriptions", response_model=SubscriptionList)
async def list_subscriptions(
    _: AdminPrincipal,
    session: SessionDep,
    status: SubscriptionStatus | None = None,
    user_id: Annotated[str | None, Query(alias="userId", max_length=64)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> object:
    return await billing.list_subscriptions(session, status=status, user_id=user_id, cursor=cursor, limit=limit)


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    _: AdminPrincipal,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Limit = 50,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=64, description="actor id")] = None,
    target: Annotated[str | None, Query(max_length=64, description="target id")] = None,
    since: Annotated[datetime | None, Query(alias="from")] = None,
    until: Annotated[datetime | None, Query(alias="to")] = None,
) -> object:
    items, next_cursor = await audit_service.list_events(
        session,
        action=action,
        actor_id=actor,
        target_id=target,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return {"items": items, "next_cursor": next_cursor}


@router.post("/reconcile", status_code=status.HTTP_202_ACCEPTED, response_model=ReconciliationOut)
async def start_reconciliation(body: ReconcileIn, admin: AdminPrincipal, request: Request, db: DatabaseDep) -> object:
    """Reconcile every user (or `userId`) with the bucket in the background; poll the returned report."""
    report, _ = await reconcile.start_reconcile(
        db,
        request.app.state.storage,
        user_id=body.user_id,
        dry_run=body.dry_run,
        trigger="admin",
        actor=request_actor(request, admin),
    )
    return report


@router.get("/reconciliations", response_model=ReconciliationPage)
async def list_reconciliations(
    _: AdminPrincipal, session: SessionDep, cursor: Cursor = None, limit: Limit = 50
) -> object:
    items, next_cursor = await storage.list_reports(session, cursor=cursor, limit=limit)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/reconciliations/{report_id}", response_model=ReconciliationOut)
async def get_reconciliation(report_id: str, _: AdminPrincipal, session: SessionDep) -> object:
    return await storage.get_report(session, report_id)


# --- payments ----------------------------------------------------------------------------------------------


@router.get("/payments", response_model=PaymentList)
async def list_payments(
    _: AdminPrincipal,
    session: SessionDep,
    status: PaymentStatus | None = None,
    provider: Provider | None = None,
    user_id: Annotated[str | None, Query(alias="userId", max_length=64)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> object:
    """Payments newest first; `?status=PENDING&provider=crypto` is the queue of transactions to check."""
    return await payments.list_payments(
        session, status=status, provider=provider, user_id=user_id, cursor=cursor, limit=limit
    )


@router.patch("/payments/{payment_id}", response_model=PaymentOut)
async def resolve_payment(
    payment_id: str, body: PaymentActionIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    """Confirm a submitted crypto payment with the amount received (in the asset; default: the quote) — it pays
    the invoice and any difference becomes credit — or reject it. Each payment is resolved once."""
    return await crypto.resolve(
        session, payment_id, body.action, body.amount_received, body.note or None, request_actor(request, admin)
    )


@router.get("/payment-events", response_model=PaymentEventList)
async def list_payment_events(
    _: AdminPrincipal,
    session: SessionDep,
    provider: Provider | None = None,
    unprocessed: bool = False,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> object:
    """The payments inbox: every verified provider event, its outcome and any processing error."""
    return await payments.list_events(session, provider=provider, unprocessed=unprocessed, cursor=cursor, limit=limit)


@router.get("/crypto-rates", response_model=RatesOut)
async def get_crypto_rates(_: AdminPrincipal, session: SessionDep) -> object:
    return await crypto.current_rates(session)


@router.put("/crypto-rates", response_model=RatesOut)
async def set_crypto_rates(body: RatesIn, admin: AdminPrincipal, request: Request, session: SessionDep) -> object:
    """Set ETH/BTC prices in USD, valid for `validForMinutes`; quotes for those assets stop when they expire."""
    return await crypto.set_rates(session, body.rates.items(), body.valid_for_minutes, request_actor(request, admin))


@router.get("/users/{user_id}/credits", response_model=CreditsOut)
async def get_user_credits(user_id: str, _: AdminPrincipal, session: SessionDep, currency: str = "USD") -> object:
    return await service.user_credits(session, user_id, currency)


@router.post("/users/{user_id}/credits", response_model=CreditsOut, status_code=status.HTTP_201_CREATED)
async def grant_credits(
    user_id: str, body: CreditGrantIn, admin: AdminPrincipal, request: Request, session: SessionDep
) -> object:
    """Grant credit with a reason (audited). `idempotencyKey` makes a retried request grant once."""
    return await service.grant_credits(session, user_id, body, request_actor(request, admin))
