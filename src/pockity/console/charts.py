"""The dashboard's figures: usage bars and the 30-day chart, as numbers an SVG template draws."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pockity.usage.service import DayUsage, alert_level

CHART_WIDTH, CHART_HEIGHT = 600, 160


@dataclass(frozen=True)
class Meter:
    """One usage bar: how full, and its level (0, 80 or 100: the thresholds usage alerts use)."""

    label: str
    used: int
    limit: int
    percent: float
    level: int

    @property
    def css(self) -> str:
        return {100: "full", 80: "warn"}.get(self.level, "ok")


def meter(label: str, used: int, limit: int) -> Meter:
    percent = min(100.0, 100 * used / limit) if limit else (100.0 if used else 0.0)
    return Meter(label, used, limit, round(percent, 1), alert_level(used, limit))


@dataclass(frozen=True)
class Bar:
    day: date
    bytes_used: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int
    first: date
    last: date


def daily_chart(items: list[DayUsage], start: date, end: date) -> Chart:
    """One bar per day from `start` to `end`; days without a sample are empty."""
    by_day = {d.day: d.bytes_used for d in items}
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    peak = max((by_day.get(d, 0) for d in days), default=0)
    slot = CHART_WIDTH / max(len(days), 1)
    bars = []
    for i, day in enumerate(days):
        value = by_day.get(day, 0)
        height = (CHART_HEIGHT - 4) * value / peak if peak else 0
        height = max(height, 1.0) if value else 0.0
        bars.append(
            Bar(
                day,
                value,
                round(i * slot + 1, 2),
                round(CHART_HEIGHT - height, 2),
                round(slot - 2, 2),
                round(height, 2),
            )
        )
    return Chart(bars, peak, start, end)
