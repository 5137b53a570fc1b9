"""ListObjectVersions in-process: Pockity keeps one version per object, listed as its `null`, latest version,
with S3's prefix, delimiter, key-marker paging, max-keys and encoding-type."""

from __future__ import annotations

from urllib.parse import quote
from xml.etree.ElementTree import Element, fromstring

import httpx

from tests.fixtures.users import TestUser
from tests.s3api.conftest import S3Client, s3_client_for

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
NAMES = ("a/1.txt", "a/2.txt", "b.txt", "c d+e.txt")


async def _put_all(s3: S3Client) -> dict[str, str]:
    etags = {}
    for name in NAMES:
        r = await s3.send("PUT", "/pockity/" + quote(name), body=name.encode())
        assert r.status_code == 200, r.text
        etags[name] = r.headers["etag"]
    return etags


async def _versions(s3: S3Client, query: str = "") -> Element:
    r = await s3.send("GET", "/pockity?versions" + (f"&{query}" if query else ""))
    assert r.status_code == 200, r.text
    root = fromstring(r.content)
    assert root.tag == f"{NS}ListVersionsResult"
    return root


def _keys(root: Element) -> list[str]:
    return [v.findtext(f"{NS}Key") or "" for v in root.iter(f"{NS}Version")]


def _prefixes(root: Element) -> list[str]:
    return [p.findtext(f"{NS}Prefix") or "" for p in root.iter(f"{NS}CommonPrefixes")]


def _text(root: Element, name: str) -> str | None:
    return root.findtext(f"{NS}{name}")


async def test_each_object_is_its_null_latest_version(s3: S3Client, user: TestUser) -> None:
    etags = await _put_all(s3)
    root = await _versions(s3)
    assert [child.tag.removeprefix(NS) for child in root][:6] == [
        "Name",
        "Prefix",
        "KeyMarker",
        "VersionIdMarker",
        "MaxKeys",
        "IsTruncated",
    ]
    assert (_text(root, "Name"), _text(root, "IsTruncated"), _text(root, "MaxKeys")) == ("pockity", "false", "1000")
    assert _text(root, "NextKeyMarker") is None and list(root.iter(f"{NS}DeleteMarker")) == []
    assert _keys(root) == list(NAMES)
    for version in root.iter(f"{NS}Version"):
        key = version.findtext(f"{NS}Key") or ""
        assert version.findtext(f"{NS}VersionId") == "null"
        assert version.findtext(f"{NS}IsLatest") == "true"
        assert version.findtext(f"{NS}ETag") == etags[key]
        assert version.findtext(f"{NS}Size") == str(len(key.encode()))
        assert version.findtext(f"{NS}StorageClass") == "STANDARD"
        assert version.findtext(f"{NS}Owner/{NS}ID") == user.id
        assert (version.findtext(f"{NS}LastModified") or "").endswith("Z")
    # A deleted object is gone: no delete marker, no older version.
    assert (await s3.send("DELETE", "/pockity/b.txt")).status_code == 204
    assert _keys(await _versions(s3)) == ["a/1.txt", "a/2.txt", "c d+e.txt"]


async def test_prefix_delimiter_and_encoding(s3: S3Client) -> None:
    await _put_all(s3)
    folded = await _versions(s3, "delimiter=%2F")
    assert (_keys(folded), _prefixes(folded), _text(folded, "Delimiter")) == (["b.txt", "c d+e.txt"], ["a/"], "/")
    inside = await _versions(s3, "prefix=a%2F")
    assert (_keys(inside), _text(inside, "Prefix")) == (["a/1.txt", "a/2.txt"], "a/")
    encoded = await _versions(s3, "encoding-type=url&prefix=c%20&key-marker=c")
    assert (_keys(encoded), _text(encoded, "EncodingType")) == (["c%20d%2Be.txt"], "url")
    assert (_text(encoded, "Prefix"), _text(encoded, "KeyMarker")) == ("c%20", "c")
    dotted = await _versions(s3, "delimiter=.&prefix=a%2F")  # any delimiter string, as for ListObjects
    assert (_keys(dotted), _prefixes(dotted)) == ([], ["a/1.", "a/2."])
    assert _keys(await _versions(s3, "prefix=zzz")) == []


async def test_pages_follow_next_key_marker_to_the_end(s3: S3Client) -> None:
    await _put_all(s3)
    first = await _versions(s3, "max-keys=2")
    assert (_keys(first), _text(first, "IsTruncated")) == (["a/1.txt", "a/2.txt"], "true")
    assert (_text(first, "NextKeyMarker"), _text(first, "NextVersionIdMarker")) == ("a/2.txt", "null")
    rest = await _versions(s3, "max-keys=2&key-marker=a%2F2.txt&version-id-marker=null")
    assert (_keys(rest), _text(rest, "IsTruncated"), _text(rest, "NextKeyMarker")) == (
        ["b.txt", "c d+e.txt"],
        "false",
        None,
    )
    assert (_text(rest, "KeyMarker"), _text(rest, "VersionIdMarker")) == ("a/2.txt", "null")
    # With a delimiter a folder is one entry, and a page ending on it continues past the whole folder.
    seen, marker = [], ""
    for _ in range(5):
        page = await _versions(s3, f"delimiter=%2F&max-keys=1&key-marker={quote(marker, safe='')}")
        seen += _prefixes(page) + _keys(page)
        if _text(page, "IsTruncated") == "false":
            break
        marker = _text(page, "NextKeyMarker") or ""
    assert seen == ["a/", "b.txt", "c d+e.txt"]
    empty = await _versions(s3, "max-keys=0")
    assert (_keys(empty), _text(empty, "IsTruncated")) == ([], "false")


async def test_markers_and_parameters_s3_refuses(s3: S3Client) -> None:
    await _put_all(s3)
    for query in (
        "version-id-marker=null",  # without a key marker
        "key-marker=a&version-id-marker=3HL4kqtJlcpXroDTDmJ",
        "key-marker=a%01",  # echoed in the answer: XML cannot carry it
        "max-keys=-1",
        "encoding-type=base64",
    ):
        r = await s3.send("GET", f"/pockity?versions&{query}")
        assert r.status_code == 400, (query, r.text)
        assert fromstring(r.content).findtext("Code") == "InvalidArgument", query


async def test_a_key_without_list_scope_cannot_list_versions(
    client: httpx.AsyncClient, s3http: httpx.AsyncClient, user: TestUser, s3: S3Client
) -> None:
    await _put_all(s3)
    reader = await s3_client_for(client, s3http, user, scopes=["read"])
    r = await reader.send("GET", "/pockity?versions")
    assert r.status_code == 403 and fromstring(r.content).findtext("Code") == "AccessDenied"
    scoped = await s3_client_for(client, s3http, user, scopes=["list"], prefix="a")
    assert _keys(await _versions(scoped)) == ["a/1.txt", "a/2.txt"]
