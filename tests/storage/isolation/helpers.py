"""Shared users, clients and checks for the isolation pack (see the package's test modules)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.users import TestUser, make_user

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


async def signed_path(client: httpx.AsyncClient, user: TestUser, name: str) -> str:
    r = await client.get(url(name), headers=user.headers)
    assert r.status_code == 200, r.text
    parts = urlsplit(r.json()["url"])
    return f"{parts.path}?{parts.query}"
