"""The notifications API: newest first in pages, read once, private to their user, login only.

Notifications are written the way every domain writes them, with notifications.service.notify in a unit of
work; what a domain says (usage alerts, billing notices) is tested with that domain."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI

from pockity.db import unit_of_work
from pockity.notifications import service
from tests.fixtures.users import TestUser, make_key


async def _three_notifications(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> list[str]:
    """Three notifications for `user`, each in its own unit of work; their ids, newest first."""
    for n in range(3):
        async with unit_of_work(app.state.db) as session:
            service.notify(session, user.id, "test", f"Message {n}", f"Body {n}", {"n": n})
        # Ids order by their millisecond (then at random): the next one is made in a later millisecond.
        made = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 <= made:
            await asyncio.sleep(0)
    r = await client.get("/api/notifications", headers=user.headers)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["title"], i["body"], i["kind"], i["data"]) for i in items] == [
        (f"Message {n}", f"Body {n}", "test", {"n": n}) for n in (2, 1, 0)
    ]
    return [i["id"] for i in items]


async def test_notifications_page_newest_first(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    ids = await _three_notifications(client, app, user)
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/notifications", params=params, headers=user.headers)).json()
        seen += [n["id"] for n in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids


async def test_reading_a_notification(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    ids = await _three_notifications(client, app, user)
    r = await client.post(f"/api/notifications/{ids[1]}/read", headers=user.headers)
    assert r.status_code == 200, r.text
    read_at = r.json()["readAt"]
    assert r.json()["id"] == ids[1] and read_at is not None
    again = await client.post(f"/api/notifications/{ids[1]}/read", headers=user.headers)
    assert again.status_code == 200 and again.json()["readAt"] == read_at  # the first read time stays
    unread = await client.get("/api/notifications", params={"unread": "true"}, headers=user.headers)
    assert [n["id"] for n in unread.json()["items"]] == [ids[0], ids[2]]


async def test_notifications_are_private(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, other_user: TestUser
) -> None:
    ids = await _three_notifications(client, app, user)
    assert (await client.get("/api/notifications", headers=other_user.headers)).json()["items"] == []
    r = await client.post(f"/api/notifications/{ids[0]}/read", headers=other_user.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "notification_not_found"
    missing = await client.post("/api/notifications/01zzzzzzzzzzzzzzzzzzzzzzzz/read", headers=user.headers)
    assert missing.status_code == 404
    # Still unread for its owner.
    mine = (await client.get("/api/notifications", headers=user.headers)).json()["items"]
    assert len(mine) == 3 and all(n["readAt"] is None for n in mine)
    # Account notifications need a login, not a storage API key.
    key = await make_key(client, user)
    by_key = await client.get("/api/notifications", headers=key["headers"])
    assert by_key.status_code == 403 and by_key.json()["error"]["code"] == "jwt_required"
    assert (await client.get("/api/notifications")).status_code == 401


async def test_a_notification_is_sent_only_if_its_unit_of_work_commits(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    class Abandoned(Exception):
        pass

    try:
        async with unit_of_work(app.state.db) as session:
            service.notify(session, user.id, "test", "Never sent", "", {})
            raise Abandoned()
    except Abandoned:
        pass
    r = await client.get("/api/notifications", headers=user.headers)
    assert r.status_code == 200 and r.json()["items"] == []
