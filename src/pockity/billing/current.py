"""The user's current subscription and the quota that follows it: `make_current` is the one place either changes.

Its own module because three others need it (tier changes in service.py, paying an invoice in invoices.py, the
life cycle in lifecycle.py) and none of them may import another for it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.billing import repository as repo
from pockity.kit.time import utcnow
from pockity.models import Subscription, SubscriptionStatus

LIVE = (SubscriptionStatus.ACTIVE.value, SubscriptionStatus.TRIALING.value)  # these set the quota
UNPAID = (SubscriptionStatus.PAST_DUE.value, SubscriptionStatus.PENDING_PAYMENT.value)


async def make_current(
    session: AsyncSession, user_id: str, new: Subscription, *, ended_status: SubscriptionStatus
) -> None:
    """Replace the user's current subscription with `new` and move the quota to its tier (no tier when `new`
    is not live). The users row carries the copy the upload path reads; billing is its only writer."""
    old = await repo.current_subscription(session, user_id, lock=True)
    if old is not None and old.id != new.id:
        old.is_current, old.status, old.ended_at = False, ended_status.value, utcnow()
        await session.flush()  # the partial unique index allows one current row per user
    new.is_current = True
    await session.flush()
    await repo.set_user_tier(session, user_id, new.tier_id if new.status in LIVE else None)


def snapshot(sub: Subscription | None) -> dict[str, object] | None:
    """What an audit event records of a subscription before and after a change."""
    if sub is None:
        return None
    return {"id": sub.id, "tierId": sub.tier_id, "status": sub.status, "scheduledTierId": sub.scheduled_tier_id}
