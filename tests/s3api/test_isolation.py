"""The isolation pack through the S3 API: alice attacks with her own key pair (signed by botocore, the reference),
bob's files must stay his — never read, listed, overwritten or deleted — and the bucket's other prefixes
(`users/<other>/`, `staging/`) never reached. Every refusal is an S3 error document.

Paths go to S3App byte for byte (`Tenant.send`), as uvicorn hands them over: httpx would drop `..` segments.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from xml.etree.ElementTree import fromstring

import httpx
import pytest
from botocore.auth import HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi import FastAPI

from pockity.s3api.router import S3App
from tests.fixtures.storage import stored_rows
from tests.fixtures.users import TestUser, make_key
from tests.storage.isolation.helpers import (
    BOB_FILES,
    Bob,
    Disk,
    alice,
    assert_bob_untouched,
    bob,
    cursor_of,
    on_disk,
    storage,
)
from tests.storage.isolation.test_names import MAY_STORE, MUST_REFUSE

__all__ = ["alice", "bob", "storage"]  # the REST pack's fixtures, used here too

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
HOST = "s3.pockity.test"
ALICE_BYTES = b"alice was here"


class Tenant:
    """One key pair: requests signed by botocore for exactly the path given, sent with that raw path."""

    def __init__(self, http: httpx.AsyncClient, key: dict[str, Any]) -> None:
        self.http, self.key = http, key
        self.credentials = Credentials(key["accessKeyId"], key["secretKey"])

    def _request(self, method: str, target: str, host: str, body: bytes, headers: dict[str, str]) -> AWSRequest:
        return AWSRequest(method=method, url=f"http://{host}{target}", data=body, headers=headers)

    async def send(
        self,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        host: str = HOST,
        sent_host: str | None = None,
    ) -> httpx.Response:
        """Sign `target` (a raw path with its query) for `host`; send it with `sent_host` if given."""
        request = self._request(method, target, host, body, dict(headers or {}))
        S3SigV4Auth(self.credentials, "s3", "us-east-1").add_auth(request)
        return await self.wire(method, target, dict(request.headers.items()), body, sent_host or host)

    def presign(self, method: str, target: str, version: str = "v4", host: str = HOST, bucket: str = "") -> str:
        """A presigned path + query for `target` (SigV4 or SigV2 query authentication; SigV2 signs the path-style
        `/{bucket}{target}` of a virtual-hosted request, as botocore does)."""
        request = self._request(method, target, host, b"", {})
        request.auth_path = f"/{bucket}{target}" if bucket else None
        if version == "v4":
            S3SigV4QueryAuth(self.credentials, "s3", "us-east-1", expires=600).add_auth(request)
        else:
            HmacV1QueryAuth(self.credentials, expires=600).add_auth(request)
        parts = urlsplit(request.url)
        return f"{parts.path}?{parts.query}"

    async def wire(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b"", host: str = HOST
    ) -> httpx.Response:
        path, _, query = target.partition("?")
        # Header values as bytes: latin-1 on the wire, as a client may send them (httpx would insist on ASCII).
        sent = {k: v.encode("latin-1") for k, v in {**headers, "Host": host, "x-test-raw-path": path}.items()}
        return await self.http.request(method, "/raw" + ("?" + query if query else ""), headers=sent, content=body)


@pytest.fixture
async def s3wire(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    s3 = S3App(app)

    async def wire(scope: dict[str, Any], receive: Any, send: Any) -> None:
        override = dict(scope.get("headers", [])).get(b"x-test-raw-path")
        if scope["type"] == "http" and override is not None:
            # What uvicorn does with a request target: the path is percent-decoded, never normalised.
            scope = {**scope, "raw_path": override, "path": unquote(override.decode("ascii"))}
        await s3(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wire), base_url=f"http://{HOST}") as http:
        yield http


async def tenant(client: httpx.AsyncClient, http: httpx.AsyncClient, user: TestUser, **key: object) -> Tenant:
    return Tenant(http, await make_key(client, user, **key))


@pytest.fixture
async def mallory(client: httpx.AsyncClient, s3wire: httpx.AsyncClient, alice: TestUser) -> Tenant:
    return await tenant(client, s3wire, alice)


def s3_error(r: httpx.Response) -> str:
    """The code of an S3 error document (HEAD answers carry none: the status alone, as S3 does)."""
    if r.request.method == "HEAD":
        assert r.content == b""
        return {400: "InvalidArgument", 403: "AccessDenied", 404: "NoSuchKey"}.get(r.status_code, "?")
    root = fromstring(r.content)
    assert root.tag == "Error" and root.findtext("RequestId") == r.headers["x-amz-request-id"], r.text
    return root.findtext("Code") or ""


def keys_of(r: httpx.Response, element: str = "Key") -> list[str]:
    assert r.status_code == 200, r.text
    return [e.text or "" for e in fromstring(r.content).iter(f"{NS}{element}")]


def path_of(name: str) -> str:
    """A key fully percent-encoded (dots too), so the server decodes exactly `name`."""
    return "/pockity/" + quote(name, safe="").replace(".", "%2E")


async def alice_names(client: httpx.AsyncClient, user: TestUser) -> dict[str, str]:
    r = await client.get("/api/storage/files", headers=user.headers)
    return {i["key"]: i["etag"] for i in r.json()["items"]}


# --- bucket names and Host headers ------------------------------------------------------------------------------


async def test_no_bucket_name_reaches_another_space(
    mallory: Tenant, client: httpx.AsyncClient, storage: Path, bob: Bob, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state.settings, "s3_bucket", "pockity-internal")  # the real bucket behind the API
    bob_id = bob.user.id
    for bucket in ("users", "staging", "pockity-internal", "otherbucket", "POCKITY", "pockity.", "..", "%2e%2e"):
        for target in (
            f"/{bucket}/{bob_id}/secret.txt",
            f"/{bucket}/users/{bob_id}/secret.txt",
            f"/{bucket}/secret.txt",
        ):
            r = await mallory.send("GET", target)
            assert (r.status_code, s3_error(r)) == (404, "NoSuchBucket"), target
        r = await mallory.send("GET", f"/{bucket}?list-type=2&prefix={bob_id}%2F")
        assert (r.status_code, s3_error(r)) == (404, "NoSuchBucket"), bucket
        r = await mallory.send("PUT", f"/{bucket}/secret.txt", body=ALICE_BYTES)
        assert (r.status_code, s3_error(r)) == (404, "NoSuchBucket"), bucket
        r = await mallory.send("DELETE", f"/{bucket}/secret.txt")
        assert (r.status_code, s3_error(r)) == (404, "NoSuchBucket"), bucket
    buckets = fromstring((await mallory.send("GET", "/")).content)
    assert [e.text for e in buckets.iter(f"{NS}Name")] == ["pockity"]
    assert await stored_rows(app, bob.user.id) == {name: len(data) for name, data in BOB_FILES.items()}
    await assert_bob_untouched(client, storage, bob)


async def test_virtual_hosted_requests_stay_in_the_callers_bucket(
    mallory: Tenant,
    client: httpx.AsyncClient,
    storage: Path,
    alice: TestUser,
    bob: Bob,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.state.settings, "s3_api_domain", HOST)
    monkeypatch.setattr(app.state.settings, "s3_bucket", "pockity-internal")
    bob_id = bob.user.id
    disk = Disk(storage)
    for host in ("otherbucket", "users", "staging", "pockity-internal", "evil.pockity", "", "pockity.pockity"):
        for target in (f"/{bob_id}/secret.txt", "/secret.txt", f"/users/{bob_id}/secret.txt"):
            r = await mallory.send("GET", target, host=f"{host}.{HOST}")
            assert (r.status_code, s3_error(r)) == (404, "NoSuchBucket"), (host, target)
    mine = f"pockity.{HOST}"
    expected = [
        (f"/users/{bob_id}/secret.txt", 404, "NoSuchKey"),  # a name in alice's own space
        (f"/../users/{bob_id}/secret.txt", 400, "InvalidArgument"),
        (f"/%2e%2e/{bob_id}/secret.txt", 400, "InvalidArgument"),
        ("//secret.txt", 400, "InvalidArgument"),  # the key "/secret.txt", never "secret.txt"
        ("/pockity/secret.txt", 404, "NoSuchKey"),  # the key "pockity/secret.txt"
    ]
    for target, status, code in expected:
        r = await mallory.send("GET", target, host=mine)
        assert (r.status_code, s3_error(r)) == (status, code), target
    r = await mallory.send("PUT", "//x.txt", host=mine, body=ALICE_BYTES)
    assert (r.status_code, s3_error(r)) == (400, "InvalidArgument")
    # The Host is signed: a request re-addressed to another bucket (or another host) after signing fails.
    assert (await mallory.send("PUT", "/mine.txt", host=mine, body=ALICE_BYTES)).status_code == 200
    for sent in (f"otherbucket.{HOST}", f"users.{HOST}", HOST):
        r = await mallory.send("GET", "/mine.txt", host=mine, sent_host=sent)
        assert (r.status_code, s3_error(r)) == (403, "SignatureDoesNotMatch"), sent
    assert (await mallory.send("GET", "/pockity/mine.txt")).content == ALICE_BYTES  # path-style: the same file
    assert await alice_names(client, alice) == {"mine.txt": await _etag(client, alice, "mine.txt")}
    disk.assert_confined(alice)
    await assert_bob_untouched(client, storage, bob)


async def _etag(client: httpx.AsyncClient, user: TestUser, name: str) -> str:
    r = await client.get(f"/api/storage/files/{name}", headers=user.headers)
    return str(r.json()["etag"])


# --- key spellings ----------------------------------------------------------------------------------------------


def wire_spellings(bob_id: str) -> list[str]:
    """Request targets (raw, as sent) that try to leave alice's space or name bob's files."""
    return [
        f"/pockity/../users/{bob_id}/secret.txt",
        f"/pockity/a/../../users/{bob_id}/secret.txt",
        f"/pockity/./{bob_id}/secret.txt",
        f"/pockity/%2e%2e/%2e%2e/users/{bob_id}/secret.txt",
        f"/pockity/%2E%2E%2F%2E%2E%2Fusers%2F{bob_id}%2Fsecret.txt",
        f"/pockity/..%2F{bob_id}%2Fsecret.txt",
        f"/pockity/%2Fusers/{bob_id}/secret.txt",
        "/pockity//secret.txt",
        f"/pockity/..%5C{bob_id}%5Csecret.txt",
        f"/pockity/..\\{bob_id}\\secret.txt",
        "/pockity/secret.txt%00",
        "/pockity/secret%00.txt",
        "/pockity/secret.txt%0A",
        "/pockity/secret.txt%7F",
        "/pockity/%1B[31msecret.txt",
        "/pockity/%ff%fe",  # not UTF-8
        "/pockity/%ED%A0%80",  # an encoded surrogate
        "/pockity/%E2%80%AEtxt.exe%2F..",  # right-to-left override
    ]


async def test_key_spellings_that_leave_the_space_are_refused_by_every_method(
    mallory: Tenant, client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    disk = Disk(storage)
    for target in wire_spellings(bob.user.id):
        for method in ("GET", "HEAD", "PUT", "DELETE"):
            r = await mallory.send(method, target, body=ALICE_BYTES if method == "PUT" else b"")
            assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), (method, target, r.text)
        r = await mallory.send("PUT", "/pockity/copy.txt", headers={"x-amz-copy-source": target})
        assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), ("copy", target, r.text)
    for name in MUST_REFUSE:  # the REST pack's names, percent-encoded so the key is exactly the name
        r = await mallory.send("PUT", path_of(name), body=ALICE_BYTES)
        assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), name
    assert disk.changed() == set()
    assert await alice_names(client, alice) == {}
    await assert_bob_untouched(client, storage, bob)


async def test_look_alike_and_other_users_names_are_stored_literally_in_own_space(
    mallory: Tenant, client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    disk = Disk(storage)
    names = [
        *MAY_STORE,
        "secret.txt",
        f"users/{bob.user.id}/secret.txt",
        f"staging/{bob.user.id}/upload",
        f"{bob.user.id}/docs/plan.txt",
        "%252e%252e/%252e%252e/secret.txt",  # double encoding arrives decoded once: '%252e' stays text
    ]
    stored = {}
    for name in names:
        before = await mallory.send("GET", path_of(name))  # nothing of bob's shows
        r = await mallory.send("PUT", path_of(name), body=ALICE_BYTES)
        if r.status_code == 400:
            assert s3_error(r) == s3_error(before) == "InvalidArgument", name
            continue
        assert (before.status_code, s3_error(before)) == (404, "NoSuchKey"), name
        assert r.status_code == 200, (name, r.text)
        stored[name] = r.headers["etag"].strip('"')
        assert on_disk(storage, alice, name) == ALICE_BYTES
        got = await mallory.send("GET", path_of(name))
        assert (got.status_code, got.content) == (200, ALICE_BYTES), name
    assert f"users/{bob.user.id}/secret.txt" in stored and "secret.txt" in stored
    assert await alice_names(client, alice) == stored
    listed = await mallory.send("GET", "/pockity?list-type=2")
    assert sorted(keys_of(listed)) == sorted(stored)
    # Names are exact, as in S3: a differently normalised spelling is another (missing) name, never a merge.
    nfc = "caf\u00e9.txt"
    assert (await mallory.send("PUT", path_of(nfc), body=b"nfc")).status_code == 200
    nfd = unicodedata.normalize("NFD", nfc)
    assert (await mallory.send("GET", path_of(nfd))).status_code == 404
    assert (await mallory.send("GET", path_of(nfc))).content == b"nfc"
    disk.assert_confined(alice)
    await assert_bob_untouched(client, storage, bob)


# --- copy sources -------------------------------------------------------------------------------------------------


async def test_copy_sources_never_name_another_space(
    mallory: Tenant,
    client: httpx.AsyncClient,
    storage: Path,
    alice: TestUser,
    bob: Bob,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.state.settings, "s3_bucket", "pockity-internal")
    bob_id = bob.user.id
    assert (await mallory.send("PUT", "/pockity/mine.txt", body=ALICE_BYTES)).status_code == 200
    disk = Disk(storage)
    expected = [
        ("pockity/secret.txt", 404, "NoSuchKey"),  # bob's name: alice has no such file
        ("/pockity/docs/plan.txt", 404, "NoSuchKey"),
        (f"pockity/users/{bob_id}/secret.txt", 404, "NoSuchKey"),
        (f"pockity/{bob_id}/secret.txt", 404, "NoSuchKey"),
        (f"pockity/%252e%252e/{bob_id}/secret.txt", 404, "NoSuchKey"),
        (f"pockity/../{bob_id}/secret.txt", 400, "InvalidArgument"),
        (f"/pockity/%2e%2e/%2e%2e/users/{bob_id}/secret.txt", 400, "InvalidArgument"),
        (f"pockity%2F..%2F..%2Fusers%2F{bob_id}%2Fsecret.txt", 400, "InvalidArgument"),
        ("pockity//secret.txt", 400, "InvalidArgument"),
        ("pockity/secret.txt%00", 400, "InvalidArgument"),
        ("pockity/mine.txt?versionId=3HL4kqtJlcpXroDTDmJ", 400, "InvalidArgument"),
        ("pockity", 400, "InvalidArgument"),
        ("pockity/", 400, "InvalidArgument"),
        # Any other bucket name: the tenant has no such bucket (what S3 answers for a missing source bucket).
        (f"users/{bob_id}/secret.txt", 404, "NoSuchBucket"),
        (f"staging/{bob_id}/x", 404, "NoSuchBucket"),
        (f"pockity-internal/users/{bob_id}/secret.txt", 404, "NoSuchBucket"),
        ("otherbucket/secret.txt", 404, "NoSuchBucket"),
        ("../pockity/secret.txt", 404, "NoSuchBucket"),
        (f"/{quote('pockity/../users/' + bob_id + '/secret.txt', safe='')}", 400, "InvalidArgument"),
    ]
    for source, status, code in expected:
        r = await mallory.send("PUT", "/pockity/copied.txt", headers={"x-amz-copy-source": source})
        assert (r.status_code, s3_error(r)) == (status, code), (source, r.text)
    assert disk.changed() == set()
    assert list(await alice_names(client, alice)) == ["mine.txt"]
    await assert_bob_untouched(client, storage, bob)


# --- listings -----------------------------------------------------------------------------------------------------

# (the listing's query, the parameter naming where it starts)
LISTINGS = [("list-type=2", "start-after"), ("list-type=1", "marker"), ("versions", "key-marker")]


async def test_listing_parameters_never_reveal_another_space(
    mallory: Tenant, client: httpx.AsyncClient, storage: Path, bob: Bob
) -> None:
    bob_id = bob.user.id
    for name in ("a/1.txt", "mine.txt"):
        assert (await mallory.send("PUT", path_of(name), body=ALICE_BYTES)).status_code == 200
    everything = ["a/1.txt", "mine.txt"]
    attempts = {
        "prefix": [f"users/{bob_id}/", f"{bob_id}/", "../", f"../{bob_id}/", "%2e%2e/", "docs/", "secret"],
        "after": ["", "a", f"users/{bob_id}/", "../", "\U0010ffff"],
    }
    for listing, marker in LISTINGS:
        for param, values in attempts.items():
            for value in values:
                target = f"/pockity?{listing}&{marker if param == 'after' else param}={quote(value, safe='')}"
                keys = keys_of(await mallory.send("GET", target))
                assert set(keys) <= set(everything), (target, keys)
                if param == "prefix":
                    assert keys == [], target
                elif value in ("", "a", "../"):
                    assert keys == everything, target
    # Forged continuation tokens: either refused, or a position among alice's own names.
    tokens = {
        cursor_of(f"users/{bob_id}/secret.txt"): [],
        cursor_of("a"): everything,
        cursor_of("a/1.txt"): ["mine.txt"],
        cursor_of("secret.txt"): [],
        "@@@": everything,  # base64 of nothing: the start of alice's own listing
    }
    for token, expected in tokens.items():
        r = await mallory.send("GET", f"/pockity?list-type=2&continuation-token={quote(token, safe='')}")
        assert keys_of(r) == expected, token
    for token in (
        cursor_of("../x"),
        cursor_of("a\x00"),
        cursor_of("/abs"),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"\xed\xa0\x80").decode(),
        "bad base64!",
    ):
        r = await mallory.send("GET", f"/pockity?list-type=2&continuation-token={quote(token, safe='')}")
        assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), token
    r = await mallory.send("GET", f"/pockity?list-type=2&prefix=a%2F&continuation-token={cursor_of('mine.txt')}")
    assert (r.status_code, s3_error(r)) == (400, "InvalidArgument")  # a token of another listing
    for query in ("prefix=%2Fusers", "prefix=..%5C"):  # no name starts so: nothing listed, as S3 answers
        assert keys_of(await mallory.send("GET", f"/pockity?list-type=2&{query}")) == [], query
    for query in (
        "max-keys=-1",
        "max-keys=%C2%B2",
        "encoding-type=base64",
    ):
        r = await mallory.send("GET", f"/pockity?list-type=2&{query}")
        assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), query
    await assert_bob_untouched(client, storage, bob)


@pytest.mark.parametrize("value", ["%00", "a%00", "%01", "x%0Ay"])
async def test_listing_values_with_control_characters_are_refused_or_empty(
    mallory: Tenant, client: httpx.AsyncClient, storage: Path, bob: Bob, value: str
) -> None:
    assert (await mallory.send("PUT", "/pockity/a.txt", body=ALICE_BYTES)).status_code == 200
    for listing, marker in LISTINGS:
        for param in ("prefix", marker):
            r = await mallory.send("GET", f"/pockity?{listing}&{param}={value}")
            if r.status_code == 200:
                assert set(keys_of(r)) <= {"a.txt"}, (listing, param)
            else:
                assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), (listing, param, r.text)
    await assert_bob_untouched(client, storage, bob)


# --- DeleteObjects ------------------------------------------------------------------------------------------------


def _delete_body(keys: list[str]) -> bytes:
    from xml.sax.saxutils import escape

    objects = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys)
    return f"<Delete>{objects}</Delete>".encode()


async def test_delete_objects_with_keys_pointing_elsewhere_deletes_nothing_of_bobs(
    mallory: Tenant, client: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    bob_id = bob.user.id
    assert (await mallory.send("PUT", "/pockity/mine.txt", body=ALICE_BYTES)).status_code == 200
    refused = [
        f"../{bob_id}/secret.txt",
        f"../../users/{bob_id}/secret.txt",
        f"/users/{bob_id}/secret.txt",
        "/secret.txt",
        f"x/../../{bob_id}/secret.txt",
        f"..\\{bob_id}\\secret.txt",
        "secret.txt\x09",
        "a//secret.txt",
    ]
    missing = ["secret.txt", "docs/plan.txt", f"users/{bob_id}/secret.txt", f"%2e%2e/{bob_id}/secret.txt"]
    r = await mallory.send("POST", "/pockity?delete", body=_delete_body([*refused, *missing]))
    assert r.status_code == 200, r.text
    root = fromstring(r.content)
    errors = {e.findtext(f"{NS}Key"): e.findtext(f"{NS}Code") for e in root.iter(f"{NS}Error")}
    assert errors == {key: "InvalidArgument" for key in refused}
    assert sorted(e.text or "" for e in root.iter(f"{NS}Key") if e.text not in errors) == sorted(missing)
    for body in (
        b"<Delete><Object><Key>secret.txt&#0;</Key></Object></Delete>",
        b'<!DOCTYPE d [<!ENTITY e "secret.txt">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    ):
        r = await mallory.send("POST", "/pockity?delete", body=body)
        assert (r.status_code, s3_error(r)) == (400, "MalformedXML")
    assert list(await alice_names(client, alice)) == ["mine.txt"]
    await assert_bob_untouched(client, storage, bob)


# --- presigned URLs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v4", "v2"])
async def test_presigned_urls_replayed_with_another_path_are_refused(
    mallory: Tenant,
    client: httpx.AsyncClient,
    storage: Path,
    alice: TestUser,
    bob: Bob,
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    version: str,
) -> None:
    bob_id = bob.user.id
    assert (await mallory.send("PUT", "/pockity/mine.txt", body=ALICE_BYTES)).status_code == 200
    url = mallory.presign("GET", "/pockity/mine.txt", version)
    ok = await mallory.wire("GET", url, {})
    assert (ok.status_code, ok.content) == (200, ALICE_BYTES)
    _, query = url.split("?", 1)
    for path in (
        "/pockity/secret.txt",
        f"/pockity/users/{bob_id}/secret.txt",
        f"/pockity/mine.txt/../../users/{bob_id}/secret.txt",
        "/pockity/mine.txt/../secret.txt",
        "/pockity/MINE.txt",
        "/otherbucket/mine.txt",
        f"/users/{bob_id}/secret.txt",
        "/pockity/mine.txt%00",
        "/pockity/mine%2Etxt",  # the same name spelt differently is not the path that was signed
    ):
        r = await mallory.wire("GET", f"{path}?{query}", {})
        assert (r.status_code, s3_error(r)) == (403, "SignatureDoesNotMatch"), (path, r.text)
    put = mallory.presign("PUT", "/pockity/upload.txt", version)
    _, put_query = put.split("?", 1)
    for path in ("/pockity/secret.txt", f"/pockity/../users/{bob_id}/secret.txt", "/pockity/mine.txt"):
        r = await mallory.wire("PUT", f"{path}?{put_query}", {}, body=b"overwritten")
        assert (r.status_code, s3_error(r)) == (403, "SignatureDoesNotMatch"), path
        r = await mallory.wire("DELETE", f"{path}?{put_query}", {})
        assert (r.status_code, s3_error(r)) == (403, "SignatureDoesNotMatch"), path
    monkeypatch.setattr(app.state.settings, "s3_api_domain", HOST)
    hosted = mallory.presign("GET", "/mine.txt", version, host=f"pockity.{HOST}", bucket="pockity")
    r = await mallory.wire("GET", hosted, {}, host=f"pockity.{HOST}")
    assert (r.status_code, r.content) == (200, ALICE_BYTES)
    for sent in (f"otherbucket.{HOST}", f"users.{HOST}"):
        r = await mallory.wire("GET", hosted, {}, host=sent)
        assert (r.status_code, s3_error(r)) == (403, "SignatureDoesNotMatch"), sent
    assert await alice_names(client, alice) == {"mine.txt": await _etag(client, alice, "mine.txt")}
    await assert_bob_untouched(client, storage, bob)


# --- key scopes and prefixes --------------------------------------------------------------------------------------


async def _seed(client: httpx.AsyncClient, user: TestUser) -> dict[str, bytes]:
    files = {
        n: n.encode()
        for n in ("reports/q1.txt", "reports/deep/q2.txt", "other.txt", "reports-old.txt", "reportsx/a.txt")
    }
    for name, data in files.items():
        assert (await client.put(f"/api/storage/files/{name}", content=data, headers=user.headers)).status_code == 201
    return files


async def _unchanged(client: httpx.AsyncClient, user: TestUser, files: dict[str, bytes]) -> None:
    assert set(await alice_names(client, user)) == set(files)
    for name, data in files.items():
        assert (await client.get(f"/api/storage/files/{name}/content", headers=user.headers)).content == data


async def test_scopes_map_to_s3_actions(
    client: httpx.AsyncClient, s3wire: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    files = await _seed(client, alice)
    reader = await tenant(client, s3wire, alice, scopes=["read"])
    lister = await tenant(client, s3wire, alice, scopes=["list"])
    writer = await tenant(client, s3wire, alice, scopes=["write"])
    denied = {
        reader: [
            ("PUT", "/pockity/other.txt", {}),
            ("PUT", "/pockity/new.txt", {}),
            ("DELETE", "/pockity/other.txt", {}),
            ("GET", "/pockity?list-type=2", {}),
            ("GET", "/pockity", {}),
            ("GET", "/pockity?versions", {}),
            ("PUT", "/pockity/copy.txt", {"x-amz-copy-source": "pockity/other.txt"}),
        ],
        lister: [
            ("GET", "/pockity/other.txt", {}),
            ("HEAD", "/pockity/other.txt", {}),
            ("GET", "/pockity/other.txt?acl", {}),
            ("PUT", "/pockity/other.txt", {}),
            ("DELETE", "/pockity/other.txt", {}),
            ("PUT", "/pockity/copy.txt", {"x-amz-copy-source": "pockity/other.txt"}),
        ],
        writer: [
            ("GET", "/pockity/other.txt", {}),
            ("GET", "/pockity?list-type=2", {}),
            ("DELETE", "/pockity/other.txt", {}),
            ("PUT", "/pockity/copy.txt", {"x-amz-copy-source": "pockity/other.txt"}),  # a copy reads its source
        ],
    }
    for who, calls in denied.items():
        for method, target, headers in calls:
            r = await who.send(method, target, headers=headers, body=b"overwritten" if method == "PUT" else b"")
            assert (r.status_code, s3_error(r)) == (403, "AccessDenied"), (who.key["scopes"], method, target, r.text)
        r = await who.send("POST", "/pockity?delete", body=_delete_body(["other.txt"]))
        errors = [e.findtext(f"{NS}Code") for e in fromstring(r.content).iter(f"{NS}Error")]
        assert errors == ["AccessDenied"], who.key["scopes"]
    await _unchanged(client, alice, files)
    got = await reader.send("GET", "/pockity/other.txt")
    assert (got.status_code, got.content) == (200, b"other.txt")
    assert (await reader.send("HEAD", "/pockity/other.txt")).status_code == 200
    assert sorted(keys_of(await lister.send("GET", "/pockity?list-type=2"))) == sorted(files)
    assert sorted(keys_of(await lister.send("GET", "/pockity?versions"))) == sorted(files)
    assert (await writer.send("PUT", "/pockity/new.txt", body=b"new")).status_code == 200
    await _unchanged(client, alice, {**files, "new.txt": b"new"})
    await assert_bob_untouched(client, storage, bob)


async def test_a_prefix_key_cannot_reach_outside_its_folder(
    client: httpx.AsyncClient, s3wire: httpx.AsyncClient, storage: Path, alice: TestUser, bob: Bob
) -> None:
    files = await _seed(client, alice)
    key = await tenant(client, s3wire, alice, prefix="reports")
    outside = ["other.txt", "reports-old.txt", "reportsx/a.txt", "reports", f"users/{bob.user.id}/secret.txt"]
    for name in outside:
        target = path_of(name)
        for method in ("GET", "HEAD", "PUT", "DELETE"):
            r = await key.send(method, target, body=b"overwritten" if method == "PUT" else b"")
            assert (r.status_code, s3_error(r)) == (403, "AccessDenied"), (method, name, r.text)
        r = await key.send("GET", target + "?acl")
        assert (r.status_code, s3_error(r)) == (403, "AccessDenied"), ("acl", name)
        copies = [
            ("/pockity/reports/copy.txt", f"pockity/{name}"),  # source outside
            (target, "pockity/reports/q1.txt"),  # destination outside
        ]
        for dest, source in copies:
            r = await key.send("PUT", dest, headers={"x-amz-copy-source": source})
            assert (r.status_code, s3_error(r)) == (403, "AccessDenied"), (dest, source, r.text)
    r = await key.send("POST", "/pockity?delete", body=_delete_body(["other.txt", "reportsx/a.txt", "reports"]))
    assert [e.findtext(f"{NS}Code") for e in fromstring(r.content).iter(f"{NS}Error")] == ["AccessDenied"] * 3
    await _unchanged(client, alice, files)
    # Quiet mode reports only the keys that failed: a refused one beside one deleted inside the folder.
    assert (await key.send("PUT", "/pockity/reports/gone.txt", body=b"x")).status_code == 200
    quiet = _delete_body(["reports/gone.txt", "other.txt"]).replace(b"<Delete>", b"<Delete><Quiet>true</Quiet>")
    r = await key.send("POST", "/pockity?delete", body=quiet)
    assert r.status_code == 200, r.text
    result = fromstring(r.content)
    assert [e.findtext(f"{NS}Key") for e in result.iter(f"{NS}Deleted")] == []
    assert [(e.findtext(f"{NS}Key"), e.findtext(f"{NS}Code")) for e in result.iter(f"{NS}Error")] == [
        ("other.txt", "AccessDenied")
    ]
    assert (await key.send("HEAD", "/pockity/reports/gone.txt")).status_code == 404
    await _unchanged(client, alice, files)
    # Inside its folder it works, copies included.
    r = await key.send("PUT", "/pockity/reports/copy.txt", headers={"x-amz-copy-source": "pockity/reports/q1.txt"})
    assert r.status_code == 200, r.text
    assert (await key.send("GET", "/pockity/reports/copy.txt")).content == b"reports/q1.txt"
    files["reports/copy.txt"] = b"reports/q1.txt"
    await _unchanged(client, alice, files)
    await assert_bob_untouched(client, storage, bob)


async def test_a_prefix_keys_listings_are_narrowed_to_its_folder_as_in_the_rest_api(
    client: httpx.AsyncClient, s3wire: httpx.AsyncClient, alice: TestUser
) -> None:
    await _seed(client, alice)
    key = await tenant(client, s3wire, alice, prefix="reports")
    inside = ["reports/deep/q2.txt", "reports/q1.txt"]
    for query, marker in LISTINGS:
        for prefix in ("", "r", "rep", "reports", "reports/"):
            r = await key.send("GET", f"/pockity?{query}&prefix={quote(prefix, safe='')}")
            assert keys_of(r) == inside, (query, prefix)
        r = await key.send("GET", f"/pockity?{query}&delimiter=%2F")
        assert keys_of(r) == ["reports/q1.txt"] and keys_of(r, "Prefix")[-1:] == ["reports/deep/"], query
        for prefix in ("other", "reports-", "reportsx/", "users/"):
            r = await key.send("GET", f"/pockity?{query}&prefix={quote(prefix, safe='')}")
            assert (r.status_code, s3_error(r)) == (403, "AccessDenied"), (query, prefix)
        assert keys_of(await key.send("GET", f"/pockity?{query}&{marker}=a")) == inside, query
        assert keys_of(await key.send("GET", f"/pockity?{query}&{marker}=other.txt")) == inside, query
        assert keys_of(await key.send("GET", f"/pockity?{query}&{marker}=reportsx")) == [], query
    page = await key.send("GET", "/pockity?list-type=2&max-keys=1")
    assert keys_of(page) == inside[:1]
    token = fromstring(page.content).findtext(f"{NS}NextContinuationToken") or ""
    assert (
        keys_of(await key.send("GET", f"/pockity?list-type=2&continuation-token={quote(token, safe='')}")) == inside[1:]
    )
    for forged in ("other.txt", "reports-old.txt", "a"):
        r = await key.send("GET", f"/pockity?list-type=2&continuation-token={cursor_of(forged)}")
        assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), forged


async def test_numbers_in_other_scripts_are_refused_not_crashed_on(
    mallory: Tenant, app: FastAPI, alice: TestUser
) -> None:
    """`'²'.isdigit()` is true and `int('²')` fails: such a length is an InvalidArgument, never a 500."""
    request = AWSRequest(
        method="PUT",
        url=f"http://{HOST}/pockity/n.txt",
        headers={"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": "\u00b2"},
    )
    request.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32"}}
    S3SigV4Auth(mallory.credentials, "s3", "us-east-1").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    r = await mallory.wire("PUT", "/pockity/n.txt", dict(request.headers.items()), b"0\r\n\r\n")
    assert (r.status_code, s3_error(r)) == (400, "InvalidArgument"), r.text
    r = await mallory.send("GET", "/pockity?list-type=2&max-keys=%C2%B2")
    assert (r.status_code, s3_error(r)) == (400, "InvalidArgument")
    assert await stored_rows(app, alice.id) == {}
