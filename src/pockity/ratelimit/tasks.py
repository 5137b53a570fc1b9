"""Periodic job of the rate limiter: drop database buckets that are full again (Redis keys expire by themselves)."""

from __future__ import annotations

import time
from datetime import timedelta

from pockity.kit.jobs import Job, JobContext
from pockity.ratelimit.repository import delete_full_buckets

US = 1_000_000


async def drop_full_buckets(ctx: JobContext) -> int:
    """Delete buckets that have been full for a minute: they say nothing a missing row would not."""
    return await delete_full_buckets(ctx.db.reader, int((time.time() - 60) * US))


JOBS = [Job("ratelimit.drop_full_buckets", timedelta(minutes=10), drop_full_buckets)]
