"""One account per address however it is spelled: NFKC (full-width and other compatibility forms), case, IDNA.

The documented rule (README): an address is stored and looked up as NFKC, lower-cased — the domain as IDNA
says, the local part too (Pockity has always lower-cased it; no two real mailboxes differ only by case).
"""

from __future__ import annotations

import unicodedata
import uuid

import httpx
import pytest

from pockity.users.schemas import normalise_email
from tests.fixtures.users import PASSWORD, TestUser

FULL_WIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})


def full_width(text: str) -> str:
    """ASCII → its full-width look-alike (U+FF01..U+FF5E; "a" is U+FF41, "@" U+FF20)."""
    return text.translate(FULL_WIDTH)


def look_alikes(email: str) -> list[str]:
    local, domain = email.split("@")
    return [
        full_width(email),
        full_width(local) + "@" + domain,
        local + "@" + full_width(domain),
        full_width(local.upper()) + "@" + domain.upper(),
        local.replace("i", "\u2170") + "@" + domain,  # small roman numeral one (NFKC: "i")
    ]


SAMPLES = [
    "alice@example.com",
    "ÅSA@EXAMPLE.COM",
    "josé@bücher.de",
    "ascii@xn--bcher-kva.de",
    full_width("bob@example.com"),
    "jose\u0301@example.com",
    "ﬁle@example.com",
    "用户@例子.广告",
    "not an email",
    "  spaced@Example.com  ",
]


def test_normalisation_is_idempotent_and_nfkc(subtests: pytest.Subtests) -> None:
    for value in SAMPLES:
        with subtests.test(value=value):
            once = normalise_email(value)
            assert normalise_email(once) == once
            assert once == once.strip() and once == once.lower()
            assert unicodedata.normalize("NFKC", once) == once


def test_look_alikes_normalise_to_the_original() -> None:
    assert normalise_email(full_width("alice@example.com")) == "alice@example.com"
    assert normalise_email("ascii@xn--bcher-kva.de") == normalise_email("ASCII@BÜCHER.DE") == "ascii@bücher.de"
    assert normalise_email("\u2170van@example.com") == "ivan@example.com"


async def register(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "n"})


async def test_a_full_width_look_alike_is_the_same_account(
    client: httpx.AsyncClient, admin: TestUser, subtests: pytest.Subtests
) -> None:
    email = f"alice-{uuid.uuid4().hex[:8]}@example.com"
    first = await register(client, email)
    assert first.status_code == 201, first.text
    for alike in look_alikes(email):
        with subtests.test(alike=alike):
            r = await register(client, alike)
            assert (r.status_code, r.json()["error"]["code"]) == (409, "email_taken"), r.text
            login = await client.post("/api/auth/login", json={"email": alike, "password": PASSWORD})
            assert login.status_code == 200 and login.json()["user"]["id"] == first.json()["id"], login.text
    # Admin search finds the account by any spelling too.
    local = email.split("@")[0]
    for query in (local, full_width(local), local.upper(), full_width(email)):
        with subtests.test(query=query):
            r = await client.get("/api/admin/users", params={"q": query}, headers=admin.headers)
            assert r.status_code == 200 and [u["id"] for u in r.json()["items"]] == [first.json()["id"]], r.text


async def test_a_full_width_registration_is_stored_in_ascii(client: httpx.AsyncClient) -> None:
    email = f"carol-{uuid.uuid4().hex[:8]}@example.com"
    r = await register(client, full_width(email))
    assert r.status_code == 201 and r.json()["email"] == email, r.text
    assert (await register(client, email)).status_code == 409
