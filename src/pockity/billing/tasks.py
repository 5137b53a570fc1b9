"""Periodic billing: renewal invoices ahead of the period end, period changes, renewals, trials ending and
grace periods running out."""

from __future__ import annotations

import logging
from datetime import timedelta

from pockity.audit.service import Actor
from pockity.billing import repository as repo
from pockity.billing.lifecycle import run_lifecycle
from pockity.db import unit_of_work
from pockity.kit.jobs import Job, JobContext
from pockity.kit.time import utcnow

log = logging.getLogger("pockity.billing")
_BATCH = 200


async def apply_period_ends(ctx: JobContext) -> int:
    """Run the life cycle of every current subscription with something due, each in its own unit of work
    under the subscription's row lock: two runners at once renew each subscription once."""
    grace = timedelta(days=ctx.settings.billing_grace_days)
    notice = timedelta(days=ctx.settings.billing_renewal_notice_days)
    done = 0
    seen: set[str] = set()
    while True:
        async with ctx.db.sessions() as session:
            due = [s for s in await repo.due_lifecycle(session, utcnow(), notice, _BATCH) if s not in seen]
        if not due:
            return done
        for sub_id in due:
            seen.add(sub_id)
            async with unit_of_work(ctx.db) as session:
                if await run_lifecycle(session, sub_id, Actor.system("jobs"), grace=grace, notice=notice):
                    done += 1


JOBS = [Job("billing.apply_period_ends", timedelta(minutes=5), apply_period_ends)]
