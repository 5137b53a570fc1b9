"""Amounts of money as people read them. Pockity keeps integer cents everywhere; this is only for text."""

from __future__ import annotations


def amount(cents: int | None, currency: str) -> str:
    """Integer cents as an amount: 123456, "USD" → "1,234.56 USD" (no float on the way)."""
    value = cents or 0
    sign = "-" if value < 0 else ""
    whole, part = divmod(abs(value), 100)
    return f"{sign}{whole:,}.{part:02d} {currency}"
