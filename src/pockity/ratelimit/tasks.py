"""Periodic job of the rate limiter: drop database windows that have ended (Redis keys expire by themselves)."""

from __future__ import annotations

import time
from datetime import timedelta

from pockity.kit.jobs import Job, JobContext
from pockity.ratelimit.limiter import MAX_WINDOW_SECONDS
from pockity.ratelimit.repository import delete_windows_before


async def drop_old_windows(ctx: JobContext) -> int:
    """Delete rate windows older than the longest window (any of them has ended)."""
    return await delete_windows_before(ctx.db.reader, int(time.time()) - 2 * MAX_WINDOW_SECONDS)


JOBS = [Job("ratelimit.drop_old_windows", timedelta(minutes=10), drop_old_windows)]
