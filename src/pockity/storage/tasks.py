"""Periodic storage jobs: expired reservations, stale uploads, reconciliation (`JOBS` declares them)."""

from __future__ import annotations

import logging
from datetime import timedelta

from pockity.audit.service import Actor, record
from pockity.db import unit_of_work
from pockity.kit.jobs import Job, JobContext
from pockity.kit.time import utcnow
from pockity.models import ReconciliationReport
from pockity.storage import direct, parts, reconcile
from pockity.storage import repository as repo
from pockity.storage.keys import physical_key
from pockity.storage.service import reconcile_name

log = logging.getLogger("pockity.storage.tasks")
_BATCH = 200


async def release_expired_reservations(ctx: JobContext) -> int:
    """Release reservations whose upload never got its 2xx (its process died, or the write's outcome was
    unknown), and make each such name follow S3: a `discard` reservation's key (a new name) is deleted first,
    since nothing under it was acknowledged; a replacement's row follows what the key holds."""
    released = 0
    async with ctx.db.sessions() as session:
        expired = await repo.expired_reservations(session, utcnow(), _BATCH)
    for candidate in expired:
        if candidate.kind == "parts":
            released += await parts.expire(ctx.db, ctx.storage, candidate)
            continue
        if candidate.kind in ("direct", "closing", "hold"):
            outcome = await direct.expire(ctx.db, ctx.storage, candidate)
            released += outcome is not None
            continue
        # One unit of work per name: the reservation row (the name's lock) goes only with the repair.
        async with unit_of_work(ctx.db) as session:
            held = await repo.take_expired_reservation(session, candidate.id, utcnow())
            if held is None:  # finished meanwhile, or another process took it
                continue
            assert held.name is not None  # only holds have none
            await repo.release(session, held)
            if held.discard:
                # If S3 is unreachable this raises: the unit of work rolls back and the next run tries again.
                await ctx.storage.delete(physical_key(held.user_id, held.name))
            change = await reconcile_name(session, ctx.storage, held.user_id, held.name)
            record(
                session,
                Actor.system("jobs"),
                "storage.reservation_expired",
                target_type="user",
                target_id=held.user_id,
                details={"name": held.name, "bytes": held.bytes, "discarded": held.discard, "repair": change},
            )
            released += 1
    if released:
        log.info("released %d expired reservation(s)", released)
    return released


async def abort_stale_uploads(ctx: JobContext) -> int:
    """Drop multipart uploads (or temp files) that a crash or an unreachable S3 left unfinished."""
    hours = ctx.settings.stale_upload_hours
    async with ctx.db.sessions() as session:
        tracked = await repo.tracked_backend_uploads(session)  # S3 API uploads in progress, direct uploads
    aborted = await ctx.storage.abort_stale_uploads(timedelta(hours=hours), prefix="users/", keep=tracked)
    if aborted:
        log.info("aborted %d unfinished upload(s) older than %s h", aborted, hours)
    return aborted


async def reconcile_job(ctx: JobContext) -> ReconciliationReport:
    """Every user, repairs applied. Raises on failure so the runner logs and retries it."""
    report = await reconcile.reconcile(ctx.db, ctx.storage, trigger="job", actor=Actor.system("jobs"))
    if report.status != reconcile.DONE:
        raise reconcile.ReconciliationFailed(f"reconciliation {report.id} failed: {report.error}")
    return report


JOBS = [
    Job(
        "storage.reconcile",
        timedelta(hours=24),
        reconcile_job,
        lease=timedelta(hours=6),
        retry_after=timedelta(minutes=15),  # not every 30 s while S3 is down
    ),
    Job("storage.release_expired_reservations", timedelta(minutes=1), release_expired_reservations),
    Job("storage.abort_stale_uploads", timedelta(hours=1), abort_stale_uploads),
]
