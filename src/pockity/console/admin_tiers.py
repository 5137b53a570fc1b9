"""Admin pages for the catalogue: tiers (list all, create, edit, archive) and the crypto rates quotes use.

Each action calls the same service function as the admin API (`POST/PATCH/DELETE /api/tiers/admin`, `PUT
/api/admin/crypto-rates`), so it is validated by the API's own input models, applied and audited the same way; a
refusal comes back as the form again with one plain sentence and its status.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.auth.dependencies import request_actor
from pockity.console import sessions
from pockity.console.admin_users import cents_of, money
from pockity.console.sessions import ConsoleAdmin
from pockity.console.templating import render
from pockity.db import ReadSessionDep, SessionDep
from pockity.errors import PockityError, ValidationFailed
from pockity.kit.time import utcnow
from pockity.models import Tier
from pockity.payments import crypto
from pockity.payments.schemas import RatesIn
from pockity.tiers import service as tiers
from pockity.tiers.schemas import TierCreateIn, TierOut, TierUpdateIn

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(sessions.check_csrf)])
DONE = {
    "created": "The tier has been created.",
    "updated": "The tier has been saved; users on it have its new limits at once.",
    "archived": "The tier is archived: it is no longer offered, and its users keep it until they change.",
    "rates": "The rates have been set.",
}
# The API's field names as the form's labels say them.
LABELS = {
    "name": "Name",
    "description": "Description",
    "storage_gb": "Storage (GB)",
    "max_objects": "Files",
    "max_object_size_mb": "Largest file (MB)",
    "price_cents": "Price",
    "currency": "Currency",
    "billing_period": "Billing period",
    "trial_days": "Trial days",
    "requests_per_second": "Requests per second",
    "request_burst": "Request burst",
    "max_concurrent_uploads": "Concurrent uploads",
}
# Blank means "none": no per-file limit, the server's default rate and upload limits.
OPTIONAL = ("description", "max_object_size_mb", "requests_per_second", "request_burst", "max_concurrent_uploads")
CHECKBOXES = {"private": "is_public", "default": "is_default", "archived": "is_archived"}  # box → API field
NUMBERS = ("storage_gb", "max_objects", "max_object_size_mb", "trial_days", *OPTIONAL[2:])
Text = Annotated[str, Field(max_length=40)]
TierInput = TypeVar("TierInput", TierCreateIn, TierUpdateIn)
PRICE_INVALID = "Price: enter an amount with at most two decimals, like 5.00."


class TierForm(BaseModel):
    """The tier form as typed (all text): turned into the API's TierCreateIn/TierUpdateIn by `_input`."""

    name: Annotated[str, Field(max_length=200)] = ""
    description: Annotated[str, Field(max_length=2000)] = ""
    storage_gb: Text = ""
    max_objects: Text = ""
    max_object_size_mb: Text = ""
    price: Text = "0.00"
    currency: Text = "USD"
    billing_period: Text = "monthly"
    trial_days: Text = "0"
    requests_per_second: Text = ""
    request_burst: Text = ""
    max_concurrent_uploads: Text = ""
    private: Text = ""
    default: Text = ""
    archived: Text = ""


