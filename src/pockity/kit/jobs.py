"""The job kit: a `Job` is a name, an interval and a coroutine taking a `JobContext`; the `JobRunner` runs the
jobs that are due. Every process may run the runner; each run of a job is claimed through the database with
one conditional UPDATE, so with several processes every run still happens once.

Each domain's `tasks.py` declares its jobs (a `JOBS` list); the app assembles them (`pockity.app.all_jobs`).
The kit imports no domain: the context's storage and settings types are named for the type checker only."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, update

from pockity.db import Database, dialect_insert, unit_of_work
from pockity.kit.time import utcnow
from pockity.models import JobRun

if TYPE_CHECKING:
    from pockity.config import Settings
    from pockity.storage.backends import StorageBackend

log = logging.getLogger("pockity.jobs")


@dataclass(frozen=True)
class JobContext:
    db: Database
    storage: StorageBackend
    settings: Settings


@dataclass(frozen=True)
class Job:
    name: str
    every: timedelta
    run: Callable[[JobContext], Awaitable[Any]]
    lease: timedelta = timedelta(minutes=10)  # a crashed runner's claim lapses after this
    retry_after: timedelta = timedelta(seconds=30)


class JobRunner:
    def __init__(self, ctx: JobContext, jobs: list[Job], *, tick: float = 5.0) -> None:
        self.ctx, self.jobs, self.tick = ctx, jobs, tick
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    async def _claim(self, job: Job) -> bool:
        now = utcnow()
        async with unit_of_work(self.ctx.db) as session:
            await session.execute(
                dialect_insert(session)(JobRun)
                .values(name=job.name, next_run_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            result = await session.execute(
                update(JobRun)
                .where(
                    JobRun.name == job.name,
                    JobRun.next_run_at <= now,
                    or_(JobRun.locked_until.is_(None), JobRun.locked_until < now),
                )
                .values(locked_until=now + job.lease, locked_by=self.worker_id, last_started_at=now)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def _release(self, job: Job, error: str | None) -> None:
        now = utcnow()
        async with unit_of_work(self.ctx.db) as session:
            await session.execute(
                update(JobRun)
                .where(JobRun.name == job.name, JobRun.locked_by == self.worker_id)
                .values(
                    locked_until=None,
                    locked_by=None,
                    last_finished_at=now,
                    last_error=error,
                    next_run_at=now + (job.retry_after if error else job.every),
                )
                .execution_options(synchronize_session=False)
            )

    async def run_due(self) -> list[str]:
        """Run every job that is due and not claimed elsewhere; returns the names that ran here."""
        ran = []
        for job in self.jobs:
            try:
                if not await self._claim(job):
                    continue
            except Exception:
                log.exception("could not claim job %s", job.name)
                continue
            error = None
            try:
                await job.run(self.ctx)
            except Exception as exc:  # a failing job is logged and retried; it never stops the server
                log.exception("job %s failed; retrying in %s", job.name, job.retry_after)
                error = f"{type(exc).__name__}: {exc}"[:2000]
            try:
                await self._release(job, error)
            except Exception:
                log.exception("could not record the end of job %s", job.name)
            ran.append(job.name)
        return ran

    async def run_forever(self) -> None:
        while True:
            await self.run_due()
            await asyncio.sleep(self.tick)
