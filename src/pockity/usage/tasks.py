"""Periodic usage job: sample every user's counter into the daily history and raise usage alerts."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pockity.db import unit_of_work
from pockity.kit.jobs import Job, JobContext
from pockity.kit.time import utcnow
from pockity.usage import service

log = logging.getLogger("pockity.usage.tasks")
_BATCH = 200


async def sample_usage(ctx: JobContext, *, now: datetime | None = None) -> service.SampleResult:
    """One pass over all users, a unit of work per batch; `now` is for tests (default: the clock)."""
    total = service.SampleResult()
    after: str | None = None
    while True:
        # A failed batch rolls back whole and its users' state stays put: the next run integrates the longer
        # interval, so nothing is lost or counted twice.
        async with unit_of_work(ctx.db) as session:
            batch = await service.sample_batch(session, after=after, now=now or utcnow(), limit=_BATCH)
        total.add(batch)
        if batch.users < _BATCH:
            break
        after = batch.last_user_id
    if total.alerts:
        log.info("usage sampled for %d user(s); %d alert(s) raised", total.sampled, total.alerts)
    return total


JOBS = [Job("usage.sample", timedelta(minutes=5), sample_usage)]
