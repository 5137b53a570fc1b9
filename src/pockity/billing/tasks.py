"""Periodic billing jobs."""

from __future__ import annotations

from pockity.audit.service import Actor
from pockity.billing import repository as repo
from pockity.billing import service
from pockity.db import unit_of_work
from pockity.jobs import JobContext
from pockity.kit.time import utcnow

_BATCH = 200


async def apply_period_ends(ctx: JobContext) -> int:
    """Start scheduled downgrades and end cancelled subscriptions whose period is over."""
    async with ctx.db.sessions() as session:
        due = [s.id for s in await repo.due_period_changes(session, utcnow(), _BATCH)]
    applied = 0
    for sub_id in due:
        async with unit_of_work(ctx.db) as session:
            sub = await repo.get_subscription(session, sub_id)
            # Re-checked inside the unit of work: another process may have applied it already.
            if sub is None or not sub.is_current or sub.current_period_end is None or sub.current_period_end > utcnow():
                continue
            if sub.scheduled_tier_id is None and not sub.cancel_at_period_end:
                continue
            await service.apply_period_end(session, sub, Actor.system("jobs"))
            applied += 1
    return applied
