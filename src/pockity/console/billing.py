"""A user's plans, billing and account pages: tiers and tier requests, invoices and paying them, credits,
auto-renew, cancelling.

Every action calls the service the JSON API's route calls (tier_requests, billing, payments, credits, users),
so the rules, refusals and audit entries are the same; a refusal is shown as the service's own sentence. A
refused call's unit of work is rolled back before the page is shown again, as the API's request would be (the
session dependency would otherwise commit whatever the service had flushed before refusing).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.auth.dependencies import request_actor
from pockity.auth.schemas import Principal
from pockity.billing import invoices
from pockity.billing import service as billing
from pockity.config import Settings
from pockity.console import qr, sessions
from pockity.console.sessions import ConsoleUser
from pockity.console.templating import RAZORPAY_CSP, env, render
from pockity.credits import service as credits
from pockity.db import DatabaseDep, ReadSessionDep, SessionDep
from pockity.errors import PockityError, ValidationFailed
from pockity.kit.money import amount
from pockity.payments import checkout, crypto
from pockity.payments import service as payments
from pockity.payments.providers import razorpay_provider
from pockity.payments.schemas import CryptoSubmitIn, TopUpIn
from pockity.tier_requests import service as tier_requests
from pockity.tier_requests.schemas import TierRequestIn
from pockity.tiers import service as tiers

router = APIRouter(include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
Id = Annotated[str, Form(max_length=64)]
CURRENCY = "USD"  # the balance the billing page shows (credits.view's default, as the API's)
CHECKOUT_PROVIDERS = ("stripe", "razorpay")  # Stripe: a redirect to Checkout; Razorpay: its widget on our page

# Fixed sentences for `?done=` after a redirect (never user text).
NOTICES = {
    "requested": "Your request was sent. An administrator will review it.",
    "request_cancelled": "Your request was cancelled.",
    "cancelled": "Your plan change was cancelled, or your plan ends at the end of its period.",
    "auto_renew_on": "Auto-renew from credits is on.",
    "auto_renew_off": "Auto-renew from credits is off.",
    "paid": "The invoice is paid.",
    "submitted": "Thank you: the transaction was recorded and waits for an administrator to confirm it.",
    "topup": "Your top-up invoice was created: pay it below and its amount becomes credit.",
}
Done = Annotated[str | None, Query(max_length=32)]
_AMOUNT = re.compile(r"^(?P<whole>\d{1,12})(?:\.(?P<part>\d{1,2}))?$")


def money(cents: int | None, currency: str = CURRENCY) -> str:
    """Integer cents as an amount: 1234, "USD" → "12.34 USD"."""
    return amount(cents, currency)


env.filters["money"] = money


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{field.replace('_', ' ').capitalize()}: {err['msg']}."


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _notice(done: str | None) -> str | None:
    return NOTICES.get(done or "")


def _see(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


# --- plans -------------------------------------------------------------------------------------------------


async def _plans(
    request: Request, session: AsyncSession, principal: Principal, status: int = 200, **extra: Any
) -> Response:
    offered = await tiers.list_public(session)
    state = await billing.subscription_state(session, principal.user_id)
    requests = await tier_requests.own_requests(session, principal.user_id)
    names = {t.id: t.name for t in offered}
    if state.tier is not None:
        names[state.tier.id] = state.tier.name
    for tier_id in {r.tier_id for r in requests} | ({state.pending.tier_id} if state.pending else set()):
        if tier_id not in names:
            try:
                names[tier_id] = (await tiers.get_tier(session, tier_id)).name
            except PockityError:
                names[tier_id] = tier_id
    values: dict[str, Any] = {"error": None, "notice": None, "form": {"tier_id": "", "reason": ""}, **extra}
    return render(
        request,
        "billing/plans.html",
        status_code=status,
        tiers=offered,
        state=state,
        requests=requests,
        tier_names=names,
        has_pending=any(r.status == "PENDING" for r in requests),
        **values,
    )


@router.get("/plans")
async def plans(request: Request, principal: ConsoleUser, session: ReadSessionDep, done: Done = None) -> Response:
    return await _plans(request, session, principal, notice=_notice(done))


@router.post("/plans/request")
async def request_tier(
    request: Request,
    principal: ConsoleUser,
    session: SessionDep,
    tier_id: Id,
    reason: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    form = {"tier_id": tier_id, "reason": reason}
    try:
        body = TierRequestIn(tier_id=tier_id, reason=reason)
    except ValidationError as exc:
        return await _plans(request, session, principal, 422, error=_first_error(exc), form=form)
    try:
        await tier_requests.create_request(
            session, principal.user_id, body.tier_id, body.reason, request_actor(request, principal)
        )
    except PockityError as exc:  # a pending request already, the current tier, an archived tier
        await session.rollback()
        return await _plans(request, session, principal, exc.status, error=exc.message, form=form)
    return _see("/plans?done=requested")


@router.post("/plans/requests/{request_id}/cancel")
async def cancel_request(request: Request, request_id: str, principal: ConsoleUser, session: SessionDep) -> Response:
    try:
        await tier_requests.cancel_request(session, principal.user_id, request_id, request_actor(request, principal))
    except PockityError as exc:
        await session.rollback()
        if exc.status == 404:
            raise
        return await _plans(request, session, principal, exc.status, error=exc.message)
    return _see("/plans?done=request_cancelled")


@router.get("/plans/cancel")
async def confirm_cancel(request: Request, principal: ConsoleUser, session: ReadSessionDep) -> Response:
    state = await billing.subscription_state(session, principal.user_id)
    pending_tier = await tiers.get_tier(session, state.pending.tier_id) if state.pending else None
    return render(request, "billing/cancel.html", state=state, pending_tier=pending_tier, error=None)


@router.post("/plans/cancel")
async def cancel_subscription(request: Request, principal: ConsoleUser, session: SessionDep) -> Response:
    try:
        await billing.cancel(session, principal.user_id, request_actor(request, principal))
    except PockityError as exc:  # nothing to cancel
        await session.rollback()
        state = await billing.subscription_state(session, principal.user_id)
        return render(
            request, "billing/cancel.html", status_code=exc.status, state=state, pending_tier=None, error=exc.message
        )
    return _see("/plans?done=cancelled")


# --- billing -----------------------------------------------------------------------------------------------


async def _billing(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    status: int = 200,
    cursor: str | None = None,
    **extra: Any,
) -> Response:
    bills = await invoices.own_list(session, principal.user_id)
    balance = await credits.view(session, principal.user_id, CURRENCY, cursor=cursor, limit=50)
    state = await billing.subscription_state(session, principal.user_id)
    values: dict[str, Any] = {"error": None, "notice": None, "amount": "", **extra}
    return render(
        request,
        "billing/billing.html",
        status_code=status,
        invoices=bills.items,
        credits=balance,
        state=state,
        currency=CURRENCY,
        **values,
    )


@router.get("/billing")
async def billing_page(
    request: Request,
    principal: ConsoleUser,
    session: ReadSessionDep,
    done: Done = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    return await _billing(request, session, principal, cursor=cursor, notice=_notice(done))


def _cents(amount: str) -> int:
    """A typed amount ("10", "1,000", "12.5", "12.50") as integer cents; the limits are TopUpIn's."""
    match = _AMOUNT.match(amount.strip().replace(",", ""))
    if match is None:
        raise ValidationFailed("Amount: enter a number with at most two decimals, such as 12.50.")
    return int(match["whole"]) * 100 + int((match["part"] or "").ljust(2, "0"))


