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


# --- copy -----------------------------------------------------------------------------------------------


async def _copy(s3: S3Client, source: str, target: str, **headers: str) -> httpx.Response:
    return await s3.send("PUT", _path(target), headers={"x-amz-copy-source": f"pockity/{quote(source)}", **headers})


async def test_copy_keeps_or_replaces_metadata(s3: S3Client) -> None:
    await _put(s3, "src", b"abc", **{"Content-Type": "audio/ogg", "x-amz-meta-key1": "value1", "Cache-Control": "a"})
    kept = await _copy(s3, "src", "kept")
    assert kept.status_code == 200, kept.text
    r = await s3.send("HEAD", _path("kept"))
    assert (r.headers["content-type"], r.headers["x-amz-meta-key1"], r.headers["content-length"]) == (
        "audio/ogg",
        "value1",
        "3",
    )
    replaced = await _copy(
        s3,
        "src",
        "replaced",
        **{"x-amz-metadata-directive": "REPLACE", "Content-Type": "audio/mpeg", "x-amz-meta-key2": "value2"},
    )
    assert replaced.status_code == 200, replaced.text
    r = await s3.send("HEAD", _path("replaced"))
    assert (r.headers["content-type"], r.headers["x-amz-meta-key2"]) == ("audio/mpeg", "value2")
    assert "x-amz-meta-key1" not in r.headers and "cache-control" not in r.headers
    itself = await _copy(s3, "src", "src", **{"x-amz-metadata-directive": "REPLACE", "x-amz-meta-foo": "bar"})
    assert itself.status_code == 200
    r = await s3.send("GET", _path("src"))
    assert (r.content, r.headers["x-amz-meta-foo"]) == (b"abc", "bar") and "x-amz-meta-key1" not in r.headers
    await _put(s3, "zero", b"")
    assert (await _copy(s3, "zero", "zero2")).status_code == 200
    assert (await s3.send("HEAD", _path("zero2"))).headers["content-length"] == "0"
    spaced = await _copy(s3, "src", "a b+c?d")
    assert spaced.status_code == 200 and (await _copy(s3, "a b+c?d", "back")).status_code == 200


async def test_copy_errors_and_source_conditions(s3: S3Client) -> None:
    put = await _put(s3, "src", b"abc")
    etag = put.headers["etag"]
    old, future = "Sat, 29 Oct 1994 19:43:31 GMT", "Fri, 29 Oct 2100 19:43:31 GMT"
    cases: list[tuple[dict[str, str], int, str]] = [
        ({"x-amz-copy-source-if-match": etag}, 200, ""),
        ({"x-amz-copy-source-if-match": '"ABCORZ"'}, 412, "PreconditionFailed"),
        ({"x-amz-copy-source-if-none-match": '"ABCORZ"'}, 200, ""),
        ({"x-amz-copy-source-if-none-match": etag}, 412, "PreconditionFailed"),
        ({"x-amz-copy-source-if-modified-since": old}, 200, ""),
        ({"x-amz-copy-source-if-modified-since": future}, 412, "PreconditionFailed"),
        ({"x-amz-copy-source-if-unmodified-since": future}, 200, ""),
        ({"x-amz-copy-source-if-unmodified-since": old}, 412, "PreconditionFailed"),
        ({"x-amz-metadata-directive": "BOGUS"}, 400, "InvalidArgument"),
    ]
    for headers, status, code in cases:
        r = await _copy(s3, "src", "dst", **headers)
        assert r.status_code == status, (headers, r.text)
        if code:
            assert _code(r) == code
    itself = await _copy(s3, "src", "src")
    assert (itself.status_code, _code(itself)) == (400, "InvalidRequest")
    missing = await _copy(s3, "nope", "dst")
    assert (missing.status_code, _code(missing)) == (404, "NoSuchKey")
    other = await s3.send("PUT", _path("dst"), headers={"x-amz-copy-source": "pockity-fake/src"})
    assert (other.status_code, _code(other)) == (404, "NoSuchBucket")


