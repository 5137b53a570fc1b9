"""Keyset pagination: fetch one row more than the page to know whether another page follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)


def keyset_page(rows: Sequence[T], limit: int) -> tuple[Sequence[T], str | None]:
    """Split `limit + 1` fetched rows into the page and the next cursor (the page's last id), if any."""
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit and page else None)
