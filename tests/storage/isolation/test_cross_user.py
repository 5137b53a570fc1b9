"""Tenant isolation: Reading, deleting and overwriting bob's file by any spelling; usage; no existence oracle.

Part of the isolation pack (tests/storage/isolation/): alice attacks, bob's files must stay his."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.users import TestUser
from tests.storage.isolation.helpers import (
    ALICE_BYTES,
    BOB_FILES,
    FILES,
    Bob,
    Disk,
    assert_bob_untouched,
    error_code,
    on_disk,
    upload_form,
    url,
)

# --- reading, deleting and overwriting bob's file by any spelling -------------------------------------------------


def spellings_of_bobs_file(bob_id: str) -> list[str]:
    return [
        "secret.txt",
        f"users/{bob_id}/secret.txt",
        f"../{bob_id}/secret.txt",
        f"../../users/{bob_id}/secret.txt",
        f"/users/{bob_id}/secret.txt",
        f"./../{bob_id}/secret.txt",
        f"x/../../{bob_id}/secret.txt",
        f"..\\{bob_id}\\secret.txt",
        f"%2e%2e/{bob_id}/secret.txt",
        f"..%2F{bob_id}%2Fsecret.txt",
        f"\uff0e\uff0e/{bob_id}/secret.txt",
        f"{bob_id}/secret.txt",
        f"users//{bob_id}/secret.txt",
    ]


async def test_reads_of_bobs_file_by_any_spelling_never_return_bobs_bytes(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob
) -> None:
    for name in spellings_of_bobs_file(bob.user.id):
        meta = await client.get(url(name), headers=alice.headers)
        content = await client.get(url(name) + "/content", headers=alice.headers)
        for r in (meta, content):
            assert r.status_code in (404, 422), (name, r.status_code)
            assert error_code(r) in ("file_not_found", "invalid_key")
            assert b"bob's" not in r.content


async def test_deletes_of_bobs_file_by_any_spelling_delete_nothing(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    names = spellings_of_bobs_file(bob.user.id)
    for name in names:
        r = await client.delete(url(name), headers=alice.headers)
        assert r.status_code in (404, 422), (name, r.status_code)
        assert error_code(r) in ("file_not_found", "invalid_key")
    r = await client.post(f"{FILES}/delete", json={"keys": names}, headers=alice.headers)
    assert r.json()["deleted"] == 0 and r.json()["failed"] == len(names)
    assert {x["error"]["code"] for x in r.json()["results"]} <= {"file_not_found", "invalid_key"}
    await assert_bob_untouched(client, storage, bob)


async def test_overwrites_of_bobs_file_by_any_spelling_land_in_alices_space(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    disk = Disk(storage)
    stored = []
    for name in spellings_of_bobs_file(bob.user.id):
        for r in (
            await client.put(url(name), content=ALICE_BYTES, headers=alice.headers),
            await upload_form(client, alice.headers, ALICE_BYTES, key=name),
        ):
            assert r.status_code in (201, 422), (name, r.status_code, r.text)
            if r.status_code == 201:
                assert r.json()["key"] == name
                assert on_disk(storage, alice, name) == ALICE_BYTES
                stored.append(name)
            else:
                assert error_code(r) == "invalid_key"
    assert "secret.txt" in stored and f"users/{bob.user.id}/secret.txt" in stored
    disk.assert_confined(alice)
    listed = (await client.get(FILES, headers=alice.headers)).json()["items"]
    assert sorted(i["key"] for i in listed) == sorted(set(stored))
    # alice's own copies can now be read and deleted, and that still leaves bob alone
    assert (await client.get(url("secret.txt") + "/content", headers=alice.headers)).content == ALICE_BYTES
    r = await client.post(f"{FILES}/delete", json={"keys": sorted(set(stored))}, headers=alice.headers)
    assert r.json()["deleted"] == len(set(stored))
    await assert_bob_untouched(client, storage, bob)


async def test_upload_in_flight_locks_only_its_own_users_name(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"bob's "
        started.set()
        await release.wait()
        yield b"new secret"

    bobs = asyncio.create_task(client.put(url("secret.txt"), content=slow_body(), headers=bob.user.headers))
    await asyncio.wait_for(started.wait(), 10)
    busy = await client.put(url("secret.txt"), content=b"bob again", headers=bob.user.headers)
    assert busy.status_code == 409 and error_code(busy) == "object_busy"  # bob's name really is locked
    r = await client.put(url("secret.txt"), content=ALICE_BYTES, headers=alice.headers)
    assert r.status_code == 201, r.text
    assert (await client.delete(url("secret.txt"), headers=alice.headers)).json() == {
        "key": "secret.txt",
        "deleted": True,
    }
    release.set()
    assert (await asyncio.wait_for(bobs, 10)).status_code == 201
    assert on_disk(storage, bob.user, "secret.txt") == b"bob's new secret"
    assert (await client.get(FILES, headers=alice.headers)).json()["items"] == []


# --- usage --------------------------------------------------------------------------------------------------------


async def usage_of(client: httpx.AsyncClient, user: TestUser) -> tuple[int, int, int]:
    u = (await client.get("/api/storage/usage", headers=user.headers)).json()
    return u["bytesUsed"], u["objectCount"], u["bytesReserved"]


async def test_usage_counts_only_own_files(client: httpx.AsyncClient, alice: TestUser, bob: Bob) -> None:
    bob_bytes = sum(len(d) for d in BOB_FILES.values())
    assert await usage_of(client, alice) == (0, 0, 0)
    assert await usage_of(client, bob.user) == (bob_bytes, 2, 0)
    for name, size in (("a", 5), ("b/c", 7), (f"users/{bob.user.id}/secret.txt", 11)):
        await client.put(url(name), content=b"x" * size, headers=alice.headers)
    assert await usage_of(client, alice) == (23, 3, 0)
    assert await usage_of(client, bob.user) == (bob_bytes, 2, 0)
    await client.put(url("big.bin"), content=b"y" * 1000, headers=bob.user.headers)
    await client.put(url("secret.txt"), content=b"z" * 50, headers=bob.user.headers)
    await client.delete(url("docs/plan.txt"), headers=bob.user.headers)
    await client.put(url("a"), content=b"q", headers=bob.user.headers)
    assert await usage_of(client, alice) == (23, 3, 0)
    assert await usage_of(client, bob.user) == (1000 + 50 + 1, 3, 0)
    await client.delete(url("a"), headers=alice.headers)
    assert await usage_of(client, alice) == (18, 2, 0)
    assert await usage_of(client, bob.user) == (1051, 3, 0)


# --- no existence oracle ------------------------------------------------------------------------------------------


async def test_other_users_existing_and_never_existing_names_look_the_same(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob
) -> None:
    async def probes(name: str) -> list[tuple[int, Any]]:
        out = []
        for r in (
            await client.get(url(name), headers=alice.headers),
            await client.get(url(name) + "/content", headers=alice.headers),
            await client.get(url(name) + "/content", headers={**alice.headers, "Range": "bytes=0-0"}),
            await client.delete(url(name), headers=alice.headers),
            await client.post(f"{FILES}/delete", json={"keys": [name]}, headers=alice.headers),
        ):
            body = r.json()
            text = r.text.replace(name, "<name>")
            out.append((r.status_code, text if "error" in body else body["results"][0]["error"]))
        return out

    existing = await probes("docs/plan.txt")  # bob has it
    never = await probes("docs/never.txt")
    assert [s for s, _ in existing] == [404, 404, 404, 404, 200]
    assert existing == never
    await client.delete(url("docs/plan.txt"), headers=bob.user.headers)
    assert await probes("docs/plan.txt") == existing
