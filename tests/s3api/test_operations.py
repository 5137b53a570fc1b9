"""S3 operations in-process (PostgreSQL, local storage): what a file written through S3 is for the REST API,
and S3's answers for errors."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from xml.etree.ElementTree import fromstring

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.storage import set_quota, stored_rows, usage
from tests.fixtures.users import TestUser, make_user
from tests.s3api.conftest import S3Client, s3_client_for

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _error(r: httpx.Response) -> str:
    root = fromstring(r.content)
    assert root.tag == "Error" and root.findtext("RequestId") == r.headers["x-amz-request-id"]
    return root.findtext("Code") or ""


async def test_put_get_head_delete_round_trip_is_the_rest_apis_file(
    s3: S3Client, client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    put = await s3.send("PUT", "/pockity/docs/a%20b.txt", body=b"hello s3", headers={"Content-Type": "text/plain"})
    assert put.status_code == 200, put.text
    md5 = hashlib.md5(b"hello s3").hexdigest()
    assert put.headers["etag"] == f'"{md5}"'
    assert await stored_rows(app, user.id) == {"docs/a b.txt": 8}
    rest = await client.get("/api/storage/files/docs/a b.txt/content", headers=user.headers)
    assert rest.status_code == 200 and rest.content == b"hello s3"
    got = await s3.send("GET", "/pockity/docs/a%20b.txt")
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, b"hello s3", "text/plain")
    assert got.headers["etag"] == f'"{md5}"' and got.headers["content-length"] == "8"
    ranged = await s3.send("GET", "/pockity/docs/a%20b.txt", headers={"Range": "bytes=6-"})
    assert (ranged.status_code, ranged.content, ranged.headers["content-range"]) == (206, b"s3", "bytes 6-7/8")
    head = await s3.send("HEAD", "/pockity/docs/a%20b.txt")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "8")
    # A HEAD answers as its GET would, without the body: the Range, the response-* overrides, an unsatisfiable
    # range's 416 (HEAD errors carry no body).
    head_ranged = await s3.send("HEAD", "/pockity/docs/a%20b.txt", headers={"Range": "bytes=2-4"})
    assert (head_ranged.status_code, head_ranged.content) == (206, b"")
    assert (head_ranged.headers["content-range"], head_ranged.headers["content-length"]) == ("bytes 2-4/8", "3")
    head_suffix = await s3.send("HEAD", "/pockity/docs/a%20b.txt", headers={"Range": "bytes=-3"})
    assert (head_suffix.status_code, head_suffix.headers["content-range"]) == (206, "bytes 5-7/8")
    head_overridden = await s3.send("HEAD", "/pockity/docs/a%20b.txt?response-content-type=image%2Fpng")
    assert (head_overridden.status_code, head_overridden.headers["content-type"]) == (200, "image/png")
    head_past = await s3.send("HEAD", "/pockity/docs/a%20b.txt", headers={"Range": "bytes=8-"})
    assert (head_past.status_code, head_past.content, head_past.headers["content-range"]) == (416, b"", "bytes */8")
    assert (await s3.send("DELETE", "/pockity/docs/a%20b.txt")).status_code == 204
    assert await stored_rows(app, user.id) == {}
    assert (await s3.send("DELETE", "/pockity/docs/a%20b.txt")).status_code == 204  # S3: missing is no error
    missing = await s3.send("GET", "/pockity/docs/a%20b.txt")
    assert missing.status_code == 404 and _error(missing) == "NoSuchKey"
    head_missing = await s3.send("HEAD", "/pockity/docs/a%20b.txt")
    assert (head_missing.status_code, head_missing.content) == (404, b"")


async def test_a_body_that_does_not_match_its_signed_hash_stores_nothing(
    s3: S3Client, app: FastAPI, user: TestUser, client: httpx.AsyncClient
) -> None:
    request_body = b"original"
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signed = AWSRequest(method="PUT", url="http://s3.pockity.test/pockity/x.bin", data=request_body)
    S3SigV4Auth(Credentials(s3.access_key, s3.secret), "s3", "us-east-1").add_auth(signed)
    prepared = signed.prepare()
    r = await s3.http.put(prepared.url, content=b"tampered", headers=dict(prepared.headers.items()))
    assert r.status_code == 400 and _error(r) == "XAmzContentSHA256Mismatch"
    assert await stored_rows(app, user.id) == {}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)


async def test_over_quota_is_quota_exceeded_and_stores_nothing(s3: S3Client, app: FastAPI, user: TestUser) -> None:
    await set_quota(app, user.id, storage_bytes=10)
    r = await s3.send("PUT", "/pockity/big.bin", body=b"x" * 11)
    assert r.status_code == 403 and _error(r) == "QuotaExceeded"
    assert "quota" in (fromstring(r.content).findtext("Message") or "").lower()
    assert await stored_rows(app, user.id) == {}


async def test_listing_v2_v1_with_prefix_delimiter_and_pages(s3: S3Client) -> None:
    for name in ("a/1.txt", "a/2.txt", "b.txt", "c d+e.txt"):
        assert (
            await s3.send("PUT", f"/pockity/{name.replace(' ', '%20').replace('+', '%2B')}", body=b"1")
        ).status_code == 200
    r = await s3.send("GET", "/pockity?list-type=2&delimiter=%2F&encoding-type=url")
    root = fromstring(r.content)
    assert [e.text for e in root.iter(f"{NS}Key")] == ["b.txt", "c%20d%2Be.txt"]
    assert [e.text for e in root.iter(f"{NS}Prefix")][1:] == ["a/"]
    page = fromstring((await s3.send("GET", "/pockity?list-type=2&max-keys=2")).content)
    assert [e.text for e in page.iter(f"{NS}Key")] == ["a/1.txt", "a/2.txt"]
    assert page.findtext(f"{NS}IsTruncated") == "true"
    token = page.findtext(f"{NS}NextContinuationToken") or ""
    from urllib.parse import quote

    rest = fromstring(
        (await s3.send("GET", f"/pockity?list-type=2&continuation-token={quote(token, safe='')}")).content
    )
    assert [e.text for e in rest.iter(f"{NS}Key")] == ["b.txt", "c d+e.txt"]
    after = fromstring((await s3.send("GET", "/pockity?list-type=2&start-after=a%2F2.txt")).content)
    assert [e.text for e in after.iter(f"{NS}Key")] == ["b.txt", "c d+e.txt"]
    v1 = fromstring((await s3.send("GET", "/pockity?marker=b.txt")).content)
    assert [e.text for e in v1.iter(f"{NS}Key")] == ["c d+e.txt"]


async def test_another_tenants_files_are_not_reachable(
    s3: S3Client, client: httpx.AsyncClient, s3http: httpx.AsyncClient
) -> None:
    assert (await s3.send("PUT", "/pockity/secret.txt", body=b"mine")).status_code == 200
    other = await s3_client_for(client, s3http, await make_user(client, "mallory"))
    expected = [
        ("/pockity/secret.txt", 404, "NoSuchKey"),  # their own space has no such file
        ("/pockity/%2e%2e/secret.txt", 400, "InvalidArgument"),  # a '..' segment, however encoded
        ("/pockity/a/%2E%2E/%2E%2E/secret.txt", 400, "InvalidArgument"),
        ("/pockity/..%2Fsecret.txt", 400, "InvalidArgument"),
        # httpx resolves a literal '..' before sending, so the path no longer matches what botocore signed
        ("/pockity/../pockity/secret.txt", 403, "SignatureDoesNotMatch"),
    ]
    for path, status, code in expected:
        r = await other.send("GET", path)
        assert (r.status_code, _error(r)) == (status, code), path
    listing = fromstring((await other.send("GET", "/pockity?list-type=2")).content)
    assert list(listing.iter(f"{NS}Key")) == []
    r = await other.send("GET", "/otherbucket/secret.txt")
    assert r.status_code == 404 and _error(r) == "NoSuchBucket"


async def test_buckets_location_acl_and_unsupported_features(s3: S3Client) -> None:
    buckets = fromstring((await s3.send("GET", "/")).content)
    assert [e.text for e in buckets.iter(f"{NS}Name")] == ["pockity"]
    assert (await s3.send("HEAD", "/pockity")).status_code == 200
    assert (await s3.send("PUT", "/pockity")).status_code == 200  # re-creating your own bucket (us-east-1)
    r = await s3.send("PUT", "/newbucket")
    assert r.status_code == 403 and _error(r) == "AccessDenied"
    assert (await s3.send("GET", "/pockity?location")).status_code == 200
    acl = fromstring((await s3.send("GET", "/pockity?acl")).content)
    assert acl.findtext(f".//{NS}Permission") == "FULL_CONTROL"
    for sub in ("versioning", "policy", "lifecycle", "cors"):
        r = await s3.send("GET", f"/pockity?{sub}")
        assert r.status_code == 501 and _error(r) == "NotImplemented", sub


async def test_key_scopes_and_prefixes_hold_through_s3(
    client: httpx.AsyncClient, s3http: httpx.AsyncClient, user: TestUser
) -> None:
    reader = await s3_client_for(client, s3http, user, scopes=["read", "list"], prefix="pub/")
    r = await reader.send("PUT", "/pockity/pub/x.txt", body=b"x")
    assert r.status_code == 403 and _error(r) == "AccessDenied"
    r = await reader.send("GET", "/pockity/priv/x.txt")
    assert r.status_code == 403 and _error(r) == "AccessDenied"


def _crc32(data: bytes) -> str:
    import base64
    import zlib

    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def _send_trailer_upload(
    s3: S3Client, path: str, data: bytes, trailer_value: str | None = None
) -> httpx.Response:
    """What boto3 sends over HTTPS: STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer, no Content-Length."""
    import io

    from botocore import httpchecksum
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = httpchecksum.AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=httpchecksum.Crc32Checksum, checksum_name="x-amz-checksum-crc32"
    ).read()
    if trailer_value is not None:
        body = body.replace(_crc32(data).encode(), trailer_value.encode())
    headers = {
        "Content-Encoding": "aws-chunked",
        "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": str(len(data)),
    }
    request = AWSRequest(method="PUT", url="http://s3.pockity.test" + path, data=b"", headers=headers)
    request.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32"}}
    S3SigV4Auth(Credentials(s3.access_key, s3.secret), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    sent = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    assert sent["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7000):
            yield body[i : i + 7000]

    return await s3.http.put(prepared.url, content=stream(), headers=sent)


async def test_boto3s_https_upload_with_a_checksum_trailer_is_stored_once_verified(
    s3: S3Client, app: FastAPI, user: TestUser, client: httpx.AsyncClient
) -> None:
    data = bytes(range(256)) * 300
    r = await _send_trailer_upload(s3, "/pockity/t.bin", data)
    assert r.status_code == 200, r.text
    assert await stored_rows(app, user.id) == {"t.bin": len(data)}
    assert (await s3.send("GET", "/pockity/t.bin")).content == data
    bad = await _send_trailer_upload(s3, "/pockity/bad.bin", data, trailer_value="AAAAAA==")
    assert bad.status_code == 400 and _error(bad) == "BadDigest"
    assert await stored_rows(app, user.id) == {"t.bin": len(data)}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (len(data), 1, 0)


async def test_virtual_hosted_requests_name_the_bucket_in_the_host(
    s3: S3Client, app: FastAPI, user: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.state.settings, "s3_api_domain", "s3.pockity.test")
    assert (await s3.send("PUT", "/pockity/v.txt", body=b"vh")).status_code == 200  # path-style still works
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    for host, status in (("pockity.s3.pockity.test", 200), ("other.s3.pockity.test", 404)):
        request = AWSRequest(method="GET", url=f"http://{host}/v.txt")
        S3SigV4Auth(Credentials(s3.access_key, s3.secret), "s3", "us-east-1").add_auth(request)
        prepared = request.prepare()
        r = await s3.http.get(prepared.url, headers=dict(prepared.headers.items()))
        assert r.status_code == status, (host, r.text)
        if status == 200:
            assert r.content == b"vh"
        else:
            assert _error(r) == "NoSuchBucket"


async def test_copy_object_is_reserved_like_an_upload_and_stays_inside_the_tenant(
    s3: S3Client, app: FastAPI, user: TestUser, client: httpx.AsyncClient
) -> None:
    put = await s3.send("PUT", "/pockity/src/a.txt", body=b"copy me", headers={"Content-Type": "text/plain"})
    assert put.status_code == 200
    r = await s3.send("PUT", "/pockity/dst/b.txt", headers={"x-amz-copy-source": "/pockity/src/a.txt"})
    assert r.status_code == 200, r.text
    assert fromstring(r.content).findtext(f"{NS}ETag") == put.headers["etag"]
    got = await s3.send("GET", "/pockity/dst/b.txt")
    assert (got.content, got.headers["content-type"]) == (b"copy me", "text/plain")
    replaced = await s3.send(
        "PUT",
        "/pockity/dst/c.txt",
        headers={
            "x-amz-copy-source": "pockity/src%2Fa.txt",
            "x-amz-metadata-directive": "REPLACE",
            "Content-Type": "application/json",
        },
    )
    assert replaced.status_code == 200, replaced.text
    assert (await s3.send("HEAD", "/pockity/dst/c.txt")).headers["content-type"] == "application/json"
    assert await stored_rows(app, user.id) == {"src/a.txt": 7, "dst/b.txt": 7, "dst/c.txt": 7}
    u = await usage(client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (21, 3, 0)
    expected = [
        ({"x-amz-copy-source": "/pockity/src/a.txt"}, "/pockity/src/a.txt", 400, "InvalidRequest"),  # onto itself
        ({"x-amz-copy-source": "/pockity/missing.txt"}, "/pockity/d.txt", 404, "NoSuchKey"),
        ({"x-amz-copy-source": "/otherbucket/src/a.txt"}, "/pockity/d.txt", 404, "NoSuchBucket"),
        ({"x-amz-copy-source": "/pockity/../x"}, "/pockity/d.txt", 400, "InvalidArgument"),
        ({"x-amz-copy-source": "/pockity/%ff"}, "/pockity/d.txt", 400, "InvalidArgument"),
    ]
    for headers, path, status, code in expected:
        bad = await s3.send("PUT", path, headers=headers)
        assert (bad.status_code, _error(bad)) == (status, code), headers
    await set_quota(app, user.id, storage_bytes=25)
    over = await s3.send("PUT", "/pockity/dst/d.txt", headers={"x-amz-copy-source": "/pockity/src/a.txt"})
    assert over.status_code == 403 and _error(over) == "QuotaExceeded"
    assert await stored_rows(app, user.id) == {"src/a.txt": 7, "dst/b.txt": 7, "dst/c.txt": 7}


async def test_conditional_gets_and_response_overrides(s3: S3Client) -> None:
    put = await s3.send("PUT", "/pockity/c.html", body=b"<b>hi</b>", headers={"Content-Type": "text/html"})
    etag = put.headers["etag"]
    modified = (await s3.send("HEAD", "/pockity/c.html")).headers["last-modified"]
    cases = [
        ({"If-Match": etag}, 200),
        ({"If-Match": '"other"'}, 412),
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": '"other", *'}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": modified}, 304),
        ({"If-Modified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"}, 200),
        ({"If-Unmodified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"}, 412),
        ({"If-Unmodified-Since": modified}, 200),
        ({"If-Match": etag, "If-Unmodified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"}, 200),  # If-Match wins
        ({"If-Modified-Since": "not a date"}, 200),  # ignored
    ]
    for headers, status in cases:
        for method in ("GET", "HEAD"):
            r = await s3.send(method, "/pockity/c.html", headers=headers)
            assert r.status_code == status, (method, headers, r.status_code)
            if status == 412 and method == "GET":
                assert _error(r) == "PreconditionFailed"
            if status == 304:
                assert r.content == b"" and r.headers["etag"] == etag
    got = await s3.send("GET", "/pockity/c.html")
    assert got.headers["content-security-policy"] == "sandbox"  # an active type never runs as a page here
    overridden = await s3.send(
        "GET",
        "/pockity/c.html?response-content-type=text%2Fplain&response-content-disposition=attachment%3B%20filename%3Dc.txt"
        "&response-cache-control=no-cache",
    )
    assert overridden.status_code == 200, overridden.text
    assert overridden.headers["content-type"] == "text/plain"
    assert overridden.headers["content-disposition"] == "attachment; filename=c.txt"
    assert overridden.headers["cache-control"] == "no-cache"
    assert "content-security-policy" not in overridden.headers
    bad = await s3.send("GET", "/pockity/c.html?response-content-type=text%2Fplain%0D%0ASet-Cookie%3A%20x%3D1")
    assert bad.status_code == 400 and _error(bad) == "InvalidArgument"


async def test_conditional_writes_are_checked_under_the_names_lock(s3: S3Client, app: FastAPI, user: TestUser) -> None:
    first = await s3.send("PUT", "/pockity/once.txt", body=b"v1", headers={"If-None-Match": "*"})
    assert first.status_code == 200, first.text
    again = await s3.send("PUT", "/pockity/once.txt", body=b"v2", headers={"If-None-Match": "*"})
    assert again.status_code == 412 and _error(again) == "PreconditionFailed"
    stale = await s3.send("PUT", "/pockity/once.txt", body=b"v2", headers={"If-Match": '"0123"'})
    assert stale.status_code == 412 and _error(stale) == "PreconditionFailed"
    missing = await s3.send("PUT", "/pockity/none.txt", body=b"x", headers={"If-Match": first.headers["etag"]})
    assert missing.status_code == 412
    fresh = await s3.send("PUT", "/pockity/once.txt", body=b"v3", headers={"If-Match": first.headers["etag"]})
    assert fresh.status_code == 200, fresh.text
    assert (await s3.send("GET", "/pockity/once.txt")).content == b"v3"
    assert await stored_rows(app, user.id) == {"once.txt": 2}
