"""Tenant isolation: Listing cursors never reveal another user's entries.

Part of the isolation pack (tests/storage/isolation/): alice attacks, bob's files must stay his."""

from __future__ import annotations

import base64

import httpx

from tests.fixtures.users import TestUser
from tests.storage.isolation.helpers import (
    ALICE_BYTES,
    FILES,
    Bob,
    cursor_of,
    error_code,
    refusals,
    url,
)

# --- listing cursors ----------------------------------------------------------------------------------------------


async def test_tampered_cursors_never_reveal_other_users_entries(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob
) -> None:
    for i in (1, 2, 3):
        await client.put(url(f"a/{i}.txt"), content=ALICE_BYTES, headers=alice.headers)
        await client.put(url(f"a/{i}b.txt"), content=b"bob's", headers=bob.user.headers)
    mine = ["a/1.txt", "a/2.txt", "a/3.txt"]
    physical_bob = f"users/{bob.user.id}/a/1b.txt"
    for prefix, value in (("a/", physical_bob), ("a/", "b/zzz"), ("a/", "a"), ("docs/", "a/1.txt")):
        r = await client.get(FILES, params={"prefix": prefix, "cursor": cursor_of(value)}, headers=alice.headers)
        assert r.status_code == 422 and error_code(r) == "invalid_cursor", (prefix, value, r.text)
    for value in (
        "@@@",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"\xed\xa0\x80").decode(),
    ):
        r = await client.get(FILES, params={"prefix": "a/", "cursor": value}, headers=alice.headers)
        assert r.status_code == 422 and error_code(r) == "invalid_cursor", value
    for value, expected in ((physical_bob, []), ("", mine), ("a/", mine), ("a/1b.txt", mine[1:]), ("\U0010ffff", [])):
        r = await client.get(FILES, params={"cursor": cursor_of(value)}, headers=alice.headers)
        assert r.status_code == 200, r.text
        assert [i["key"] for i in r.json()["items"]] == expected, value
    r = await client.get(FILES, params={"cursor": cursor_of("a/"), "delimiter": "/"}, headers=alice.headers)
    assert r.json() == {"items": [], "folders": [], "nextCursor": None}


async def test_cursor_with_control_characters_is_refused_or_harmless(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob
) -> None:
    await client.put(url("a/1.txt"), content=ALICE_BYTES, headers=alice.headers)
    for value in ("a/\x00", "\x00", "a/\x01"):
        r = await client.get(FILES, params={"cursor": cursor_of(value)}, headers=alice.headers)
        if r.status_code == 200:
            assert {i["key"] for i in r.json()["items"]} <= {"a/1.txt"}
        else:
            assert (r.status_code, error_code(r)) in refusals(value, "invalid_cursor"), r.text


async def test_paging_through_everything_yields_exactly_own_names(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob
) -> None:
    mine = sorted(["a.txt", "docs/plan.txt", f"users/{bob.user.id}/secret.txt", "z/z.txt"])
    for name in mine:
        await client.put(url(name), content=ALICE_BYTES, headers=alice.headers)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(FILES, params=params, headers=alice.headers)).json()
        seen += [i["key"] for i in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == mine
    etags = {i["key"]: i["etag"] for i in (await client.get(FILES, headers=alice.headers)).json()["items"]}
    assert etags["docs/plan.txt"] != bob.etags["docs/plan.txt"]
