"""Usage over time: sampling the counters into daily rows, alerts at 80% and 100% (as notifications), history.

Sampling reads `usage_counters` from a periodic job, never from the upload path. For each user it claims the
interval since the last sample with one conditional UPDATE of `usage_states` (so no interval is counted twice,
whatever the number of processes), then adds bytes x seconds to each UTC day the interval touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.errors import ValidationFailed
from pockity.kit.time import as_utc
from pockity.models import UsageState
from pockity.notifications import service as notifications
from pockity.usage import repository as repo
from pockity.usage.repository import CounterRow
from pockity.users.service import get_user

GIB = 1024**3
THRESHOLDS = (100, 80)  # percent of a limit; highest first
DEFAULT_DAYS = 30
MAX_DAYS = 366
ALERT_KIND = "usage_alert"
_MICROS = timedelta(microseconds=1)


# --- sampling ---------------------------------------------------------------------------------------------------


def alert_level(used: int, limit: int | None) -> int:
    """The highest threshold `used` has reached (0 if none); any usage against no limit is 100."""
    if used <= 0:
        return 0
    for percent in THRESHOLDS:
        if used * 100 >= (limit or 0) * percent:
            return percent
    return 0


def day_segments(start: datetime, end: datetime) -> list[tuple[date, int]]:
    """Split (start, end] at UTC midnights: (day, microseconds) per day, always ending with end's day."""
    start, end = as_utc(start), as_utc(end)
    segments: list[tuple[date, int]] = []
    cursor = start
    while cursor < end:
        midnight = datetime.combine(cursor.date() + timedelta(days=1), time(), tzinfo=UTC)
        stop = min(end, midnight)
        segments.append((cursor.date(), (stop - cursor) // _MICROS))
        cursor = stop
    if not segments or segments[-1][0] != end.date():
        segments.append((end.date(), 0))
    return segments


@dataclass
class SampleResult:
    users: int = 0  # users seen
    sampled: int = 0  # users whose interval this process claimed
    alerts: int = 0
    last_user_id: str | None = None

    def add(self, other: SampleResult) -> None:
        self.users += other.users
        self.sampled += other.sampled
        self.alerts += other.alerts
        self.last_user_id = other.last_user_id or self.last_user_id


async def sample_batch(session: AsyncSession, *, after: str | None, now: datetime, limit: int) -> SampleResult:
    """Sample up to `limit` users' counters (in id order after `after`) into today's usage rows."""
    rows = await repo.counters_page(session, after=after, limit=limit)
    states = await repo.states_for(session, [r.user_id for r in rows])
    result = SampleResult(users=len(rows), last_user_id=rows[-1].user_id if rows else None)
    for row in rows:
        alerts = await _sample_user(session, row, states.get(row.user_id), as_utc(now))
        if alerts is not None:
            result.sampled += 1
            result.alerts += alerts
    return result


async def _sample_user(session: AsyncSession, row: CounterRow, state: UsageState | None, now: datetime) -> int | None:
    """Integrate one user's interval and raise their alerts; None if another process has this interval."""
    levels = alert_level(row.bytes_used, row.byte_limit), alert_level(row.object_count, row.object_limit)
    if state is None:
        # The first sample only starts the clock: there is no interval before it to charge.
        if not await repo.start_state(session, row.user_id, now, *levels):
            return None
        previous, segments = (0, 0), [(now.date(), 0)]
    else:
        claimed = await repo.advance_state(
            session,
            row.user_id,
            since=state.last_sampled_at,
            now=now,
            bytes_level=levels[0],
            objects_level=levels[1],
        )
        if not claimed:
            return None
        previous, segments = (state.bytes_level, state.objects_level), day_segments(state.last_sampled_at, now)
    for i, (day, micros) in enumerate(segments):
        await repo.add_to_day(
            session,
            row.user_id,
            day,
            bytes_used=row.bytes_used,
            object_count=row.object_count,
            byte_seconds=row.bytes_used * micros // 1_000_000,
            # An earlier day keeps the counts of its own last sample; only now's day takes these.
            snapshot=i == len(segments) - 1,
        )
    alerts = 0
    for metric, old, new, used, limit in (
        ("bytes", previous[0], levels[0], row.bytes_used, row.byte_limit),
        ("objects", previous[1], levels[1], row.object_count, row.object_limit),
    ):
        # Only upward crossings alert; a fall below a level just re-arms it (the state keeps the lower level).
        if new > old:
            _alert(session, row.user_id, metric, new, used, limit)
            alerts += 1
    return alerts


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_TITLES = {
    ("bytes", 80): "You have used 80% of your storage",
    ("bytes", 100): "Your storage is full",
    ("objects", 80): "You have used 80% of your file allowance",
    ("objects", 100): "You have reached your file limit",
}


def _alert(session: AsyncSession, user_id: str, metric: str, level: int, used: int, limit: int | None) -> None:
    percent = round(100 * used / limit, 2) if limit else None
    if metric == "bytes":
        amount = f"{_size(used)} of {_size(limit or 0)}"
    else:
        amount = f"{used} of {limit or 0} files"
    body = f"{amount} are in use" + (f" ({percent}%)." if percent is not None else ".")
    if level == 100:
        body += " New uploads are refused until you delete files or change your plan."
    data = {"metric": metric, "threshold": level, "used": used, "limit": limit or 0, "percent": percent}
    notifications.notify(session, user_id, ALERT_KIND, _TITLES[metric, level], body, data)
    record(session, Actor.system("jobs"), "usage.alert", target_type="user", target_id=user_id, details=data)


# --- history ----------------------------------------------------------------------------------------------------


def gb_hours(byte_seconds: int) -> str:
    """Byte-seconds as GB-hours (GB = 1024³ bytes), six decimals, as a string so no float rounding leaks."""
    value = Decimal(byte_seconds) / Decimal(GIB * 3600)
    return str(value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class DayUsage:
    day: date
    bytes_used: int
    object_count: int
    byte_seconds: int
    users: int = 1

    @property
    def gb_hours(self) -> str:
        return gb_hours(self.byte_seconds)


@dataclass
class History:
    """A range of days as the history routes answer it (`from_` is the response's `from`)."""

    from_: date
    to: date
    as_of: datetime | None  # the last sample the figures include
    items: list[DayUsage] = field(default_factory=list)
    user_id: str | None = None


def resolve_range(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    """Inclusive days; defaults to the last 30 days up to today; at most 366 days."""
    end = end or today
    start = start or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ValidationFailed("'from' must not be after 'to'.", code="invalid_range", details={"from": str(start)})
    if (end - start).days + 1 > MAX_DAYS:
        raise ValidationFailed(f"The range may span at most {MAX_DAYS} days.", code="range_too_long")
    return start, end


async def history(session: AsyncSession, user_id: str, *, start: date | None, end: date | None, today: date) -> History:
    """The user's days in the range (days before the first sample are absent)."""
    start, end = resolve_range(start, end, today)
    rows = await repo.days(session, user_id, start, end)
    items = [DayUsage(r.day, r.bytes_used, r.object_count, r.byte_seconds) for r in rows]
    return History(start, end, await repo.last_sampled(session, user_id), items, user_id)


async def admin_history(
    session: AsyncSession, *, user_id: str | None, start: date | None, end: date | None, today: date
) -> History:
    """Admin: one user's history, or with no user the totals per day over all users."""
    if user_id is not None:
        await get_user(session, user_id)  # 404 for an unknown user
        return await history(session, user_id, start=start, end=end, today=today)
    start, end = resolve_range(start, end, today)
    items = [DayUsage(*row) for row in await repo.day_totals(session, start, end)]
    return History(start, end, await repo.last_sampled(session, None), items)
