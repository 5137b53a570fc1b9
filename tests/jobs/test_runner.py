from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.kit.jobs import Job, JobContext, JobRunner
from pockity.kit.time import utcnow
from pockity.models import JobRun


def _ctx(app: FastAPI) -> JobContext:
    return JobContext(db=app.state.db, storage=app.state.storage, settings=app.state.settings)


async def test_each_run_happens_once_across_runners(app: FastAPI) -> None:
    calls: list[int] = []

    async def work(_: JobContext) -> None:
        calls.append(1)
        await asyncio.sleep(0.05)

    job = Job("test.once", timedelta(minutes=5), work)
    runners = [JobRunner(_ctx(app), [job]) for _ in range(4)]
    ran = await asyncio.gather(*(r.run_due() for r in runners))
    assert len(calls) == 1 and sum(len(names) for names in ran) == 1
    # Not due again until its interval has passed.
    assert await runners[0].run_due() == [] and len(calls) == 1
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(JobRun).where(JobRun.name == "test.once").values(next_run_at=utcnow()))
    assert await runners[1].run_due() == ["test.once"] and len(calls) == 2


async def test_a_failing_job_is_recorded_and_retried_without_stopping_others(app: FastAPI) -> None:
    done: list[str] = []

    async def broken(_: JobContext) -> None:
        raise RuntimeError("boom")

    async def fine(_: JobContext) -> None:
        done.append("fine")

    runner = JobRunner(
        _ctx(app),
        [
            Job("test.broken", timedelta(hours=1), broken, retry_after=timedelta(seconds=30)),
            Job("test.fine", timedelta(hours=1), fine),
        ],
    )
    assert await runner.run_due() == ["test.broken", "test.fine"]
    assert done == ["fine"]
    async with app.state.db.sessions() as s:
        row = (await s.scalars(select(JobRun).where(JobRun.name == "test.broken"))).one()
    assert row.last_error == "RuntimeError: boom" and row.locked_by is None
    assert timedelta(seconds=20) < row.next_run_at - utcnow() <= timedelta(seconds=30)


async def test_a_claim_left_by_a_dead_runner_lapses(app: FastAPI) -> None:
    calls: list[int] = []

    async def work(_: JobContext) -> None:
        calls.append(1)

    job = Job("test.lease", timedelta(minutes=5), work, lease=timedelta(minutes=10))
    async with app.state.db.sessions() as s, s.begin():
        s.add(
            JobRun(
                name="test.lease",
                next_run_at=utcnow(),
                locked_until=utcnow() + timedelta(minutes=9),
                locked_by="dead-host:1",
            )
        )
    runner = JobRunner(_ctx(app), [job])
    assert await runner.run_due() == [] and calls == []
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(
            update(JobRun).where(JobRun.name == "test.lease").values(locked_until=utcnow() - timedelta(seconds=1))
        )
    assert await runner.run_due() == ["test.lease"] and calls == [1]
