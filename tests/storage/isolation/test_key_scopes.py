"""Tenant isolation: API key scopes and prefixes.

Part of the isolation pack (tests/storage/isolation/): alice attacks, bob's files must stay his."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fixtures.users import TestUser, make_key
from tests.storage.isolation.helpers import (
    ALICE_BYTES,
    BOB_FILES,
    FILES,
    Bob,
    assert_bob_untouched,
    cursor_of,
    error_code,
    on_disk,
    upload_form,
    url,
)

# --- API keys -----------------------------------------------------------------------------------------------------


async def alice_with_reports(client: httpx.AsyncClient, alice: TestUser) -> None:
    for name in ("reports/q1.txt", "reports/deep/q2.txt", "other.txt", "reports-old.txt", "reportsx/a.txt"):
        r = await client.put(url(name), content=name.encode(), headers=alice.headers)
        assert r.status_code == 201


async def test_prefix_key_cannot_touch_names_outside_its_folder(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    await alice_with_reports(client, alice)
    key = (await make_key(client, alice, prefix="reports"))["headers"]
    for name in ("other.txt", "reports-old.txt", "reportsx/a.txt", "reports", f"users/{bob.user.id}/secret.txt"):
        calls = {
            "metadata": await client.get(url(name), headers=key),
            "content": await client.get(url(name) + "/content", headers=key),
            "put": await client.put(url(name), content=b"overwritten", headers=key),
            "form": await upload_form(client, key, b"overwritten", key=name),
            "delete": await client.delete(url(name), headers=key),
        }
        for what, r in calls.items():
            assert r.status_code == 403 and error_code(r) == "scope_denied", (name, what, r.text)
    r = await upload_form(client, key, b"overwritten", query_key="reports/ok.txt", key="other.txt")
    assert r.status_code == 403 and error_code(r) == "scope_denied"
    r = await upload_form(client, key, b"overwritten", filename="other.txt")
    assert r.status_code == 403 and error_code(r) == "scope_denied"
    r = await client.post(f"{FILES}/delete", json={"keys": ["other.txt", "reports-old.txt"]}, headers=key)
    assert [x["error"]["code"] for x in r.json()["results"]] == ["scope_denied", "scope_denied"]
    for name in ("reports/../other.txt", "reports/..", "reports//x"):
        r = await client.put(url(name), content=b"x", headers=key)
        assert r.status_code == 422 and error_code(r) == "invalid_key", name
    for name in ("other.txt", "reports-old.txt", "reportsx/a.txt"):
        assert on_disk(storage, alice, name) == name.encode()
    r = await client.get(url("reports/q1.txt") + "/content", headers=key)
    assert r.status_code == 200 and r.content == b"reports/q1.txt"
    await assert_bob_untouched(client, storage, bob)


async def test_prefix_key_listing_is_narrowed_to_its_folder(client: httpx.AsyncClient, alice: TestUser) -> None:
    await alice_with_reports(client, alice)
    key = (await make_key(client, alice, prefix="reports"))["headers"]
    inside = ["reports/deep/q2.txt", "reports/q1.txt"]
    for prefix in ("", "r", "rep", "reports"):
        r = await client.get(FILES, params={"prefix": prefix}, headers=key)
        assert r.status_code == 200, (prefix, r.text)
        assert [i["key"] for i in r.json()["items"]] == inside, prefix
    r = await client.get(FILES, params={"delimiter": "/"}, headers=key)
    assert [i["key"] for i in r.json()["items"]] == ["reports/q1.txt"] and r.json()["folders"] == ["reports/deep/"]
    paged = await client.get(FILES, params={"limit": 1}, headers=key)
    assert [i["key"] for i in paged.json()["items"]] == inside[:1]
    nxt = await client.get(FILES, params={"limit": 1, "cursor": paged.json()["nextCursor"]}, headers=key)
    assert [i["key"] for i in nxt.json()["items"]] == inside[1:]
    for prefix in ("other", "reports-", "reportsx/", "users/"):
        r = await client.get(FILES, params={"prefix": prefix}, headers=key)
        assert r.status_code == 403 and error_code(r) == "scope_denied", prefix
    for value in ("other.txt", "reports-old.txt", "a"):
        r = await client.get(FILES, params={"cursor": cursor_of(value)}, headers=key)
        assert r.status_code == 422 and error_code(r) == "invalid_cursor", value


async def test_read_only_key_cannot_write_or_delete(client: httpx.AsyncClient, storage: Path, alice: TestUser) -> None:
    await client.put(url("keep.txt"), content=ALICE_BYTES, headers=alice.headers)
    key = (await make_key(client, alice, scopes=["read", "list"]))["headers"]
    for r in (
        await client.put(url("keep.txt"), content=b"overwritten", headers=key),
        await client.put(url("new.txt"), content=b"new", headers=key),
        await upload_form(client, key, b"overwritten", key="keep.txt"),
        await client.delete(url("keep.txt"), headers=key),
    ):
        assert r.status_code == 403 and error_code(r) == "scope_denied", r.text
        assert r.json()["error"]["details"]["scope"] in ("write", "delete")
    r = await client.post(f"{FILES}/delete", json={"keys": ["keep.txt"]}, headers=key)
    assert r.json()["results"][0]["error"]["code"] == "scope_denied" and r.json()["deleted"] == 0
    assert (await client.get(url("keep.txt") + "/content", headers=key)).content == ALICE_BYTES
    assert on_disk(storage, alice, "keep.txt") == ALICE_BYTES
    assert [i["key"] for i in (await client.get(FILES, headers=key)).json()["items"]] == ["keep.txt"]


async def test_write_only_key_cannot_read_or_list(client: httpx.AsyncClient, alice: TestUser) -> None:
    await client.put(url("a.txt"), content=ALICE_BYTES, headers=alice.headers)
    key = (await make_key(client, alice, scopes=["write"]))["headers"]
    for r in (
        await client.get(url("a.txt"), headers=key),
        await client.get(url("a.txt") + "/content", headers=key),
        await client.get(FILES, headers=key),
        await client.delete(url("a.txt"), headers=key),
    ):
        assert r.status_code == 403 and error_code(r) == "scope_denied"
        assert ALICE_BYTES not in r.content


async def test_users_keys_only_see_their_own_users_files(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    await client.put(url("mine.txt"), content=ALICE_BYTES, headers=alice.headers)
    alice_key = (await make_key(client, alice))["headers"]
    bob_key = (await make_key(client, bob.user))["headers"]
    assert [i["key"] for i in (await client.get(FILES, headers=alice_key)).json()["items"]] == ["mine.txt"]
    assert sorted(i["key"] for i in (await client.get(FILES, headers=bob_key)).json()["items"]) == sorted(BOB_FILES)
    for name in BOB_FILES:
        for r in (
            await client.get(url(name), headers=alice_key),
            await client.get(url(name) + "/content", headers=alice_key),
            await client.delete(url(name), headers=alice_key),
        ):
            assert r.status_code == 404 and error_code(r) == "file_not_found"
    r = await client.get(url("mine.txt") + "/content", headers=bob_key)
    assert r.status_code == 404 and ALICE_BYTES not in r.content
    await assert_bob_untouched(client, storage, bob)
