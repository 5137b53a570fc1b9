"""Periodic job of sign-in sessions: forget sessions that ended (expired or signed out) a day ago or more;
their tokens cannot work anyway, and the session list shows open ones only."""

from __future__ import annotations

from datetime import timedelta

from pockity.auth import service
from pockity.db import unit_of_work
from pockity.kit.jobs import Job, JobContext
from pockity.kit.time import utcnow

KEEP_ENDED = timedelta(days=1)


async def forget_ended_sessions(ctx: JobContext) -> int:
    async with unit_of_work(ctx.db) as session:
        return await service.forget_ended_sessions(session, utcnow() - KEEP_ENDED)


JOBS = [Job("auth.forget_ended_sessions", timedelta(hours=1), forget_ended_sessions)]