# --- delete objects -------------------------------------------------------------------------------------


async def test_delete_objects_reports_missing_keys_as_deleted(s3: S3Client) -> None:
    for key in ("key0", "key1", "key2"):
        await _put(s3, key)
    body = ("<Delete>" + "".join(f"<Object><Key>key{i}</Key></Object>" for i in range(3)) + "</Delete>").encode()
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    for _ in range(2):  # the second time nothing is there: still "Deleted"
        r = await s3.send("POST", f"{B}?delete", body=body, headers={"Content-MD5": md5})
        assert r.status_code == 200, r.text
        root = fromstring(r.content)
        assert [d.findtext(f"{NS}Key") for d in root.findall(f"{NS}Deleted")] == ["key0", "key1", "key2"]
        assert root.findall(f"{NS}Error") == []
    assert _keys(await _list(s3)) == []
    quiet = b"<Delete><Quiet>true</Quiet><Object><Key>x</Key></Object></Delete>"
    r = await s3.send("POST", f"{B}?delete", body=quiet)
    assert r.status_code == 200 and list(fromstring(r.content)) == []
    many = "<Delete>" + "<Object><Key>k</Key></Object>" * 1001 + "</Delete>"
    r = await s3.send("POST", f"{B}?delete", body=many.encode())
    assert (r.status_code, _code(r)) == (400, "MalformedXML")
    for bad in (b"", b"<Delete/>", b"<nope"):
        r = await s3.send("POST", f"{B}?delete", body=bad)
        assert (r.status_code, _code(r)) == (400, "MalformedXML"), bad


# --- multipart ------------------------------------------------------------------------------------------

PART = 5 * 1024 * 1024


async def _create(s3: S3Client, key: str, **headers: str) -> str:
    r = await s3.send("POST", f"{_path(key)}?uploads", headers=headers)
    assert r.status_code == 200, r.text
    return fromstring(r.content).findtext(f"{NS}UploadId") or ""


async def _part(s3: S3Client, key: str, upload_id: str, number: int, body: bytes) -> httpx.Response:
    return await s3.send("PUT", f"{_path(key)}?partNumber={number}&uploadId={upload_id}", body=body)


def _complete_body(parts: list[tuple[int, str]]) -> bytes:
    items = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in parts)
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


async def _complete(s3: S3Client, key: str, upload_id: str, parts: list[tuple[int, str]]) -> httpx.Response:
    return await s3.send("POST", f"{_path(key)}?uploadId={upload_id}", body=_complete_body(parts))


