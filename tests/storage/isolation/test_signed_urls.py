"""Tenant isolation: Signed URLs serve only their own object.

Part of the isolation pack (tests/storage/isolation/): alice attacks, bob's files must stay his."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import FastAPI

from tests.fixtures.users import TestUser
from tests.storage.isolation.helpers import (
    ALICE_BYTES,
    Bob,
    RawClient,
    assert_bob_untouched,
    error_code,
    signed_path,
    url,
)

# --- signed URLs --------------------------------------------------------------------------------------------------


async def test_signed_url_serves_only_its_own_object_without_credentials(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob
) -> None:
    await client.put(url("secret.txt"), content=ALICE_BYTES, headers=alice.headers)
    path = await signed_path(client, alice, "secret.txt")
    assert path.startswith(f"/api/storage/signed/users/{alice.id}/secret.txt?")
    r = await client.get(path)
    assert r.status_code == 200 and r.content == ALICE_BYTES
    swapped = path.replace(f"/users/{alice.id}/", f"/users/{bob.user.id}/")
    for p in (swapped, swapped.replace("/secret.txt", "/docs/plan.txt")):
        r = await client.get(p)
        assert r.status_code == 403 and error_code(r) == "invalid_signature", p
        assert b"bob's" not in r.content


async def test_tampered_or_expired_signatures_are_refused(
    client: httpx.AsyncClient, app: FastAPI, alice: TestUser, bob: Bob
) -> None:
    await client.put(url("a.txt"), content=ALICE_BYTES, headers=alice.headers)
    path = await signed_path(client, alice, "a.txt")
    base, query = path.split("?", 1)
    q = {k: v[0] for k, v in parse_qs(query).items()}
    sig = q["signature"]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    expired = app.state.storage.presign_get(f"users/{alice.id}/a.txt", -60, filename="a.txt")
    parts = urlsplit(expired)
    for variant in (
        f"{base}?expires={q['expires']}&signature={flipped}&filename=a.txt",
        f"{base}?expires={int(q['expires']) + 1}&signature={sig}&filename=a.txt",
        f"{base}?expires={q['expires']}&signature={sig}&filename=evil.html",
        f"{base}?expires={q['expires']}&signature={sig}",
        f"{base}?expires={q['expires']}&signature={sig.upper()}&filename=a.txt",
        f"{base}?expires={q['expires']}&filename=a.txt",
        f"{base}?signature={sig}&filename=a.txt",
        f"{base}",
        f"{parts.path}?{parts.query}",
    ):
        r = await client.get(variant)
        assert r.status_code == 403 and error_code(r) == "invalid_signature", variant
        assert ALICE_BYTES not in r.content
    assert (await client.get(path)).content == ALICE_BYTES


async def test_hand_built_signed_urls_outside_users_are_refused(
    client: httpx.AsyncClient, raw: RawClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    await client.put(url("a.txt"), content=ALICE_BYTES, headers=alice.headers)
    good = await signed_path(client, alice, "a.txt")
    query = good.split("?", 1)[1]
    expires = int(time.time()) + 3600
    for key in (
        f"meta/users/{bob.user.id}/secret.txt",
        f"../meta/users/{bob.user.id}/secret.txt",
        f"users/{alice.id}/../{bob.user.id}/secret.txt",
        f"users/{bob.user.id}/secret.txt",
        "../../secrets/jwt",
        f"users/{alice.id}/a.txt/../../{bob.user.id}/secret.txt",
    ):
        for q in (query, f"expires={expires}&signature={'0' * 64}"):
            r = await raw.request("GET", f"/api/storage/signed/{key}?{q}")
            assert r.status_code == 403 and error_code(r) == "invalid_signature", (key, r.text)
            assert b"bob's" not in r.content
    await assert_bob_untouched(client, storage, bob)
