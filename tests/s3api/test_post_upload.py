"""Browser POST uploads on the S3 listener, in-process: forms signed by botocore's generate_presigned_post (the
reference, V4 and V2), streamed into the same reservation as every upload; whatever the policy, the key's
scopes or the quota refuse stores nothing and leaves nothing reserved."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import fromstring

import boto3
import httpx
import pytest
from botocore.config import Config
from fastapi import FastAPI

from tests.fixtures.storage import local_files, set_quota, stored_rows, usage
from tests.fixtures.users import TestUser, make_key
from tests.s3api.conftest import BASE, S3Client

BOUNDARY = "pockity-post-boundary"


def presigned_post(
    key: dict[str, Any], name: str, version: str = "s3v4", expires: int = 600, **kwargs: Any
) -> dict[str, str]:
    """botocore's form fields for `name` (the reference signer for both policy versions)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=BASE,
        aws_access_key_id=key["accessKeyId"],
        aws_secret_access_key=key["secretKey"],
        region_name="us-east-1",
        config=Config(signature_version=version, s3={"addressing_style": "path"}),
    )
    post = s3.generate_presigned_post("pockity", name, ExpiresIn=expires, **kwargs)
    assert post["url"] == f"{BASE}/pockity"
    return {k: str(v) for k, v in post["fields"].items()}


def form_body(
    fields: dict[str, str],
    data: bytes,
    *,
    filename: str = "notes.txt",
    content_type: str = "application/octet-stream",
    after: dict[str, str] | None = None,
) -> bytes:
    """A form as a browser sends it: the fields, the file, then (ignored) fields after the file."""
    out = b""
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    out += data + b"\r\n"
    for name, value in (after or {}).items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    return out + f"--{BOUNDARY}--\r\n".encode()


async def post(http: httpx.AsyncClient, body: bytes, path: str = "/pockity", pieces: int = 1) -> httpx.Response:
    async def stream() -> AsyncIterator[bytes]:
        step = max(1, len(body) // pieces)
        for i in range(0, len(body), step):
            yield body[i : i + step]

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await http.post(path, content=stream() if pieces > 1 else body, headers=headers)


def code(r: httpx.Response) -> str:
    root = fromstring(r.content)
    assert root.tag == "Error" and root.findtext("RequestId") == r.headers["x-amz-request-id"], r.text
    return root.findtext("Code") or ""


async def nothing_stored(app: FastAPI, client: httpx.AsyncClient, user: TestUser) -> None:
    assert await stored_rows(app, user.id) == {}
    assert local_files(app, user.id) == {}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)


@pytest.fixture
async def key(client: httpx.AsyncClient, user: TestUser) -> dict[str, Any]:
    return await make_key(client, user)


@pytest.mark.parametrize("version", ["s3v4", "s3"])
async def test_a_signed_form_stores_the_file_as_the_policy_allows(
    s3http: httpx.AsyncClient,
    client: httpx.AsyncClient,
    app: FastAPI,
    user: TestUser,
    key: dict[str, Any],
    version: str,
) -> None:
    fields = presigned_post(
        key,
        "uploads/${filename}",
        version,
        Fields={"success_action_status": "201", "Content-Type": "text/plain"},
        Conditions=[
            {"success_action_status": "201"},
            ["starts-with", "$Content-Type", "text/"],
            ["content-length-range", 1, 300_000],
        ],
    )
    data = bytes(range(256)) * 1000
    r = await post(s3http, form_body(fields, data, after={"ignored": "after the file " * 10_000}), pieces=40)
    assert r.status_code == 201, r.text
    etag = hashlib.md5(data).hexdigest()
    root = fromstring(r.content)
    assert root.tag == "PostResponse"
    assert (root.findtext("Bucket"), root.findtext("Key"), root.findtext("ETag")) == (
        "pockity",
        "uploads/notes.txt",
        f'"{etag}"',
    )
    assert root.findtext("Location") == r.headers["location"] == f"{BASE}/pockity/uploads/notes.txt"
    assert r.headers["etag"] == f'"{etag}"'
    assert await stored_rows(app, user.id) == {"uploads/notes.txt": len(data)}
    rest = await client.get("/api/storage/files/uploads/notes.txt/content", headers=user.headers)
    assert (rest.content, rest.headers["content-type"].split(";")[0]) == (data, "text/plain")
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (len(data), 1, 0)


