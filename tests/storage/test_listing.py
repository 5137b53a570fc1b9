"""Listing pages: name order, folders with a delimiter, cursors that never lose or repeat an entry."""

from __future__ import annotations

import httpx

from tests.fixtures.users import TestUser

NAMES = ["a/1", "a/2", "b", "c/1", "d", "e/x/y", "é", "z-"]


async def _fill(client: httpx.AsyncClient, user: TestUser) -> None:
    for name in NAMES:
        assert (await client.put(f"/api/storage/files/{name}", content=b"1", headers=user.headers)).status_code == 201


async def _pages(client: httpx.AsyncClient, user: TestUser, **params: object) -> list[dict[str, object]]:
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/api/storage/files", params=query, headers=user.headers)).json()
        pages.append(body)
        cursor = body["nextCursor"]
        if not cursor:
            return pages


async def test_flat_paging_returns_every_name_once_in_byte_order(client: httpx.AsyncClient, user: TestUser) -> None:
    await _fill(client, user)
    pages = await _pages(client, user, limit=3)
    names = [i["key"] for p in pages for i in p["items"]]  # type: ignore[union-attr]
    assert names == sorted(NAMES, key=lambda n: n.encode())
    assert [len(p["items"]) for p in pages] == [3, 3, 2]  # type: ignore[arg-type]


async def test_delimiter_view_folds_folders_and_pages_through_them(client: httpx.AsyncClient, user: TestUser) -> None:
    await _fill(client, user)
    pages = await _pages(client, user, delimiter="/", limit=2)
    seen = [(p["folders"], [i["key"] for i in p["items"]]) for p in pages]  # type: ignore[union-attr]
    assert seen == [(["a/"], ["b"]), (["c/"], ["d"]), (["e/"], ["z-"]), ([], ["é"])]  # UTF-8 byte order
    inside = await _pages(client, user, delimiter="/", prefix="e/", limit=5)
    assert [(p["folders"], p["items"]) for p in inside] == [(["e/x/"], [])]
