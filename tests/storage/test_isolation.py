"""Tenant isolation of the storage API: alice can never reach, change or learn about bob's files.

Every user's files live in one bucket under `users/{id}/`; these tests attack that boundary through
HTTP (names, prefixes, cursors, signed URLs, API keys) and then check the disk of the local backend:
whatever was accepted must sit under the caller's own `users/{id}/`, and bob's bytes must not change.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.users import TestUser, make_key, make_user

FILES = "/api/storage/files"
BOB_FILES = {"secret.txt": b"bob's secret", "docs/plan.txt": b"bob's plan"}
ALICE_BYTES = b"alice was here"


# --- fixtures and helpers -----------------------------------------------------------------------------------------


@dataclass
class Bob:
    user: TestUser
    etags: dict[str, str]


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> TestUser:
    return await make_user(client, "alice")


@pytest.fixture
async def bob(client: httpx.AsyncClient) -> Bob:
    user = await make_user(client, "bob")
    etags = {}
    for name, data in BOB_FILES.items():
        r = await client.put(url(name), content=data, headers=user.headers)
        assert r.status_code == 201, r.text
        etags[name] = r.json()["etag"]
    return Bob(user, etags)


@pytest.fixture
def storage(app: FastAPI) -> Path:
    return Path(app.state.settings.storage_dir)


@dataclass
class RawClient:
    """Sends a path byte-for-byte, as a real HTTP server would receive it (httpx would drop `..` segments)."""

    client: httpx.AsyncClient
    seen: list[tuple[str, bytes]]

    async def request(self, method: str, raw_path: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), "x-test-raw-path": raw_path}
        return await self.client.request(method, "/raw", headers=headers, **kwargs)


@pytest.fixture
async def raw(app: FastAPI) -> AsyncIterator[RawClient]:
    seen: list[tuple[str, bytes]] = []

    async def wire(scope: dict[str, Any], receive: Any, send: Any) -> None:
        override = dict(scope.get("headers", [])).get(b"x-test-raw-path")
        if scope["type"] == "http" and override is not None:
            # What uvicorn does with a request target: the path is percent-decoded, never normalised.
            scope = {**scope, "raw_path": override, "path": unquote(override.decode("ascii"))}
            seen.append((scope["path"], override))
        await app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wire), base_url="http://pockity.test") as c:
        yield RawClient(c, seen)


def url(name: str) -> str:
    """The URL of a name, fully percent-encoded (dots too: httpx would drop `..`) so the server sees `name`."""
    return f"{FILES}/{quote(name, safe='').replace('.', '%2E')}"


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def refusals(value: str, code: str = "invalid_key") -> set[tuple[int, str]]:
    """The answers that count as "refused" for a name, prefix or cursor containing `value`."""
    ok = {(422, code)}
    if "\n" in value:
        ok.add((404, "not_found"))  # Starlette's path convertor never matches across a newline
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        ok.add((400, "invalid_value"))  # control characters in the URL are refused before any route runs
    if "\x00" in value:
        ok.add((422, "validation_error"))  # NUL in a JSON body is refused by the input schemas
    return ok


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and directory (None) below root, by relative POSIX path."""
    out: dict[str, tuple[int, int] | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[Path(dirpath, d).relative_to(root).as_posix()] = None
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            out[Path(dirpath, f).relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


class Disk:
    """Watches the whole tree around the storage dir; written paths must lie in one user's space."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.root = storage.parent.parent  # two levels up: traversal that left the storage dir shows here
        self.before = snapshot(self.root)

    def changed(self) -> set[str]:
        after = snapshot(self.root)
        return {p for p, v in after.items() if p not in self.before or (v is not None and self.before[p] != v)}

    def assert_confined(self, owner: TestUser) -> None:
        storage = self.storage.relative_to(self.root).as_posix()
        allowed = tuple(f"{storage}/{tree}/users/{owner.id}" for tree in ("data", "meta"))
        parents = {f"{storage}/{tree}/users" for tree in ("data", "meta")}
        for path in self.changed():
            assert path in parents or path in allowed or path.startswith(tuple(a + "/" for a in allowed)), path
        for path, kind in snapshot(self.storage / "data").items():
            parts = path.split("/")
            assert parts[0] == "users" and (kind is None or len(parts) >= 3), f"data/{path} is outside users/<id>/"
        assert not [p for p, v in snapshot(self.storage / "tmp").items() if v is not None], "upload temp files left"


def on_disk(storage: Path, user: TestUser, name: str) -> bytes:
    return storage.joinpath("data", "users", user.id, *name.split("/")).read_bytes()


async def assert_bob_untouched(client: httpx.AsyncClient, storage: Path, bob: Bob) -> None:
    r = await client.get(FILES, headers=bob.user.headers)
    assert {i["key"]: i["etag"] for i in r.json()["items"]} == bob.etags
    for name, data in BOB_FILES.items():
        assert (await client.get(url(name) + "/content", headers=bob.user.headers)).content == data
        assert on_disk(storage, bob.user, name) == data


def multipart(data: bytes, *, filename: str | None = "f.bin", key: str | None = None) -> tuple[bytes, str]:
    """A hand-built form, so names reach the server unescaped (httpx percent-escapes control characters)."""
    boundary = "isolation-boundary"
    body = b""
    if key is not None:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\n{key}\r\n'.encode()
    disposition = 'form-data; name="file"' + (f'; filename="{filename}"' if filename is not None else "")
    body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def upload_form(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes, *, query_key: str | None = None, **form: Any
) -> httpx.Response:
    body, ctype = multipart(data, **form)
    params = {"key": query_key} if query_key is not None else None
    return await client.post(
        "/api/storage/upload", content=body, params=params, headers={**headers, "Content-Type": ctype}
    )


def cursor_of(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


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


# --- signed URLs --------------------------------------------------------------------------------------------------


async def signed_path(client: httpx.AsyncClient, user: TestUser, name: str) -> str:
    r = await client.get(url(name), headers=user.headers)
    assert r.status_code == 200, r.text
    parts = urlsplit(r.json()["url"])
    return f"{parts.path}?{parts.query}"


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
