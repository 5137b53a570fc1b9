"""Keyset pagination: fetch one row more than the page to know whether another page follows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)
Item = TypeVar("Item")


@dataclass(frozen=True)
class Page(Generic[Item]):
    """What a list route answers (`{"items", "nextCursor"}` through its response model): the rows, and the
    cursor of the next page (None: the last page, or a list that is never paged)."""

    items: Sequence[Item]
    next_cursor: str | None = None


def keyset_page(rows: Sequence[T], limit: int) -> tuple[Sequence[T], str | None]:
    """Split `limit + 1` fetched rows into the page and the next cursor (the page's last id), if any."""
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit and page else None)


def page_of(rows: Sequence[T], limit: int) -> Page[T]:
    """`keyset_page` as a Page."""
    items, next_cursor = keyset_page(rows, limit)
    return Page(items, next_cursor)