async def test_multipart_round_trip_etag_parts_and_listing(s3: S3Client) -> None:
    upload_id = await _create(s3, "mp", **{"Content-Type": "text/bla", "x-amz-meta-foo": "bar"})
    data = [bytes([65 + i]) * PART for i in range(2)] + [b"tail"]
    etags = []
    for number, body in enumerate(data, 1):
        r = await _part(s3, "mp", upload_id, number, body)
        assert r.status_code == 200, r.text
        etags.append(r.headers["etag"])
    again = await _part(s3, "mp", upload_id, 2, data[1])  # a part sent again replaces itself
    assert again.status_code == 200
    listed = fromstring((await s3.send("GET", f"{_path('mp')}?uploadId={upload_id}&max-parts=2")).content)
    assert [p.findtext(f"{NS}PartNumber") for p in listed.findall(f"{NS}Part")] == ["1", "2"]
    assert (listed.findtext(f"{NS}IsTruncated"), listed.findtext(f"{NS}NextPartNumberMarker")) == ("true", "2")
    rest = fromstring((await s3.send("GET", f"{_path('mp')}?uploadId={upload_id}&part-number-marker=2")).content)
    assert [p.findtext(f"{NS}Size") for p in rest.findall(f"{NS}Part")] == ["4"]
    assert rest.findtext(f"{NS}IsTruncated") == "false"
    uploads = fromstring((await s3.send("GET", f"{B}?uploads")).content)
    assert [u.findtext(f"{NS}UploadId") for u in uploads.findall(f"{NS}Upload")] == [upload_id]
    done = await _complete(s3, "mp", upload_id, list(zip([1, 2, 3], etags, strict=True)))
    assert done.status_code == 200, done.text
    md5s = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
    expected = f'"{hashlib.md5(md5s).hexdigest()}-3"'
    assert fromstring(done.content).findtext(f"{NS}ETag") == expected
    got = await s3.send("GET", _path("mp"))
    assert got.content == b"".join(data) and got.headers["etag"] == expected
    assert (got.headers["content-type"], got.headers["x-amz-meta-foo"]) == ("text/bla", "bar")
    ranged = await s3.send("GET", _path("mp"), headers={"Range": f"bytes={PART - 1}-{PART}"})
    assert (ranged.status_code, ranged.content) == (206, b"AB")
    part2 = await s3.send("HEAD", f"{_path('mp')}?partNumber=2")
    assert (part2.status_code, part2.headers["x-amz-mp-parts-count"]) == (206, "3")
    beyond = await s3.send("GET", f"{_path('mp')}?partNumber=4")
    assert (beyond.status_code, _code(beyond)) == (416, "InvalidPartNumber")
    assert (await s3.send("GET", f"{B}?uploads")).content.count(b"<Upload>") == 0


async def test_multipart_errors(s3: S3Client) -> None:
    upload_id = await _create(s3, "e")
    small = await _part(s3, "e", upload_id, 1, b"x" * 100)
    second = await _part(s3, "e", upload_id, 2, b"y" * 100)
    tags = [small.headers["etag"], second.headers["etag"]]
    cases: list[tuple[bytes, int, str]] = [
        (b"", 400, "MalformedXML"),
        (b"<CompleteMultipartUpload/>", 400, "MalformedXML"),
        (_complete_body([(9999, tags[0])]), 400, "InvalidPart"),
        (_complete_body([(1, '"ffffffffffffffffffffffffffffffff"')]), 400, "InvalidPart"),
        (_complete_body([(2, tags[1]), (1, tags[0])]), 400, "InvalidPartOrder"),
        (_complete_body([(1, tags[0]), (1, tags[0])]), 400, "InvalidPartOrder"),  # the same part twice
        (_complete_body([(1, tags[0]), (2, tags[1])]), 400, "EntityTooSmall"),
    ]
    for body, status, code in cases:
        r = await s3.send("POST", f"{_path('e')}?uploadId={upload_id}", body=body)
        assert (r.status_code, _code(r)) == (status, code), body[:80]
    one = await _complete(s3, "e", upload_id, [(1, tags[0])])  # a single small part is a whole object
    assert one.status_code == 200, one.text
    assert (await s3.send("GET", _path("e"))).content == b"x" * 100
    bogus = "2~nosuchupload"
    for method, suffix in (("PUT", f"partNumber=1&uploadId={bogus}"), ("GET", f"uploadId={bogus}")):
        r = await s3.send(method, f"{_path('e')}?{suffix}", body=b"x" if method == "PUT" else b"")
        assert (r.status_code, _code(r)) == (404, "NoSuchUpload"), method
    r = await _complete(s3, "e", bogus, [(1, tags[0])])
    assert (r.status_code, _code(r)) == (404, "NoSuchUpload")
    aborted = await _create(s3, "a")
    assert (await s3.send("DELETE", f"{_path('a')}?uploadId={aborted}")).status_code == 204
    twice = await s3.send("DELETE", f"{_path('a')}?uploadId={aborted}")
    assert (twice.status_code, _code(twice)) == (404, "NoSuchUpload")
    for number in ("0", "10001", "x"):
        r = await s3.send("PUT", f"{_path('e')}?partNumber={number}&uploadId={upload_id}", body=b"x")
        assert (r.status_code, _code(r)) == (400, "InvalidArgument"), number


