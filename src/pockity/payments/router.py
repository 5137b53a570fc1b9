"""Payment routes: methods, checkout, crypto submissions, credits, and the provider webhooks.

User routes need a JWT (like the rest of billing). Webhooks are public but signed: each verifies its
provider's signature over the raw body before anything is stored (the route-table test lists them).
Admin payment routes live in admin/router.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status

from pockity.audit.service import Actor
from pockity.auth.dependencies import JwtPrincipal, request_actor
from pockity.billing import service as billing
from pockity.billing.schemas import InvoiceOut, SubscriptionOut
from pockity.config import Settings
from pockity.credits import service as credits
from pockity.credits.schemas import CreditsOut
from pockity.db import DatabaseDep, SessionDep
from pockity.openapi import CONFLICT, PROVIDER
from pockity.payments import checkout, crypto, service
from pockity.payments.providers import crypto_processors, razorpay_provider, stripe_provider
from pockity.payments.schemas import (
    AutoRenewIn,
    CheckoutIn,
    CheckoutOut,
    CryptoSubmitIn,
    InvoiceDetail,
    MethodsOut,
    PaymentList,
    PaymentOut,
    RazorpayVerifyIn,
    TopUpIn,
    WebhookAck,
)
from pockity.payments.webhooks import Handler, Handling, Verified, deliver

router = APIRouter(prefix="/api/billing", tags=["payments"], responses=CONFLICT | PROVIDER)
webhooks = APIRouter(prefix="/api/billing/webhooks", tags=["webhooks"], responses=PROVIDER)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("/methods", response_model=MethodsOut)
async def methods(_: JwtPrincipal, request: Request) -> object:
    """Which ways to pay this server offers; a provider without its keys is listed as unavailable."""
    return checkout.methods(_settings(request))


@router.get("/invoices/{invoice_id}", response_model=InvoiceDetail)
async def get_invoice(invoice_id: str, principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    """One of your invoices, with what to send to pay it in each crypto asset."""
    return await crypto.invoice_detail(session, _settings(request), principal.user_id, invoice_id)


@router.post("/invoices/{invoice_id}/checkout", response_model=CheckoutOut)
async def start_checkout(
    invoice_id: str, body: CheckoutIn, principal: JwtPrincipal, request: Request, db: DatabaseDep
) -> object:
    """Start paying an invoice by card (a Stripe Checkout Session URL) or with Razorpay (an order id for its
    checkout widget). The provider call runs outside any database transaction."""
    return await checkout.start(db, _settings(request), principal, invoice_id, body.provider)


@router.post("/razorpay/verify", response_model=PaymentOut)
async def razorpay_verify(
    body: RazorpayVerifyIn, principal: JwtPrincipal, request: Request, session: SessionDep
) -> object:
    """Razorpay checkout's success handler posts its three fields here; the signature proves the payment."""
    return await razorpay_provider.verify_checkout(
        session,
        _settings(request),
        principal.user_id,
        body.razorpay_order_id,
        body.razorpay_payment_id,
        body.razorpay_signature,
        request_actor(request, principal),
    )


@router.post("/invoices/{invoice_id}/crypto", response_model=PaymentOut, status_code=status.HTTP_201_CREATED)
async def submit_crypto(
    invoice_id: str, body: CryptoSubmitIn, principal: JwtPrincipal, request: Request, session: SessionDep
) -> object:
    """Tell us the transaction that pays this invoice; an admin confirms it against the chain."""
    return await crypto.submit(
        session,
        _settings(request),
        principal.user_id,
        invoice_id,
        body.asset,
        body.tx_hash,
        body.from_address,
        request_actor(request, principal),
    )


@router.post("/invoices/{invoice_id}/pay-with-credits", response_model=InvoiceOut)
async def pay_with_credits(invoice_id: str, principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    return await service.pay_with_credits(session, principal.user_id, invoice_id, request_actor(request, principal))


@router.get("/payments", response_model=PaymentList)
async def list_payments(principal: JwtPrincipal, session: SessionDep) -> object:
    """Your payments, newest first."""
    return await service.own_payments(session, principal.user_id)


@router.get("/credits", response_model=CreditsOut)
async def get_credits(
    principal: JwtPrincipal,
    session: SessionDep,
    currency: Annotated[str, Query(pattern=r"^[A-Z]{3}$")] = "USD",
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> object:
    """Your credit balance (the sum of the ledger) and its entries, newest first."""
    return await credits.view(session, principal.user_id, currency, cursor=cursor, limit=limit)


@router.post("/credits/top-up", response_model=InvoiceOut, status_code=status.HTTP_201_CREATED)
async def top_up(body: TopUpIn, principal: JwtPrincipal, request: Request, session: SessionDep) -> object:
    """An invoice whose payment (by any method) becomes credit."""
    return await service.create_topup(
        session, principal.user_id, body.amount_cents, body.currency, request_actor(request, principal)
    )


@router.patch("/subscription", response_model=SubscriptionOut)
async def update_subscription(
    body: AutoRenewIn, principal: JwtPrincipal, request: Request, session: SessionDep
) -> object:
    """Renew automatically from the credit balance at each period end (when it covers the price)."""
    return await billing.set_auto_renew(
        session, principal.user_id, body.auto_renew_from_credits, request_actor(request, principal)
    )


# --- webhooks --------------------------------------------------------------------------------------------


async def _deliver(request: Request, db: DatabaseDep, event: Verified, handler: Handler) -> object:
    handling = Handling(_settings(request), Actor(type="provider", id=event.provider, request_id=None))
    return await deliver(db, event, handler, handling)


@webhooks.post("/stripe", response_model=WebhookAck)
async def stripe_webhook(
    request: Request, db: DatabaseDep, stripe_signature: Annotated[str | None, Header()] = None
) -> object:
    event = stripe_provider.verify(_settings(request), await request.body(), stripe_signature)
    return await _deliver(request, db, event, stripe_provider.handle)


@webhooks.post("/razorpay", response_model=WebhookAck)
async def razorpay_webhook(
    request: Request,
    db: DatabaseDep,
    x_razorpay_signature: Annotated[str | None, Header()] = None,
    x_razorpay_event_id: Annotated[str | None, Header()] = None,
) -> object:
    event = razorpay_provider.verify(
        _settings(request), await request.body(), x_razorpay_signature, x_razorpay_event_id
    )
    return await _deliver(request, db, event, razorpay_provider.handle)


@webhooks.post("/coinbase", response_model=WebhookAck)
async def coinbase_webhook(
    request: Request, db: DatabaseDep, x_cc_webhook_signature: Annotated[str | None, Header()] = None
) -> object:
    event = crypto_processors.verify_coinbase(_settings(request), await request.body(), x_cc_webhook_signature)
    return await _deliver(request, db, event, crypto_processors.handle_coinbase)


@webhooks.post("/btcpay", response_model=WebhookAck)
async def btcpay_webhook(
    request: Request, db: DatabaseDep, btcpay_sig: Annotated[str | None, Header(alias="BTCPay-Sig")] = None
) -> object:
    event = crypto_processors.verify_btcpay(_settings(request), await request.body(), btcpay_sig)
    return await _deliver(request, db, event, crypto_processors.handle_btcpay)
