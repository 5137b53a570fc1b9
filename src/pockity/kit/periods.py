"""Billing periods on the calendar (a month from Jan 31 is Feb 28/29, as card processors do)."""

from __future__ import annotations

import calendar
from datetime import datetime

MONTHS = {"monthly": 1, "yearly": 12}


def add_months(value: datetime, months: int) -> datetime:
    month0 = value.month - 1 + months
    year, month = value.year + month0 // 12, month0 % 12 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


def period_end(start: datetime, billing_period: str) -> datetime:
    return add_months(start, MONTHS[billing_period])


def monthly_cents(price_cents: int, billing_period: str) -> int:
    """A price per month, to tell upgrades from downgrades across periods (integer cents, rounded down)."""
    return price_cents // MONTHS[billing_period]