async def test_success_action_status_and_redirect(
    s3http: httpx.AsyncClient, app: FastAPI, user: TestUser, key: dict[str, Any]
) -> None:
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 204),
        ({"success_action_status": "200"}, 200),
        ({"success_action_status": "204"}, 204),
        ({"success_action_status": "404"}, 204),  # S3 answers 204 to a status it does not offer
        ({"success_action_redirect": "javascript:alert(1)"}, 204),  # no http(s) URL: ignored
    ]
    for i, (extra, status) in enumerate(cases):
        fields = presigned_post(key, f"s/{i}.txt", Fields=extra, Conditions=[{k: v} for k, v in extra.items()])
        r = await post(s3http, form_body(fields, b"x"))
        assert (r.status_code, r.content) == (status, b""), (extra, r.text)
        assert r.headers["etag"] == f'"{hashlib.md5(b"x").hexdigest()}"'
    target = "https://app.example/done?from=form#top"
    for field in ("success_action_redirect", "redirect"):
        fields = presigned_post(
            key,
            f"r/{field}.txt",
            Fields={field: target},
            Conditions=[["starts-with", f"${field}", "https://app.example/"]],
        )
        r = await post(s3http, form_body(fields, b"redirected"))
        assert r.status_code == 303, r.text
        location = urlsplit(r.headers["location"])
        assert (location.scheme, location.netloc, location.path, location.fragment) == (
            "https",
            "app.example",
            "/done",
            "top",
        )
        assert parse_qs(location.query) == {
            "from": ["form"],
            "bucket": ["pockity"],
            "key": [f"r/{field}.txt"],
            "etag": [f'"{hashlib.md5(b"redirected").hexdigest()}"'],
        }
    assert len(await stored_rows(app, user.id)) == len(cases) + 2


def _tampered(fields: dict[str, str]) -> dict[str, str]:
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [
        c for c in policy["conditions"] if not (isinstance(c, list) and c[0] == "content-length-range")
    ]
    return {**fields, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}


@pytest.mark.parametrize("version", ["s3v4", "s3"])
async def test_refused_forms_store_nothing_and_reserve_nothing(
    s3http: httpx.AsyncClient,
    client: httpx.AsyncClient,
    app: FastAPI,
    user: TestUser,
    key: dict[str, Any],
    version: str,
) -> None:
    def signed(**kwargs: Any) -> dict[str, str]:
        return presigned_post(
            key,
            "in/${filename}",
            version,
            Fields={"Content-Type": "image/png", **kwargs.pop("Fields", {})},
            Conditions=[["content-length-range", 2, 10], {"Content-Type": "image/png"}, *kwargs.pop("Conditions", [])],
            **kwargs,
        )

    good = signed()
    secret = key["secretKey"]
    wrong = secret[:-1] + ("x" if secret[-1] != "x" else "y")  # never the secret itself
    wrong_secret = presigned_post({**key, "secretKey": wrong}, "in/${filename}", version)
    unknown = presigned_post({**key, "accessKeyId": "PK" + "Z" * 18}, "in/${filename}", version)
    cases: list[tuple[dict[str, str], bytes, dict[str, Any], int, str]] = [
        (signed(expires=-5), b"four", {}, 403, "AccessDenied"),  # expired
        (_tampered(good), b"x" * 50, {}, 403, "SignatureDoesNotMatch"),  # the range taken out, not re-signed
        (wrong_secret, b"four", {}, 403, "SignatureDoesNotMatch"),
        (unknown, b"four", {}, 403, "InvalidAccessKeyId"),
        ({**good, "key": "elsewhere/x.png"}, b"four", {}, 403, "AccessDenied"),  # outside starts-with
        ({**good, "Content-Type": "text/html"}, b"four", {}, 403, "AccessDenied"),
        ({**good, "x-amz-meta-sneaky": "1"}, b"four", {}, 403, "AccessDenied"),  # a field no condition covers
        (good, b"x" * 11, {}, 400, "EntityTooLarge"),  # over content-length-range, found while streaming
        (good, b"x" * 200_000, {}, 400, "EntityTooLarge"),
        (good, b"x", {}, 400, "EntityTooSmall"),
        (good, b"four", {"filename": "../../x.png"}, 400, "InvalidArgument"),  # ${filename} cannot traverse
        (good, b"four", {"filename": ""}, 400, "InvalidArgument"),  # 'in/' is no file name
    ]
    for fields, data, options, status, expected in cases:
        r = await post(s3http, form_body(fields, data, **options), pieces=4)
        assert (r.status_code, code(r)) == (status, expected), (fields.get("key"), data[:20], r.text)
        await nothing_stored(app, client, user)
    r = await post(s3http, form_body(good, b"four"), path="/otherbucket")  # the policy names bucket pockity
    assert (r.status_code, code(r)) == (403, "AccessDenied")
    r = await post(s3http, form_body(good, b"four", filename="ok.png"))
    assert r.status_code == 204, r.text
    assert await stored_rows(app, user.id) == {"in/ok.png": 4}