async def test_upload_part_copy_ranges(s3: S3Client) -> None:
    await _put(s3, "source", b"0123456789")
    upload_id = await _create(s3, "dest")
    headers = {"x-amz-copy-source": "pockity/source"}
    whole = await s3.send("PUT", f"{_path('dest')}?partNumber=1&uploadId={upload_id}", headers=headers)
    assert whole.status_code == 200, whole.text
    for value in ("0-2", "bytes=0", "bytes=hello-world", "bytes=0-bar", "bytes=hello-", "bytes=0-2,3-5"):
        r = await s3.send(
            "PUT",
            f"{_path('dest')}?partNumber=2&uploadId={upload_id}",
            headers={**headers, "x-amz-copy-source-range": value},
        )
        assert (r.status_code, _code(r)) == (400, "InvalidArgument"), value
    r = await s3.send(
        "PUT",
        f"{_path('dest')}?partNumber=2&uploadId={upload_id}",
        headers={**headers, "x-amz-copy-source-range": "bytes=0-21"},
    )
    assert (r.status_code, _code(r)) == (416, "InvalidRange")
    etag = fromstring(whole.content).findtext(f"{NS}ETag") or ""
    done = await _complete(s3, "dest", upload_id, [(1, etag)])
    assert done.status_code == 200, done.text
    assert (await s3.send("GET", _path("dest"))).content == b"0123456789"


# --- request headers and presigned URLs -----------------------------------------------------------------


async def test_content_length_rules(s3: S3Client) -> None:
    for value, status, code in (("-1", 400, "InvalidArgument"), ("abc", 400, "InvalidArgument")):
        r = await s3.send("PUT", _path("cl"), body=b"", headers={"Content-Length": value})
        assert (r.status_code, _code(r)) == (status, code), value
    assert _keys(await _list(s3)) == []


async def test_presigned_urls(s3: S3Client) -> None:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    await _put(s3, "p.txt", b"signed")

    def presign(method: str, expires: int) -> str:
        request = AWSRequest(method=method, url=f"http://s3.pockity.test{_path('p.txt')}")
        S3SigV4QueryAuth(Credentials(s3.access_key, s3.secret), "s3", "us-east-1", expires=expires).add_auth(request)
        return request.prepare().url

    ok = await s3.http.get(presign("GET", 100000))
    assert (ok.status_code, ok.content) == (200, b"signed")
    for expires, code in ((0, "AccessDenied"), (-7, "AccessDenied"), (609901, "AuthorizationQueryParametersError")):
        r = await s3.http.get(presign("GET", expires))  # expired at once, in the past, more than 7 days
        assert (r.status_code, _code(r)) == (403, code), expires
    put = await s3.http.put(presign("PUT", 300), content=b"new")
    assert put.status_code == 200
    assert (await s3.send("GET", _path("p.txt"))).content == b"new"


async def test_object_versions_list_each_key_once_as_the_null_version(s3: S3Client) -> None:
    for key in ("a", "b/1", "b/2", "c"):
        await _put(s3, key)
    root = await _list(s3, versions="")
    versions = root.findall(f"{NS}Version")
    assert [v.findtext(f"{NS}Key") for v in versions] == ["a", "b/1", "b/2", "c"]
    assert {(v.findtext(f"{NS}VersionId"), v.findtext(f"{NS}IsLatest")) for v in versions} == {("null", "true")}
    page = await _list(s3, versions="", max_keys=2, delimiter="/")
    assert [v.findtext(f"{NS}Key") for v in page.findall(f"{NS}Version")] == ["a"]
    assert (_prefixes(page), _text(page, "IsTruncated"), _text(page, "NextKeyMarker")) == (["b/"], "true", "b/")
    rest = await _list(s3, versions="", key_marker="b/", delimiter="/")
    assert [v.findtext(f"{NS}Key") for v in rest.findall(f"{NS}Version")] == ["c"]
    assert _text(rest, "IsTruncated") == "false"