def _topup_limits() -> tuple[int, int]:
    """TopUpIn's bounds on amount_cents, to word its refusal in the currency rather than in cents."""
    bounds = {type(m).__name__: m for m in TopUpIn.model_fields["amount_cents"].metadata}
    return int(bounds["Ge"].ge), int(bounds["Le"].le)


@router.post("/billing/top-up")
async def top_up(
    request: Request, principal: ConsoleUser, session: SessionDep, amount: Annotated[str, Form(max_length=32)]
) -> Response:
    try:
        body = TopUpIn(amount_cents=_cents(amount), currency=CURRENCY)
    except ValidationError:
        low, high = _topup_limits()
        message = f"Amount: a top-up is between {money(low)} and {money(high)}."
        return await _billing(request, session, principal, 422, error=message, amount=amount)
    except PockityError as exc:
        return await _billing(request, session, principal, exc.status, error=exc.message, amount=amount)
    invoice = await payments.create_topup(
        session, principal.user_id, body.amount_cents, body.currency, request_actor(request, principal)
    )
    return _see(f"/billing/invoices/{invoice.id}?done=topup")


@router.post("/billing/auto-renew")
async def auto_renew(
    request: Request,
    principal: ConsoleUser,
    session: SessionDep,
    enabled: Annotated[str, Form(pattern="^(on|off)$")],
) -> Response:
    try:
        await billing.set_auto_renew(session, principal.user_id, enabled == "on", request_actor(request, principal))
    except PockityError as exc:  # no subscription
        await session.rollback()
        return await _billing(request, session, principal, exc.status, error=exc.message)
    return _see(f"/billing?done=auto_renew_{enabled}")


# --- one invoice -------------------------------------------------------------------------------------------


async def _invoice(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    invoice_id: str,
    status: int = 200,
    **extra: Any,
) -> Response:
    settings = _settings(request)
    detail = await crypto.invoice_detail(session, settings, principal.user_id, invoice_id)  # another's: 404
    offered = {m.id: m for m in checkout.methods(settings).methods}
    providers = [p for p in CHECKOUT_PROVIDERS if offered[p].available]
    paid_by = [p for p in (await payments.own_payments(session, principal.user_id)).items if p.invoice_id == detail.id]
    balance = await credits.balance(session, principal.user_id, detail.currency)
    values: dict[str, Any] = {"error": None, "notice": None, "tx": {"asset": "", "tx_hash": "", "from": ""}, **extra}
    return render(
        request,
        "billing/invoice.html",
        status_code=status,
        invoice=detail,
        is_open=detail.status in invoices.OPEN,
        quotes=[q for q in detail.crypto if q.address],
        qr_codes={
            q.asset: qr.svg(qr.payment_uri(q.asset, q.address, q.amount), f"QR code to pay in {q.asset}")
            for q in detail.crypto
            if q.address and q.available
        },
        providers=providers,
        payments=paid_by,
        balance=balance,
        **values,
    )


