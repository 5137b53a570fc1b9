"""Tenant isolation: names that try to leave the caller's space, or carry another user's prefix, by any
spelling on the wire.

Part of the isolation pack (tests/storage/isolation/): alice attacks, bob's files must stay his."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.users import TestUser
from tests.storage.isolation.helpers import (
    ALICE_BYTES,
    FILES,
    Bob,
    Disk,
    RawClient,
    assert_bob_untouched,
    error_code,
    on_disk,
    refusals,
    signed_path,
    upload_form,
    url,
)

# --- names that try to leave the caller's space -------------------------------------------------------------------

MUST_REFUSE = [
    "../x",
    "..",
    "a/../../x",
    "a/..",
    "./x",
    ".",
    "a/./b",
    "a//b",
    "a/",
    "/abs",
    "//abs",
    "..\\x",
    "a\\..\\..\\x",
    "x\x00y",
    "x\x01",
    "x\ty",
    "x\ny",
    "x\x1b[31m",
    "x\x7f",
    "../../../../../escaped.txt",
]
# Not traversal to a filesystem, so they may be stored, but only literally and inside the caller's space.
MAY_STORE = [
    "%2e%2e/x",
    "%2e%2e%2fx",
    "..%2Fx",
    "a%2F..%2F..%2Fx",
    "%252e%252e/x",
    "\uff0e\uff0e/x",  # fullwidth full stops
    "\u2025/x",  # two dot leader
    "\u2024\u2024/x",  # one dot leaders
    "..\uff0fx",  # fullwidth solidus
    "..\u2215x",  # division slash
    "\u202etxt.exe",  # right-to-left override
    "x\u2028y",  # line separator (not a control character)
    "\ufeff../x",  # byte order mark before the dots
]


@pytest.mark.parametrize("name", MUST_REFUSE)
async def test_traversal_names_are_refused_by_every_upload_route(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob, name: str
) -> None:
    disk = Disk(storage)
    attempts = [
        await client.put(url(name), content=ALICE_BYTES, headers=alice.headers),
        await upload_form(client, alice.headers, ALICE_BYTES, key=name),
        await upload_form(client, alice.headers, ALICE_BYTES, query_key=name),
    ]
    for r in attempts:
        assert (r.status_code, error_code(r)) in refusals(name), (name, r.status_code, r.text)
    assert disk.changed() == set()
    assert (await client.get(FILES, headers=alice.headers)).json()["items"] == []
    await assert_bob_untouched(client, storage, bob)


@pytest.mark.parametrize("name", MAY_STORE)
async def test_look_alike_names_are_stored_literally_in_own_space(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob, name: str
) -> None:
    disk = Disk(storage)
    r = await client.put(url(name), content=ALICE_BYTES, headers=alice.headers)
    if r.status_code == 422:
        assert error_code(r) == "invalid_key" and disk.changed() == set()
        return
    assert r.status_code == 201, r.text
    assert r.json()["key"] == name and r.json()["size"] == len(ALICE_BYTES)
    assert on_disk(storage, alice, name) == ALICE_BYTES
    disk.assert_confined(alice)
    listed = (await client.get(FILES, headers=alice.headers)).json()["items"]
    assert [i["key"] for i in listed] == [name]
    assert (await client.get(url(name) + "/content", headers=alice.headers)).content == ALICE_BYTES
    await assert_bob_untouched(client, storage, bob)


@pytest.mark.parametrize("filename", ["../x", "a/../../x", "..\\x", "/abs", "x\x01", ".."])
async def test_multipart_filename_cannot_traverse(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob, filename: str
) -> None:
    disk = Disk(storage)
    r = await upload_form(client, alice.headers, ALICE_BYTES, filename=filename)
    if r.status_code == 201:  # a parser may reduce a client path to its last segment
        assert "/" not in r.json()["key"] and "\\" not in r.json()["key"]
        assert on_disk(storage, alice, r.json()["key"]) == ALICE_BYTES
        disk.assert_confined(alice)
    else:
        assert r.status_code == 422 and error_code(r) == "invalid_key", r.text
        assert disk.changed() == set()
    await assert_bob_untouched(client, storage, bob)


async def test_form_key_field_wins_over_query_and_is_validated(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    r = await upload_form(client, alice.headers, ALICE_BYTES, query_key="ok.txt", key=f"../{bob.user.id}/secret.txt")
    assert r.status_code == 422 and error_code(r) == "invalid_key"
    r = await upload_form(client, alice.headers, ALICE_BYTES, query_key="../x", key="ok.txt")
    assert r.status_code == 201 and r.json()["key"] == "ok.txt"
    assert on_disk(storage, alice, "ok.txt") == ALICE_BYTES
    await assert_bob_untouched(client, storage, bob)


@pytest.mark.parametrize("suffix", ["\t", "\n", "\r", "\x1f", "\x85"])
async def test_form_key_with_control_characters_is_refused_not_trimmed_into_another_name(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, suffix: str
) -> None:
    await client.put(url("x"), content=ALICE_BYTES, headers=alice.headers)
    r = await upload_form(client, alice.headers, b"other", key="x" + suffix)
    assert r.status_code == 422 and error_code(r) == "invalid_key", r.text
    assert on_disk(storage, alice, "x") == ALICE_BYTES


async def test_trailing_newline_in_url_does_not_address_another_name(
    client: httpx.AsyncClient, storage: Path, alice: TestUser
) -> None:
    await client.put(url("x"), content=ALICE_BYTES, headers=alice.headers)
    for method, body in (("PUT", b"other"), ("GET", None), ("DELETE", None)):
        r = await client.request(method, f"{FILES}/x%0A", content=body, headers=alice.headers)
        assert (r.status_code, error_code(r)) in refusals("x\n"), (method, r.status_code, r.text)
    assert on_disk(storage, alice, "x") == ALICE_BYTES


async def test_batch_delete_refuses_names_no_url_can_carry(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    json_headers = {**alice.headers, "Content-Type": "application/json"}
    keys = ["x\x1fy", "x\u202ey/../../z", f"../{bob.user.id}/secret.txt", f"/users/{bob.user.id}/secret.txt"]
    r = await client.post(f"{FILES}/delete", json={"keys": keys}, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] == 0 and r.json()["failed"] == 4
    assert [x["error"]["code"] for x in r.json()["results"]] == ["invalid_key"] * 4
    r = await client.post(f"{FILES}/delete", json={"keys": ["x\x00y", "secret.txt"]}, headers=alice.headers)
    if r.status_code == 200:  # refused per name, or the whole body refused
        assert [x["error"]["code"] for x in r.json()["results"]] == ["invalid_key", "file_not_found"]
    else:
        assert (r.status_code, error_code(r)) in refusals("\x00"), r.text
    surrogate = '{"keys": ["\\ud800x", "secret.txt"]}'
    r = await client.post(f"{FILES}/delete", content=surrogate, headers=json_headers)
    assert r.status_code == 422 and error_code(r) == "validation_error"
    await assert_bob_untouched(client, storage, bob)


# --- what reaches the server when the client does not normalise ---------------------------------------------------

WIRE_SPELLINGS = [
    # (request target after /api/storage/files/, the name the route must see)
    ("../x", "../x"),
    ("a/../../x", "a/../../x"),
    ("./x", "./x"),
    ("a//b", "a//b"),
    ("/abs", "/abs"),
    ("%2e%2e/x", "../x"),
    ("%2e%2e%2fx", "../x"),
    ("..%2Fx", "../x"),
    ("a%2F..%2F..%2Fx", "a/../../x"),
    ("..%5Cx", "..\\x"),
    ("..\\x", "..\\x"),
    ("x%00y", "x\x00y"),
    ("x%0Ay", "x\ny"),
    ("..%2F..%2F..%2F..%2Fescaped.txt", "../../../../escaped.txt"),
]


@pytest.mark.parametrize(("target", "decoded"), WIRE_SPELLINGS)
async def test_raw_wire_traversal_is_refused_for_every_method(
    client: httpx.AsyncClient, raw: RawClient, storage: Path, alice: TestUser, bob: Bob, target: str, decoded: str
) -> None:
    disk = Disk(storage)
    path = f"{FILES}/{target}"
    calls = [
        await raw.request("PUT", path, content=ALICE_BYTES, headers=alice.headers),
        await raw.request("GET", path, headers=alice.headers),
        await raw.request("GET", path + "/content", headers=alice.headers),
        await raw.request("DELETE", path, headers=alice.headers),
    ]
    name_path = f"{FILES}/{decoded}"
    assert raw.seen == [
        (name_path, path.encode()),
        (name_path, path.encode()),
        (name_path + "/content", (path + "/content").encode()),
        (name_path, path.encode()),
    ]
    for r in calls:
        assert (r.status_code, error_code(r)) in refusals(decoded), (r.status_code, r.text)
    assert len({(r.status_code, r.text.replace("/content", "")) for r in calls[1:]}) == 1  # no method differs
    assert disk.changed() == set()
    await assert_bob_untouched(client, storage, bob)


async def test_raw_traversal_into_another_route_is_refused(
    client: httpx.AsyncClient, raw: RawClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    """Routing sees the literal path: dot segments stay inside the key, where validation refuses them."""
    cases = [
        (f"{FILES}/../../storage/files/{bob.user.id}/secret.txt", (422, "invalid_key")),
        (f"{FILES}/..%2F..%2Fsigned%2Fusers%2F{bob.user.id}%2Fsecret.txt/content", (422, "invalid_key")),
        (f"/api/storage/signed/users/{alice.id}/../{bob.user.id}/secret.txt", (403, "invalid_signature")),
    ]
    for path, expected in cases:
        r = await raw.request("GET", path, headers=alice.headers)
        assert (r.status_code, error_code(r)) == expected, path
    await assert_bob_untouched(client, storage, bob)


# --- names shaped like another user's prefix ----------------------------------------------------------------------


async def test_name_with_other_users_prefix_is_stored_under_own_prefix(
    client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    disk = Disk(storage)
    name = f"users/{bob.user.id}/secret.txt"
    r = await client.put(url(name), content=ALICE_BYTES, headers=alice.headers)
    assert r.status_code == 201 and r.json()["key"] == name
    assert on_disk(storage, alice, name) == ALICE_BYTES
    assert disk.changed() >= {f"{storage.relative_to(disk.root).as_posix()}/data/users/{alice.id}/{name}"}
    disk.assert_confined(alice)
    assert (await client.get(url(name) + "/content", headers=alice.headers)).content == ALICE_BYTES
    signed = await signed_path(client, alice, name)
    assert signed.startswith(f"/api/storage/signed/users/{alice.id}/users/{bob.user.id}/secret.txt?")
    assert (await client.get(signed)).content == ALICE_BYTES
    assert (await client.get(url("secret.txt") + "/content", headers=bob.user.headers)).content == b"bob's secret"
    await assert_bob_untouched(client, storage, bob)


async def test_listing_another_users_prefix_returns_only_own_entries(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob
) -> None:
    collision = f"users/{bob.user.id}/secret.txt"
    await client.put(url(collision), content=ALICE_BYTES, headers=alice.headers)
    r = await client.get(FILES, params={"prefix": f"users/{bob.user.id}/"}, headers=alice.headers)
    assert [(i["key"], i["size"]) for i in r.json()["items"]] == [(collision, len(ALICE_BYTES))]
    r = await client.get(FILES, params={"prefix": "", "delimiter": "/"}, headers=alice.headers)
    assert r.json()["items"] == [] and r.json()["folders"] == ["users/"]
    for prefix in (f"../{bob.user.id}/", "../", f"../../users/{bob.user.id}/", "..", "./", "%2e%2e/", "\uff0e\uff0e/"):
        r = await client.get(FILES, params={"prefix": prefix}, headers=alice.headers)
        assert r.status_code in (200, 422), (prefix, r.text)
        if r.status_code == 200:
            assert r.json()["items"] == [] and r.json()["folders"] == [], prefix
        else:
            assert error_code(r) == "invalid_key"
    for prefix in (f"/users/{bob.user.id}/", "..\\", f"users\\{bob.user.id}\\"):
        r = await client.get(FILES, params={"prefix": prefix}, headers=alice.headers)
        assert r.status_code == 422 and error_code(r) == "invalid_key", prefix


@pytest.mark.parametrize("prefix", ["\x00", "a\x00", "\x01", "x\ny"])
async def test_listing_prefix_with_control_characters_is_refused_or_empty(
    client: httpx.AsyncClient, alice: TestUser, bob: Bob, prefix: str
) -> None:
    await client.put(url("a.txt"), content=ALICE_BYTES, headers=alice.headers)
    r = await client.get(FILES, params={"prefix": prefix}, headers=alice.headers)
    if r.status_code == 200:
        assert r.json()["items"] == [] and r.json()["folders"] == []
    else:
        assert (r.status_code, error_code(r)) in refusals(prefix), r.text