async def test_malformed_forms_are_s3_errors(
    s3http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI, user: TestUser, key: dict[str, Any]
) -> None:
    fields = presigned_post(key, "m.txt")
    without_key = {k: v for k, v in fields.items() if k != "key"}
    only_fields = (
        b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'.encode()
            for n, v in fields.items()
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    cases = [
        (form_body(without_key, b"x"), "InvalidArgument"),
        (only_fields, "InvalidArgument"),
        (form_body({"KEY": "other.txt", **fields}, b"x"), "InvalidArgument"),  # two keys (names ignore case)
        (form_body({"x-ignore-pad": "p" * 30_000, **fields}, b"x"), "MaxPostPreDataLengthExceeded"),
        (form_body(fields, b"x")[:-30], "MalformedPOSTRequest"),  # the body ends inside the file
        (b"not a multipart body at all", "MalformedPOSTRequest"),
    ]
    for body, expected in cases:
        r = await post(s3http, body)
        assert (r.status_code, code(r)) == (400, expected), (expected, r.text)
    await nothing_stored(app, client, user)


async def test_the_keys_scopes_prefix_and_quota_apply(
    s3http: httpx.AsyncClient, client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    reader = await make_key(client, user, scopes=["read", "list"])
    folder = await make_key(client, user, prefix="reports")
    revoked = await make_key(client, user)
    revoked_form = presigned_post(revoked, "a.txt")
    assert (await client.delete(f"/api/apikeys/{revoked['id']}", headers=user.headers)).status_code == 200
    cases = [
        (presigned_post(reader, "a.txt"), 403, "AccessDenied"),
        (presigned_post(folder, "other/a.txt"), 403, "AccessDenied"),
        (presigned_post(folder, "reports-old.txt"), 403, "AccessDenied"),
        (presigned_post(folder, "${filename}"), 403, "AccessDenied"),  # the file's name is outside reports/
        (revoked_form, 403, "InvalidAccessKeyId"),
    ]
    for fields, status, expected in cases:
        r = await post(s3http, form_body(fields, b"data"))
        assert (r.status_code, code(r)) == (status, expected), (fields["key"], r.text)
    await nothing_stored(app, client, user)
    assert (await post(s3http, form_body(presigned_post(folder, "reports/a.txt"), b"data"))).status_code == 204
    await set_quota(app, user.id, storage_bytes=10)
    r = await post(s3http, form_body(presigned_post(folder, "reports/big.txt"), b"y" * 7), pieces=3)
    assert (r.status_code, code(r)) == (403, "QuotaExceeded")
    assert await stored_rows(app, user.id) == {"reports/a.txt": 4}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (4, 1, 0)


async def test_the_forms_metadata_fields_are_stored_as_putobjects_headers(
    s3http: httpx.AsyncClient, s3: S3Client, key: dict[str, Any]
) -> None:
    stored = {
        "x-amz-meta-owner": "ada",
        "x-amz-meta-note": "na\u00efve \u20ac",  # UTF-8 in a form; the same bytes as in a header
        "Cache-Control": "max-age=60",
        "Content-Disposition": 'attachment; filename="report.txt"',
        "acl": "private",
    }
    fields = presigned_post(key, "meta.txt", Fields=stored, Conditions=[{k: v} for k, v in stored.items()])
    assert (await post(s3http, form_body(fields, b"with metadata"))).status_code == 204
    head = await s3.send("HEAD", "/pockity/meta.txt")
    assert head.status_code == 200
    raw = {k.decode().lower(): v for k, v in head.headers.raw}
    assert raw["x-amz-meta-owner"] == b"ada"
    assert raw["x-amz-meta-note"] == "na\u00efve \u20ac".encode()
    assert raw["cache-control"] == b"max-age=60"
    assert raw["content-disposition"] == b'attachment; filename="report.txt"'
    too_much = {"x-amz-meta-big": "m" * 3000}
    fields = presigned_post(key, "big-meta.txt", Fields=too_much, Conditions=[{k: v} for k, v in too_much.items()])
    r = await post(s3http, form_body(fields, b"x"))
    assert (r.status_code, code(r)) == (400, "MetadataTooLarge")
    assert (await s3.send("HEAD", "/pockity/big-meta.txt")).status_code == 404
