"""What a correct S3 server answers at object level, checked case by case (in-process, signed by botocore).

Grouped by area as the public conformance suites group them (listing, get/head/put, ranges, conditions, copy,
multipart, deletes, names); each case is one request and its expected status, code, headers or body. The
suites run with one fixed bucket, which is how Pockity's tenants see their files.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote
from xml.etree.ElementTree import Element, fromstring

import httpx

from tests.s3api.conftest import S3Client

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
B = "/pockity"


def _code(r: httpx.Response) -> str:
    return fromstring(r.content).findtext("Code") or ""


def _path(key: str) -> str:
    return f"{B}/{quote(key, safe='/')}"


async def _put(s3: S3Client, key: str, body: bytes | None = None, **headers: str) -> httpx.Response:
    r = await s3.send("PUT", _path(key), body=key.encode() if body is None else body, headers=headers)
    assert r.status_code == 200, (key, r.text)
    return r


async def _list(s3: S3Client, **params: str | int) -> Element:
    query = "&".join(f"{k.replace('_', '-')}={quote(str(v), safe='')}" for k, v in params.items())
    r = await s3.send("GET", f"{B}?{query}")
    assert r.status_code == 200, (params, r.text)
    return fromstring(r.content)


def _keys(root: Element) -> list[str]:
    return [c.findtext(f"{NS}Key") or "" for c in root.findall(f"{NS}Contents")]


def _prefixes(root: Element) -> list[str]:
    return [c.findtext(f"{NS}Prefix") or "" for c in root.findall(f"{NS}CommonPrefixes")]


def _text(root: Element, name: str) -> str | None:
    return root.findtext(f"{NS}{name}")


# --- listing ------------------------------------------------------------------------------------------------


async def test_listing_with_other_delimiters_than_slash(s3: S3Client) -> None:
    for key in ("bar", "baz", "cab", "foo"):
        await _put(s3, key)
    cases: list[tuple[dict[str, str | int], list[str], list[str]]] = [
        ({"delimiter": "a"}, ["foo"], ["ba", "ca"]),
        ({"delimiter": "%"}, ["bar", "baz", "cab", "foo"], []),
        ({"delimiter": " "}, ["bar", "baz", "cab", "foo"], []),
        ({"delimiter": "."}, ["bar", "baz", "cab", "foo"], []),
        ({"delimiter": "\n"}, ["bar", "baz", "cab", "foo"], []),
        ({"delimiter": "ab"}, ["bar", "baz", "foo"], ["cab"]),
        ({"prefix": "ba", "delimiter": "a"}, ["bar", "baz"], []),
        ({"prefix": "b", "delimiter": "z"}, ["bar"], ["baz"]),
        ({"prefix": "y", "delimiter": "z"}, [], []),
        ({"prefix": "d", "delimiter": "/"}, [], []),
    ]
    for params, keys, prefixes in cases:
        for version in ({}, {"list_type": 2}):
            root = await _list(s3, **params, **version)
            assert (_keys(root), _prefixes(root)) == (keys, prefixes), (params, version)
            assert _text(root, "Delimiter") == params.get("delimiter")


async def test_listing_v1_pages_by_marker_with_next_marker_only_under_a_delimiter(s3: S3Client) -> None:
    for key in ("asdf", "boo/bar", "boo/baz/xyzzy", "cquux/thud", "cquux/bla"):
        await _put(s3, key)
    # (prefix, marker, max-keys) -> (truncated, keys, prefixes, NextMarker)
    cases = [
        (("", "", 1), ("true", ["asdf"], [], "asdf")),
        (("", "asdf", 1), ("true", [], ["boo/"], "boo/")),
        (("", "boo/", 1), ("false", [], ["cquux/"], None)),
        (("", "", 2), ("true", ["asdf"], ["boo/"], "boo/")),
        (("", "boo/", 2), ("false", [], ["cquux/"], None)),
        (("boo/", "", 1), ("true", ["boo/bar"], [], "boo/bar")),
        (("boo/", "boo/bar", 1), ("false", [], ["boo/baz/"], None)),
        (("boo/", "", 2), ("false", ["boo/bar"], ["boo/baz/"], None)),
    ]
    for (prefix, marker, max_keys), (truncated, keys, prefixes, next_marker) in cases:
        root = await _list(s3, delimiter="/", prefix=prefix, marker=marker, max_keys=max_keys)
        got = (_text(root, "IsTruncated"), _keys(root), _prefixes(root), _text(root, "NextMarker"))
        assert got == (truncated, keys, prefixes, next_marker), (prefix, marker, max_keys)
    plain = await _list(s3, max_keys=1)
    assert (_text(plain, "IsTruncated"), _text(plain, "NextMarker")) == ("true", None)  # no delimiter: no NextMarker


async def test_listing_markers_max_keys_and_key_count(s3: S3Client) -> None:
    for key in ("bar", "baz", "foo", "quxx"):
        await _put(s3, key)
    cases: list[tuple[dict[str, str | int], list[str], str]] = [
        ({"marker": "blah"}, ["foo", "quxx"], "false"),
        ({"marker": "zzz"}, [], "false"),
        ({"marker": "\n"}, ["bar", "baz", "foo", "quxx"], "false"),
        ({"marker": ""}, ["bar", "baz", "foo", "quxx"], "false"),
        ({"max_keys": 0}, [], "false"),
        ({"max_keys": 1}, ["bar"], "true"),
        ({"max_keys": 2, "marker": "baz"}, ["foo", "quxx"], "false"),
        ({"prefix": "\n"}, [], "false"),
        ({"prefix": "/"}, [], "false"),
    ]
    for params, keys, truncated in cases:
        root = await _list(s3, **params)
        assert (_keys(root), _text(root, "IsTruncated")) == (keys, truncated), params
        if "marker" in params:
            assert _text(root, "Marker") == params["marker"]
    assert _text(await _list(s3), "MaxKeys") == "1000"
    assert _text(await _list(s3, max_keys=0), "MaxKeys") == "0"
    v2 = await _list(s3, list_type=2)
    assert _text(v2, "KeyCount") == "4"
    zero = await _list(s3, list_type=2, max_keys=0)
    assert (_text(zero, "KeyCount"), _text(zero, "IsTruncated"), _keys(zero)) == ("0", "false", [])
    bad = await s3.send("GET", f"{B}?max-keys=blah")
    assert (bad.status_code, _code(bad)) == (400, "InvalidArgument")


async def test_listing_v2_start_after_with_continuation_and_owner(s3: S3Client) -> None:
    for key in ("bar", "baz", "foo", "quxx"):
        await _put(s3, key)
    first = await _list(s3, list_type=2, start_after="bar", max_keys=1)
    assert (_keys(first), _text(first, "StartAfter"), _text(first, "IsTruncated")) == (["baz"], "bar", "true")
    token = _text(first, "NextContinuationToken") or ""
    rest = await _list(s3, list_type=2, start_after="bar", continuation_token=token)
    assert _keys(rest) == ["foo", "quxx"]
    assert (_text(rest, "ContinuationToken"), _text(rest, "StartAfter")) == (token, "bar")
    assert (_text(rest, "IsTruncated"), _text(rest, "NextContinuationToken")) == ("false", None)
    assert _keys(await _list(s3, list_type=2, start_after="zzz")) == []
    assert _keys(await _list(s3, list_type=2, start_after="\n")) == ["bar", "baz", "foo", "quxx"]
    plain = await _list(s3, list_type=2)
    assert plain.find(f"{NS}Contents/{NS}Owner") is None  # fetch-owner defaults to false
    owned = await _list(s3, list_type=2, fetch_owner="true")
    assert owned.find(f"{NS}Contents/{NS}Owner/{NS}ID") is not None
    v1 = await _list(s3)
    assert v1.find(f"{NS}Contents/{NS}Owner/{NS}ID") is not None  # v1 always names the owner


async def test_listing_url_encoding_of_keys_prefixes_and_markers(s3: S3Client) -> None:
    for key in ("foo+1/bar", "foo/bar/xyzzy", "quux ab/thud", "asdf+b"):
        await _put(s3, key)
    for version in ({}, {"list_type": 2}):
        root = await _list(s3, delimiter="/", encoding_type="url", **version)
        assert (_keys(root), _prefixes(root)) == (["asdf%2Bb"], ["foo%2B1/", "foo/", "quux%20ab/"]), version
        assert (_text(root, "Delimiter"), _text(root, "EncodingType")) == ("/", "url")
    v1 = await _list(s3, delimiter="/", encoding_type="url", marker="a b", prefix="", max_keys=1)
    assert (_text(v1, "Marker"), _text(v1, "NextMarker")) == ("a%20b", "asdf%2Bb")
    v2 = await _list(s3, list_type=2, encoding_type="url", start_after="a b", prefix="quux ")
    assert (_text(v2, "StartAfter"), _text(v2, "Prefix"), _keys(v2)) == ("a%20b", "quux%20", ["quux%20ab/thud"])
    plain = await _list(s3, prefix="quux ")
    assert (_text(plain, "Prefix"), _keys(plain)) == ("quux ", ["quux ab/thud"])


async def test_listing_returns_each_objects_data(s3: S3Client) -> None:
    put = await _put(s3, "data.txt", b"12345")
    root = await _list(s3, list_type=2)
    entry = root.find(f"{NS}Contents")
    assert entry is not None
    assert (entry.findtext(f"{NS}ETag"), entry.findtext(f"{NS}Size")) == (put.headers["etag"], "5")
    assert entry.findtext(f"{NS}StorageClass") == "STANDARD"
    head = await s3.send("HEAD", _path("data.txt"))
    from email.utils import parsedate_to_datetime

    listed = (entry.findtext(f"{NS}LastModified") or "")[:19]
    assert parsedate_to_datetime(head.headers["last-modified"]).strftime("%Y-%m-%dT%H:%M:%S") == listed


# --- put, get, head, delete -------------------------------------------------------------------------------


async def test_empty_objects_and_etags(s3: S3Client) -> None:
    put = await _put(s3, "empty", b"")
    assert put.headers["etag"] == f'"{hashlib.md5(b"").hexdigest()}"'
    head = await s3.send("HEAD", _path("empty"))
    assert (head.status_code, head.headers["content-length"]) == (200, "0")
    got = await s3.send("GET", _path("empty"))
    assert (got.status_code, got.content) == (200, b"")
    bar = await _put(s3, "bar", b"bar")
    assert bar.headers["etag"] == '"37b51d194a7513e45b56f6524f2d51f2"'
    await _put(s3, "bar", b"new")
    assert (await s3.send("GET", _path("bar"))).content == b"new"


async def test_missing_objects_and_errors_carry_the_request_id(s3: S3Client) -> None:
    got = await s3.send("GET", _path("nope"))
    assert (got.status_code, _code(got)) == (404, "NoSuchKey")
    assert fromstring(got.content).findtext("RequestId") == got.headers["x-amz-request-id"]
    head = await s3.send("HEAD", _path("nope"))
    assert (head.status_code, head.content) == (404, b"")
    assert (await s3.send("DELETE", _path("nope"))).status_code == 204


async def test_metadata_and_stored_headers_round_trip_and_are_replaced_by_a_new_put(s3: S3Client) -> None:
    await _put(
        s3,
        "meta",
        b"x",
        **{
            "x-amz-meta-meta1": "mymeta",
            "x-amz-meta-empty": "",
            "Cache-Control": "public, max-age=14400",
            "Expires": "Thu, 01 Dec 2094 16:00:00 GMT",
            "Content-Type": "text/bla",
            "Content-Language": "de",
            "Content-Disposition": 'attachment; filename="x.txt"',
            "Content-Encoding": "gzip",
        },
    )
    for method in ("GET", "HEAD"):
        r = await s3.send(method, _path("meta"))
        assert r.headers["x-amz-meta-meta1"] == "mymeta"
        assert r.headers.get("x-amz-meta-empty") == ""
        assert r.headers["cache-control"] == "public, max-age=14400"
        assert r.headers["expires"] == "Thu, 01 Dec 2094 16:00:00 GMT"
        assert r.headers["content-type"] == "text/bla"
        assert r.headers["content-language"] == "de"
        assert r.headers["content-encoding"] == "gzip"
    await _put(s3, "meta", b"y")
    r = await s3.send("HEAD", _path("meta"))
    assert not any(name.startswith("x-amz-meta-") for name in r.headers)
    assert "cache-control" not in r.headers


async def test_response_header_overrides(s3: S3Client) -> None:
    await _put(s3, "o.txt", b"hi", **{"Content-Type": "text/plain"})
    overrides = {
        "response-cache-control": ("cache-control", "no-cache"),
        "response-content-disposition": ("content-disposition", "bla"),
        "response-content-encoding": ("content-encoding", "aaa"),
        "response-content-language": ("content-language", "esperanto"),
        "response-content-type": ("content-type", "foo/bar"),
        "response-expires": ("expires", "Thu, 01 Dec 2094 16:00:00 GMT"),
    }
    query = "&".join(f"{k}={quote(v, safe='')}" for k, (_, v) in overrides.items())
    r = await s3.send("GET", f"{_path('o.txt')}?{query}")
    assert r.status_code == 200
    for header, value in overrides.values():
        assert r.headers[header] == value, header


async def test_object_acls_answer_the_private_acl_and_change_nothing(s3: S3Client) -> None:
    await _put(s3, "acl.txt", b"keep")
    got = await s3.send("GET", f"{_path('acl.txt')}?acl")
    assert got.status_code == 200 and fromstring(got.content).findtext(f".//{NS}Permission") == "FULL_CONTROL"
    for headers in ({"x-amz-acl": "private"}, {}):
        r = await s3.send("PUT", f"{_path('acl.txt')}?acl", headers=headers)
        assert r.status_code == 200, r.text
    public = await s3.send("PUT", f"{_path('acl.txt')}?acl", headers={"x-amz-acl": "public-read"})
    assert (public.status_code, _code(public)) == (501, "NotImplemented")
    assert (await s3.send("GET", _path("acl.txt"))).content == b"keep"
    for sub in ("tagging", "retention", "legal-hold", "torrent"):
        r = await s3.send("PUT", f"{_path('acl.txt')}?{sub}", body=b"<x/>")
        assert (r.status_code, _code(r)) == (501, "NotImplemented"), sub
        assert (await s3.send("GET", _path("acl.txt"))).content == b"keep"
    missing = await s3.send("GET", f"{_path('nope')}?acl")
    assert (missing.status_code, _code(missing)) == (404, "NoSuchKey")


async def test_content_md5_is_checked(s3: S3Client) -> None:
    good = base64.b64encode(hashlib.md5(b"bar").digest()).decode()
    cases = [
        ("YWJyYWNhZGFicmE=", 400, "InvalidDigest"),  # not 16 bytes
        ("", 400, "InvalidDigest"),
        ("not base64!", 400, "InvalidDigest"),
        ("rL0Y20xC+Fzt72VPzMSk2A==", 400, "BadDigest"),
        (good, 200, ""),
    ]
    for md5, status, code in cases:
        r = await s3.send("PUT", _path("md5"), body=b"bar", headers={"Content-MD5": md5})
        assert r.status_code == status, (md5, r.text)
        if code:
            assert _code(r) == code, md5
    assert (await s3.send("GET", _path("md5"))).content == b"bar"


async def test_keys_with_special_characters(s3: S3Client) -> None:
    names = [" ", '"', "$", "%", "&", "'", "<", ">", "_", "_ ", "_ _", "__", "+", "a+b c", "ä/ö ü", "?versionId", "#"]
    for name in names:
        await _put(s3, name)
    assert _keys(await _list(s3)) == sorted(names, key=lambda n: n.encode())
    for name in names:
        r = await s3.send("GET", _path(name))
        assert (r.status_code, r.content) == (200, name.encode()), name
    assert _keys(await _list(s3, prefix="_", delimiter=" ")) == ["_", "__"]


# --- ranges and conditions ------------------------------------------------------------------------------


async def test_ranges(s3: S3Client) -> None:
    await _put(s3, "r", b"testcontent")  # 11 bytes
    cases = [
        ("bytes=4-7", 206, b"cont", "bytes 4-7/11"),
        ("bytes=4-", 206, b"content", "bytes 4-10/11"),
        ("bytes=-7", 206, b"content", "bytes 4-10/11"),
        ("bytes=-20", 206, b"testcontent", "bytes 0-10/11"),  # a suffix longer than the object: all of it
        ("bytes=0-100", 206, b"testcontent", "bytes 0-10/11"),
        ("bytes=10-10", 206, b"t", "bytes 10-10/11"),
        ("bytes=0-1,3-4", 200, b"testcontent", None),  # several ranges: ignored, the whole object
        ("bytes=7-3", 200, b"testcontent", None),  # not a valid range: ignored
        ("chars=0-1", 200, b"testcontent", None),
    ]
    for header, status, body, content_range in cases:
        r = await s3.send("GET", _path("r"), headers={"Range": header})
        assert (r.status_code, r.content, r.headers.get("content-range")) == (status, body, content_range), header
        assert r.headers["content-length"] == str(len(body))
    for header in ("bytes=40-50", "bytes=11-", "bytes=-0"):
        r = await s3.send("GET", _path("r"), headers={"Range": header})
        assert (r.status_code, _code(r), r.headers.get("content-range")) == (416, "InvalidRange", "bytes */11"), header
    await _put(s3, "empty", b"")
    r = await s3.send("GET", _path("empty"), headers={"Range": "bytes=40-50"})
    assert (r.status_code, _code(r)) == (416, "InvalidRange")


async def test_conditional_gets(s3: S3Client) -> None:
    put = await _put(s3, "c", b"bar")
    etag = put.headers["etag"]
    modified = (await s3.send("HEAD", _path("c"))).headers["last-modified"]
    old, future = "Sat, 29 Oct 1994 19:43:31 GMT", "Fri, 29 Oct 2100 19:43:31 GMT"
    cases = [
        ({"If-Match": etag}, 200),
        ({"If-Match": '"ABCORZ"'}, 412),
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": '"ABCORZ"'}, 200),
        ({"If-Modified-Since": old}, 200),
        ({"If-Modified-Since": modified}, 304),
        ({"If-Modified-Since": future}, 304),  # as S3 answers: not modified since then
        ({"If-Unmodified-Since": old}, 412),
        ({"If-Unmodified-Since": future}, 200),
        ({"If-None-Match": etag, "If-Modified-Since": old}, 304),  # If-None-Match decides
    ]
    for headers, status in cases:
        r = await s3.send("GET", _path("c"), headers=headers)
        assert r.status_code == status, headers
        if status == 412:
            assert _code(r) == "PreconditionFailed"


async def test_conditional_puts(s3: S3Client) -> None:
    put = await _put(s3, "w", b"v1")
    cases = [
        ({"If-Match": put.headers["etag"]}, "w", 200),
        ({"If-Match": '"ABCORZ"'}, "w", 412),
        ({"If-None-Match": '"ABCORZ"'}, "w", 200),  # an ETag list the current one is not in
        ({"If-None-Match": "*"}, "w", 412),
        ({"If-None-Match": "*"}, "new", 200),
        ({"If-Match": '"ABCORZ"'}, "missing", 412),
    ]
    for headers, key, status in cases:
        r = await s3.send("PUT", _path(key), body=b"v2", headers=headers)
        assert r.status_code == status, (headers, key, r.text)
    current = (await s3.send("HEAD", _path("w"))).headers["etag"]
    r = await s3.send("PUT", _path("w"), body=b"v3", headers={"If-None-Match": current})
    assert (r.status_code, _code(r)) == (412, "PreconditionFailed")
