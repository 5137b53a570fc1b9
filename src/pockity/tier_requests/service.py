"""Tier requests: a user asks, an admin approves or rejects, billing applies the tier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import service as billing
from pockity.billing.service import current_subscription
from pockity.errors import Conflict, NotFound, ValidationFailed
from pockity.kit.pagination import keyset_page
from pockity.kit.time import utcnow
from pockity.models import RequestStatus, TierRequest
from pockity.notifications import service as notifications
from pockity.tier_requests import repository as repo
from pockity.tier_requests.schemas import ResolvedOut, TierRequestOut
from pockity.tiers import repository as tiers
from pockity.tiers.service import TierNotFound


class RequestNotFound(NotFound):
    code, message = "request_not_found", "Tier request not found."


class RequestPending(Conflict):
    code, message = "request_pending", "You already have a pending tier request; cancel it or wait for a decision."


class RequestResolved(Conflict):
    code, message = "request_resolved", "This request has already been resolved."


async def create_request(session: AsyncSession, user_id: str, tier_id: str, reason: str, actor: Actor) -> TierRequest:
    """Ask for a public, non-archived tier other than the current one (one pending request at a time)."""
    tier = await tiers.get(session, tier_id)
    if tier is None or not tier.is_public:
        raise TierNotFound()  # private tiers are not offered: indistinguishable from missing ones
    if tier.is_archived:
        raise ValidationFailed("This tier is no longer offered.", code="tier_archived")
    current = await current_subscription(session, user_id)
    if current is not None and current.tier_id == tier_id and current.scheduled_tier_id is None:
        raise Conflict("You are already on this tier.", code="already_on_tier")
    request = TierRequest(user_id=user_id, tier_id=tier_id, reason=reason, status=RequestStatus.PENDING.value)
    repo.add(session, request)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise RequestPending() from None
    record(
        session,
        actor,
        "tier_request.created",
        target_type="tier_request",
        target_id=request.id,
        details={"tierId": tier_id},
    )
    return request


async def own_requests(session: AsyncSession, user_id: str) -> Sequence[TierRequest]:
    """The user's requests, newest first."""
    return await repo.list_own_requests(session, user_id)


async def cancel_request(session: AsyncSession, user_id: str, request_id: str, actor: Actor) -> TierRequest:
    """Withdraw one's own pending request; another user's id is a 404."""
    request = await repo.get_own_request(session, user_id, request_id)
    if request is None:
        raise RequestNotFound()
    if not await repo.transition_request(
        session, request_id, RequestStatus.PENDING.value, status=RequestStatus.CANCELLED.value, resolved_at=utcnow()
    ):
        raise RequestResolved()
    record(session, actor, "tier_request.cancelled", target_type="tier_request", target_id=request_id)
    refreshed = await repo.get_request(session, request_id)
    assert refreshed is not None
    return refreshed


async def list_requests(
    session: AsyncSession, *, status: str | None, cursor: str | None, limit: int
) -> tuple[Sequence[TierRequest], str | None]:
    """Admin queue, oldest first; the cursor is the last id of the previous page."""
    rows = await repo.list_requests(session, status=status, after_id=cursor, limit=limit + 1)
    return keyset_page(rows, limit)


async def resolve(
    session: AsyncSession, request_id: str, *, approved: bool, note: str | None, admin_id: str, actor: Actor
) -> ResolvedOut:
    """Approve or reject once: of two admins resolving together exactly one wins, the other gets 409."""
    request = await repo.get_request(session, request_id)
    if request is None:
        raise RequestNotFound()
    status = RequestStatus.APPROVED if approved else RequestStatus.REJECTED
    if not await repo.transition_request(
        session,
        request_id,
        RequestStatus.PENDING.value,
        status=status.value,
        note=note,
        resolved_at=utcnow(),
        resolved_by=admin_id,
    ):
        raise RequestResolved(details={"status": request.status})
    change = None
    if approved:
        tier = await tiers.get(session, request.tier_id)
        assert tier is not None  # tiers are archived, never deleted
        change = await billing.change_tier(session, request.user_id, tier, actor)
        await repo.transition_request(session, request_id, status.value, subscription_id=change.subscription.id)
    resolved = await repo.get_request(session, request_id)
    assert resolved is not None
    requested = await tiers.get(session, request.tier_id)
    _notify_resolved(session, request.user_id, requested.name if requested else request.tier_id, approved, note, change)
    record(
        session,
        actor,
        f"tier_request.{status.value.lower()}",
        target_type="tier_request",
        target_id=request_id,
        details={
            "before": {"status": RequestStatus.PENDING.value},
            "after": {"status": status.value},
            "userId": request.user_id,
            "tierId": request.tier_id,
            "note": note,
            "effective": change.effective if change else None,
            "invoiceId": change.invoice.id if change and change.invoice else None,
        },
    )
    return ResolvedOut(
        **TierRequestOut.model_validate(resolved).model_dump(),
        effective=change.effective if change else None,
        invoice_id=change.invoice.id if change and change.invoice else None,
    )


def _notify_resolved(
    session: AsyncSession, user_id: str, tier_name: str, approved: bool, note: str | None, change: Any
) -> None:
    """Tell the user (a notification and an email) how their request ended."""
    said = f" The administrator's note: {note}" if note else ""
    if not approved:
        body = f"Your request for the {tier_name} plan was not approved.{said}"
        notifications.notify(session, user_id, "tier_request.rejected", "Your plan request was rejected", body, {})
        return
    invoice_id = change.invoice.id if change is not None and change.invoice is not None else None
    next_step = f" Pay invoice {invoice_id} to start it." if invoice_id else ""
    body = f"Your request for the {tier_name} plan was approved.{next_step}{said}"
    data: dict[str, object] = {"tierName": tier_name, "invoiceId": invoice_id}
    notifications.notify(session, user_id, "tier_request.approved", "Your plan request was approved", body, data)


async def count_pending(session: AsyncSession) -> int:
    """Admin: how many requests wait in the queue."""
    return await repo.count_with_status(session, RequestStatus.PENDING.value)