@router.get("/billing/invoices/{invoice_id}")
async def invoice_page(
    request: Request, invoice_id: str, principal: ConsoleUser, session: ReadSessionDep, done: Done = None
) -> Response:
    return await _invoice(request, session, principal, invoice_id, notice=_notice(done))


@router.post("/billing/invoices/{invoice_id}/pay-with-credits")
async def pay_with_credits(request: Request, invoice_id: str, principal: ConsoleUser, session: SessionDep) -> Response:
    try:
        await payments.pay_with_credits(session, principal.user_id, invoice_id, request_actor(request, principal))
    except PockityError as exc:  # not enough credit, not open, a top-up
        await session.rollback()
        if exc.status == 404:
            raise
        return await _invoice(request, session, principal, invoice_id, exc.status, error=exc.message)
    return _see(f"/billing/invoices/{invoice_id}?done=paid")


@router.post("/billing/invoices/{invoice_id}/crypto")
async def submit_crypto(
    request: Request,
    invoice_id: str,
    principal: ConsoleUser,
    session: SessionDep,
    asset: Annotated[str, Form(max_length=16)],
    tx_hash: Annotated[str, Form(max_length=256)],
    from_address: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    tx = {"asset": asset, "tx_hash": tx_hash, "from": from_address}
    try:
        body = CryptoSubmitIn(asset=asset, tx_hash=tx_hash.strip(), from_address=from_address.strip() or None)
    except ValidationError as exc:
        return await _invoice(request, session, principal, invoice_id, 422, error=_first_error(exc), tx=tx)
    try:
        await crypto.submit(
            session,
            _settings(request),
            principal.user_id,
            invoice_id,
            body.asset,
            body.tx_hash,
            body.from_address,
            request_actor(request, principal),
        )
    except PockityError as exc:  # a bad hash, a hash used before, no quote, not open
        await session.rollback()
        if exc.status == 404:
            raise
        return await _invoice(request, session, principal, invoice_id, exc.status, error=exc.message, tx=tx)
    return _see(f"/billing/invoices/{invoice_id}?done=submitted")


@router.post("/billing/invoices/{invoice_id}/checkout")
async def start_checkout(
    request: Request,
    invoice_id: str,
    principal: ConsoleUser,
    db: DatabaseDep,
    session: ReadSessionDep,
    provider: Annotated[str, Form(max_length=16)],
) -> Response:
    try:
        if provider not in CHECKOUT_PROVIDERS:
            raise ValidationFailed("This way to pay is not offered here.")
        started = await checkout.start(db, _settings(request), principal, invoice_id, provider)
    except PockityError as exc:  # not configured, the provider refused, not open
        if exc.status == 404:
            raise
        return await _invoice(request, session, principal, invoice_id, exc.status, error=exc.message)
    if started.order_id and started.key_id:  # Razorpay: its widget, on a page of ours that may load it
        detail = await crypto.invoice_detail(session, _settings(request), principal.user_id, invoice_id)
        return render(
            request,
            "billing/razorpay.html",
            csp=RAZORPAY_CSP,
            invoice=detail,
            key_id=started.key_id,
            order_id=started.order_id,
            amount_cents=started.amount_cents,
            currency=started.currency,
            amount=money(started.amount_cents, started.currency),
            description=detail.description or f"Invoice {detail.id}",
        )
    if started.url is None:  # Stripe answers with its Checkout page's address; without one there is nowhere to go
        message = "The payment provider did not return a checkout page. Please try again."
        return await _invoice(request, session, principal, invoice_id, 502, error=message)
    return RedirectResponse(started.url, status_code=303)


@router.post("/billing/invoices/{invoice_id}/razorpay")
async def razorpay_paid(
    request: Request,
    invoice_id: str,
    principal: ConsoleUser,
    session: SessionDep,
    razorpay_order_id: Annotated[str, Form(max_length=64)] = "",
    razorpay_payment_id: Annotated[str, Form(max_length=64)] = "",
    razorpay_signature: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """The widget's proof of payment, checked by the same service as POST /api/billing/razorpay/verify."""
    try:
        await razorpay_provider.verify_checkout(
            session,
            _settings(request),
            principal.user_id,
            razorpay_order_id,
            razorpay_payment_id,
            razorpay_signature,
            request_actor(request, principal),
        )
    except PockityError as exc:  # a forged or mismatched signature, an order that is not this user's
        await session.rollback()
        return await _invoice(request, session, principal, invoice_id, exc.status, error=exc.message)
    return _see(f"/billing/invoices/{invoice_id}?done=paid")