def _plain(value: object) -> str:
    """A stored figure as the form shows it: 1.0 → "1", 0.5 → "0.5"."""
    text = str(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _prefill(tier: Tier) -> dict[str, str]:
    """The edit form of a tier: what its fields say now."""
    view = TierOut.model_validate(tier)
    optional = (view.requests_per_second, view.request_burst, view.max_concurrent_uploads)
    return {
        "name": tier.name,
        "description": tier.description,
        "storage_gb": _plain(view.storage_gb),
        "max_objects": str(tier.max_objects),
        "max_object_size_mb": _plain(view.max_object_size_mb) if view.max_object_size_mb else "",
        "price": f"{tier.price_cents // 100}.{tier.price_cents % 100:02d}",
        "currency": tier.currency,
        "billing_period": tier.billing_period,
        "trial_days": str(tier.trial_days),
        **dict(zip(OPTIONAL[2:], ("" if v is None else str(v) for v in optional), strict=True)),
        "private": "" if tier.is_public else "on",
        "default": "on" if tier.is_default else "",
        "archived": "on" if tier.is_archived else "",
    }


def _input(form: dict[str, str], model: type[TierInput]) -> TierInput:
    """The API's input model from the typed fields, or ValidationFailed with the first problem as a sentence."""
    values: dict[str, Any] = {}
    for key, raw in form.items():
        value = raw.strip()
        if key in NUMBERS:
            value = value.replace(",", "").replace("_", "")
        if key == "price":
            cents = cents_of(value) if value else None
            if cents is None:
                raise ValidationFailed(PRICE_INVALID)
            values["price_cents"] = cents
        elif key in CHECKBOXES:
            values[CHECKBOXES[key]] = (value == "") if key == "private" else (value != "")
        elif key == "currency":
            values[key] = value.upper()
        elif key in OPTIONAL and value == "":
            values[key] = "" if key == "description" else None
        else:
            values[key] = value
    if model is TierCreateIn:
        values.pop("is_archived", None)  # a new tier is never archived
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "value"
        raise ValidationFailed(f"{LABELS.get(field, field.capitalize())}: {err['msg']}.") from None


# --- tiers -------------------------------------------------------------------------------------------------


async def _tiers(
    request: Request,
    session: AsyncSession,
    *,
    code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    return render(
        request,
        "admin/tiers.html",
        status_code=code,
        money=money,
        tiers=await tiers.list_all(session),
        form=form or TierForm().model_dump(),
        error=error,
        done=DONE.get(request.query_params.get("done", "")) if error is None else None,
    )


@router.get("/tiers")
async def tier_list(request: Request, _: ConsoleAdmin, session: ReadSessionDep) -> Response:
    return await _tiers(request, session)


@router.post("/tiers")
async def create_tier(
    request: Request, admin: ConsoleAdmin, session: SessionDep, form: Annotated[TierForm, Form()]
) -> Response:
    typed = form.model_dump()
    try:
        body = _input(typed, TierCreateIn)
        tier = await tiers.create_tier(session, body, request_actor(request, admin))
    except PockityError as exc:  # a field the API refuses, a name already taken
        await session.rollback()
        return await _tiers(request, session, code=exc.status, error=exc.message, form=typed)
    return RedirectResponse(f"/admin/tiers/{tier.id}?done=created", status_code=303)


async def _edit(
    request: Request,
    session: AsyncSession,
    tier_id: str,
    *,
    code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    tier = await tiers.get_tier(session, tier_id)
    return render(
        request,
        "admin/tier.html",
        status_code=code,
        tier=tier,
        form=form or _prefill(tier),
        error=error,
        done=DONE.get(request.query_params.get("done", "")) if error is None else None,
    )


@router.get("/tiers/{tier_id}")
async def tier_page(request: Request, tier_id: str, _: ConsoleAdmin, session: ReadSessionDep) -> Response:
    return await _edit(request, session, tier_id)


@router.post("/tiers/{tier_id}")
async def update_tier(
    request: Request, tier_id: str, admin: ConsoleAdmin, session: SessionDep, form: Annotated[TierForm, Form()]
) -> Response:
    """Save what the admin changed: fields left as the form showed them (or not sent at all) are not passed on,
    so the page's rounding of a limit (GB to three decimals) never rewrites it. A box not ticked is not sent by a
    browser: for those, absent means unticked."""
    typed = form.model_dump()
    sent = form.model_fields_set | set(CHECKBOXES)
    try:
        shown = _prefill(await tiers.get_tier(session, tier_id))
        changed = {k: v for k, v in typed.items() if k in sent and v.strip() != shown[k]}
        if changed:
            body = _input(changed, TierUpdateIn)
            await tiers.update_tier(session, tier_id, body, request_actor(request, admin))
    except PockityError as exc:
        if exc.status == 404:
            raise
        await session.rollback()
        return await _edit(request, session, tier_id, code=exc.status, error=exc.message, form=typed)
    return RedirectResponse(f"/admin/tiers/{tier_id}?done=updated", status_code=303)


@router.get("/tiers/{tier_id}/archive")
async def confirm_archive(request: Request, tier_id: str, _: ConsoleAdmin, session: ReadSessionDep) -> Response:
    return render(request, "admin/archive_tier.html", tier=await tiers.get_tier(session, tier_id))


@router.post("/tiers/{tier_id}/archive")
async def archive_tier(request: Request, tier_id: str, admin: ConsoleAdmin, session: SessionDep) -> Response:
    await tiers.archive_tier(session, tier_id, request_actor(request, admin))
    return RedirectResponse("/admin/tiers?done=archived", status_code=303)


# --- crypto rates ------------------------------------------------------------------------------------------

# The assets whose price an admin sets (the others, USDC, have a fixed rate): crypto.set_rates's own rule.
SETTABLE = tuple(a for a, spec in crypto.ASSETS.items() if spec.fixed_usd_rate is None)
FIXED = {a: spec.fixed_usd_rate for a, spec in crypto.ASSETS.items() if spec.fixed_usd_rate is not None}


async def _rates(
    request: Request,
    session: AsyncSession,
    *,
    code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    current = (await crypto.current_rates(session)).items
    return render(
        request,
        "admin/crypto_rates.html",
        status_code=code,
        rates=current,
        now=utcnow(),
        fixed=FIXED,
        settable=SETTABLE,
        form=form or {"valid_for_minutes": "60"},
        error=error,
        done=DONE.get(request.query_params.get("done", "")) if error is None else None,
    )


@router.get("/crypto-rates")
async def rates_page(request: Request, _: ConsoleAdmin, session: ReadSessionDep) -> Response:
    return await _rates(request, session)


def _rates_input(form: dict[str, str]) -> RatesIn:
    given = {a: form[a].strip().replace(",", "") for a in SETTABLE if form.get(a, "").strip()}
    try:
        return RatesIn.model_validate({"rates": given, "valid_for_minutes": form["valid_for_minutes"].strip()})
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        if loc[0] == "rates" and len(loc) > 1:
            sentence = f"{loc[1]}: a price in USD greater than 0, such as 3150.25."
        elif loc[0] == "rates":
            sentence = "Enter the price of at least one asset."
        else:
            sentence = "Valid for: whole minutes, from 1 to 10080 (a week)."
        raise ValidationFailed(sentence) from None


@router.post("/crypto-rates")
async def set_rates(
    request: Request,
    admin: ConsoleAdmin,
    session: SessionDep,
    valid_for_minutes: Annotated[str, Form(max_length=10)] = "60",
) -> Response:
    """One field per settable asset, named after it (ETH, BTC); a blank one leaves that rate as it is."""
    fields = await request.form()  # already read (and cached) by the CSRF check
    form = {a: str(fields.get(a, "")) for a in SETTABLE} | {"valid_for_minutes": valid_for_minutes}
    try:
        body = _rates_input(form)
        await crypto.set_rates(session, body.rates.items(), body.valid_for_minutes, request_actor(request, admin))
    except PockityError as exc:
        await session.rollback()
        return await _rates(request, session, code=exc.status, error=exc.message, form=form)
    return RedirectResponse("/admin/crypto-rates?done=rates", status_code=303)
