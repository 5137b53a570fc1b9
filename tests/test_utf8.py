"""Text that is not valid UTF-8 is refused wherever it arrives; it is never replaced by U+FFFD.

Servers percent-decode paths and queries with replacement, so `a%ff%fe.txt` and `a%c0%af.txt` would both
become `a\ufffd\ufffd.txt` (or similar) and one upload would silently replace the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.storage import local_files, reservation_count, usage
from tests.fixtures.users import TestUser

# Each is invalid UTF-8: a lone byte, a BOM-like pair, an overlong '/', a surrogate, a truncated sequence.
BAD = ["%ff", "%ff%fe", "%c0%af", "%ed%a0%80", "%e2%82", "%80"]
FILES = "/api/storage/files"


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://pockity.test") as c:
        yield c


def code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


async def assert_nothing_stored(api: httpx.AsyncClient, app: FastAPI, user: TestUser) -> None:
    u = await usage(api, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)
    assert local_files(app, user.id) == {} and await reservation_count(app) == 0


async def test_names_in_the_path_must_be_utf8(
    api: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    for bad in BAD:
        with subtests.test(bad=bad):
            assert code(await api.put(f"{FILES}/a{bad}.txt", content=b"x", headers=user.headers)) == (
                422,
                "invalid_key",
            )
            for path in (f"{FILES}/a{bad}.txt", f"{FILES}/a{bad}.txt/content"):
                assert code(await api.get(path, headers=user.headers)) == (422, "invalid_key")
            assert code(await api.delete(f"{FILES}/a{bad}.txt", headers=user.headers)) == (422, "invalid_key")
            signed = await api.get(f"/api/storage/signed/users/{user.id}/a{bad}.txt?expires=1&signature=x")
            assert code(signed) == (422, "invalid_key")
    await assert_nothing_stored(api, app, user)


async def test_a_real_replacement_character_is_a_name_of_its_own(api: httpx.AsyncClient, user: TestUser) -> None:
    """U+FFFD typed on purpose is valid UTF-8 (EF BF BD): it is stored, and `%ff` does not reach it."""
    r = await api.put(f"{FILES}/a%EF%BF%BD.txt", content=b"mine", headers=user.headers)
    assert r.status_code == 201 and r.json()["key"] == "a\ufffd.txt", r.text
    assert code(await api.put(f"{FILES}/a%ff.txt", content=b"other", headers=user.headers)) == (422, "invalid_key")
    got = await api.get(f"{FILES}/a%EF%BF%BD.txt/content", headers=user.headers)
    assert got.status_code == 200 and got.content == b"mine"


async def test_names_in_the_query_must_be_utf8(
    api: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    form = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n--b--\r\n'
    for bad in BAD:
        with subtests.test(bad=bad):
            for query in (f"prefix=docs{bad}", f"cursor={bad}", f"prefix=a&cursor=b{bad}"):
                assert code(await api.get(f"{FILES}?{query}", headers=user.headers)) == (422, "invalid_key")
            r = await api.post(
                f"/api/storage/upload?key=a{bad}",
                content=form,
                headers={**user.headers, "Content-Type": "multipart/form-data; boundary=b"},
            )
            assert code(r) == (422, "invalid_key")
    await assert_nothing_stored(api, app, user)


def form(*, key: bytes | None = None, filename: bytes = b"f.txt") -> bytes:
    body = b""
    if key is not None:
        body += b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\n' + key + b"\r\n"
    body += b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n\r\nx\r\n--b--\r\n'
    return body


async def test_names_in_form_fields_must_be_utf8(
    api: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    headers = {**user.headers, "Content-Type": "multipart/form-data; boundary=b"}
    for raw in (b"a\xff\xfe.txt", b"a\xc0\xaf.txt", b"a\xed\xa0\x80", b"a\xe2\x82"):
        with subtests.test(raw=raw):
            r = await api.post("/api/storage/upload", content=form(key=raw), headers=headers)
            assert code(r) == (422, "invalid_key")
            r = await api.post("/api/storage/upload", content=form(filename=raw), headers=headers)
            assert code(r) == (422, "invalid_key")
    await assert_nothing_stored(api, app, user)
    # The filename only matters when it is the name: a key field wins over a bad filename.
    r = await api.post("/api/storage/upload", content=form(key=b"ok.txt", filename=b"\xff"), headers=headers)
    assert r.status_code == 201 and r.json()["key"] == "ok.txt", r.text


async def test_names_in_json_must_be_utf8(
    api: httpx.AsyncClient, app: FastAPI, user: TestUser, subtests: pytest.Subtests
) -> None:
    """JSON must be UTF-8 (RFC 8259): such a body is not JSON at all, and says so."""
    headers = {**user.headers, "Content-Type": "application/json"}
    for raw in (b"a\xff\xfe.txt", b"a\xc0\xaf.txt"):
        with subtests.test(raw=raw):
            r = await api.post("/api/storage/files/delete", content=b'{"keys": ["' + raw + b'"]}', headers=headers)
            assert code(r) == (400, "invalid_json")
            r = await api.post("/api/storage/uploads", content=b'{"key": "' + raw + b'", "size": 1}', headers=headers)
            assert code(r) == (400, "invalid_json")
    # An escaped lone surrogate is valid JSON but not a character; the name rules refuse it.
    r = await api.post("/api/storage/uploads", content=b'{"key": "a\\udcff", "size": 1}', headers=headers)
    assert r.status_code == 422, r.text
    await assert_nothing_stored(api, app, user)


async def test_other_urls_must_be_utf8(api: httpx.AsyncClient, admin: TestUser, subtests: pytest.Subtests) -> None:
    for path in ("/api/apikeys/%ff", "/api/admin/users?q=%ff", "/api/admin/users/%c0%af", "/api/tiers?x=%ed%a0%80"):
        with subtests.test(path=path):
            assert code(await api.get(path, headers=admin.headers)) == (400, "invalid_value")
    ok = await api.get("/api/admin/users?q=%C3%A9", headers=admin.headers)  # "é", valid
    assert ok.status_code == 200, ok.text
