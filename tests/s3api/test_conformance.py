"""What a correct S3 server answers at object level, checked case by case (in-process, signed by botocore).

Grouped by area as the public conformance suites group them (listing, get/head/put, ranges, conditions, copy,
multipart, deletes, names); each case is one request and its expected status, code, headers or body. The
suites run with one fixed bucket, which is how Pockity's tenants see their files.
"""

from __future__ import annotations

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
