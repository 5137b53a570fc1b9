"""S3's XML: error documents, operation results, and the two request bodies S3 takes as XML (DeleteObjects and
CompleteMultipartUpload), built and read with the standard library.

Request bodies are capped before parsing (`MAX_REQUEST_XML`) and parsed by expat with any DOCTYPE refused
(S3 never sends one), so no entity can be declared: no expansion bombs, no external entities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote
from xml.etree.ElementTree import Element, SubElement, TreeBuilder, tostring
from xml.parsers import expat

from pockity.s3api.errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_REQUEST_XML = 2 * 1024 * 1024
MAX_DELETE_KEYS = 1000


def document(root: Element) -> bytes:
    """The bytes of an XML document with S3's declaration."""
    body: bytes = tostring(root, encoding="utf-8", xml_declaration=False)
    return _DECLARATION + body


def error_document(err: S3Error, resource: str, request_id: str) -> bytes:
    """`<Error><Code/><Message/><Resource/><RequestId/>...</Error>` (S3 puts no namespace on errors)."""
    root = Element("Error")
    for name, value in (("Code", err.code), ("Message", err.message), *err.extra.items()):
        SubElement(root, name).text = value
    SubElement(root, "Resource").text = resource
    SubElement(root, "RequestId").text = request_id
    return document(root)


def timestamp(at: datetime) -> str:
    """S3's time format: ISO 8601 UTC with milliseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _root(name: str) -> Element:
    return Element(name, xmlns=NAMESPACE)


def _add(parent: Element, name: str, text: object) -> Element:
    child = SubElement(parent, name)
    child.text = str(text).lower() if isinstance(text, bool) else str(text)
    return child


@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str


def _owner(parent: Element, owner: Owner, name: str = "Owner") -> None:
    element = SubElement(parent, name)
    _add(element, "ID", owner.id)
    _add(element, "DisplayName", owner.display_name)


def list_buckets(owner: Owner, buckets: Iterable[tuple[str, datetime]]) -> bytes:
    root = _root("ListAllMyBucketsResult")
    _owner(root, owner)
    listing = SubElement(root, "Buckets")
    for name, created in buckets:
        bucket = SubElement(listing, "Bucket")
        _add(bucket, "Name", name)
        _add(bucket, "CreationDate", timestamp(created))
    return document(root)


def location(region: str) -> bytes:
    """GetBucketLocation: empty for us-east-1, as S3 answers."""
    root = _root("LocationConstraint")
    if region != "us-east-1":
        root.text = region
    return document(root)


def private_acl(owner: Owner) -> bytes:
    """The private canned ACL: the owner has FULL_CONTROL (tools that ask for ACLs get the truth)."""
    root = _root("AccessControlPolicy")
    _owner(root, owner)
    grant = SubElement(SubElement(root, "AccessControlList"), "Grant")
    grantee = SubElement(
        grant, "Grantee", {"xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance", "xsi:type": "CanonicalUser"}
    )
    _add(grantee, "ID", owner.id)
    _add(grantee, "DisplayName", owner.display_name)
    _add(grant, "Permission", "FULL_CONTROL")
    return document(root)


@dataclass(frozen=True)
class Entry:
    key: str
    last_modified: datetime
    etag: str  # without quotes
    size: int


@dataclass(frozen=True)
class Listing:
    """A page of a bucket listing, whichever version of ListObjects asked for it."""

    bucket: str
    prefix: str
    delimiter: str | None
    max_keys: int
    entries: list[Entry]
    common_prefixes: list[str]
    is_truncated: bool
    url_encoded: bool  # EncodingType=url: keys and prefixes percent-encoded, the type echoed


def url_encoded(value: str) -> str:
    """EncodingType=url: percent-encoding with '/' kept and a space as %20 (what S3 sends and clients undo)."""
    return quote(value, safe="/")


def _encode(value: str, listing: Listing) -> str:
    return url_encoded(value) if listing.url_encoded else value


def _listing_common(root: Element, listing: Listing) -> None:
    _add(root, "Name", listing.bucket)
    _add(root, "Prefix", _encode(listing.prefix, listing))
    if listing.delimiter is not None:
        _add(root, "Delimiter", _encode(listing.delimiter, listing))
    _add(root, "MaxKeys", listing.max_keys)
    if listing.url_encoded:
        _add(root, "EncodingType", "url")
    _add(root, "IsTruncated", listing.is_truncated)


def _listing_entries(root: Element, listing: Listing, owner: Owner | None) -> None:
    for entry in listing.entries:
        item = SubElement(root, "Contents")
        _add(item, "Key", _encode(entry.key, listing))
        _add(item, "LastModified", timestamp(entry.last_modified))
        _add(item, "ETag", f'"{entry.etag}"')
        _add(item, "Size", entry.size)
        if owner is not None:
            _owner(item, owner)
        _add(item, "StorageClass", "STANDARD")
    for prefix in listing.common_prefixes:
        _add(SubElement(root, "CommonPrefixes"), "Prefix", _encode(prefix, listing))


def list_objects_v2(
    listing: Listing,
    *,
    continuation_token: str | None,
    next_token: str | None,
    start_after: str | None,
    owner: Owner | None,
) -> bytes:
    root = _root("ListBucketResult")
    _listing_common(root, listing)
    _add(root, "KeyCount", len(listing.entries) + len(listing.common_prefixes))
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if next_token is not None:
        _add(root, "NextContinuationToken", next_token)
    if start_after is not None:
        _add(root, "StartAfter", _encode(start_after, listing))
    _listing_entries(root, listing, owner)
    return document(root)


def list_objects_v1(listing: Listing, *, marker: str, next_marker: str | None, owner: Owner) -> bytes:
    root = _root("ListBucketResult")
    _listing_common(root, listing)
    _add(root, "Marker", _encode(marker, listing))
    if next_marker is not None:
        _add(root, "NextMarker", _encode(next_marker, listing))
    _listing_entries(root, listing, owner)
    return document(root)


def list_versions(
    listing: Listing, *, key_marker: str, version_id_marker: str, next_key_marker: str | None, owner: Owner
) -> bytes:
    """ListObjectVersions: Pockity keeps one version of each object, so each is its `null`, latest version."""
    root = _root("ListVersionsResult")
    _add(root, "Name", listing.bucket)
    _add(root, "Prefix", _encode(listing.prefix, listing))
    _add(root, "KeyMarker", _encode(key_marker, listing))
    _add(root, "VersionIdMarker", version_id_marker)
    if next_key_marker is not None:
        _add(root, "NextKeyMarker", _encode(next_key_marker, listing))
        _add(root, "NextVersionIdMarker", "null")
    _add(root, "MaxKeys", listing.max_keys)
    if listing.delimiter is not None:
        _add(root, "Delimiter", _encode(listing.delimiter, listing))
    if listing.url_encoded:
        _add(root, "EncodingType", "url")
    _add(root, "IsTruncated", listing.is_truncated)
    for entry in listing.entries:
        version = SubElement(root, "Version")
        _add(version, "Key", _encode(entry.key, listing))
        _add(version, "VersionId", "null")
        _add(version, "IsLatest", True)
        _add(version, "LastModified", timestamp(entry.last_modified))
        _add(version, "ETag", f'"{entry.etag}"')
        _add(version, "Size", entry.size)
        _owner(version, owner)
        _add(version, "StorageClass", "STANDARD")
    for prefix in listing.common_prefixes:
        _add(SubElement(root, "CommonPrefixes"), "Prefix", _encode(prefix, listing))
    return document(root)


def copy_result(etag: str, last_modified: datetime) -> bytes:
    """CopyObject's answer."""
    root = _root("CopyObjectResult")
    _add(root, "LastModified", timestamp(last_modified))
    _add(root, "ETag", f'"{etag}"')
    return document(root)


def post_response(location: str, bucket: str, key: str, etag: str) -> bytes:
    """A browser POST upload's answer with `success_action_status=201` (S3 puts no namespace on it)."""
    root = Element("PostResponse")
    for name, value in (("Location", location), ("Bucket", bucket), ("Key", key), ("ETag", f'"{etag}"')):
        _add(root, name, value)
    return document(root)


@dataclass(frozen=True)
class DeleteOutcome:
    key: str
    error: S3Error | None = None


def delete_result(outcomes: Iterable[DeleteOutcome], quiet: bool) -> bytes:
    """DeleteObjects: each key deleted (not listed when quiet) or its error."""
    root = _root("DeleteResult")
    for outcome in outcomes:
        if outcome.error is None:
            if not quiet:
                _add(SubElement(root, "Deleted"), "Key", outcome.key)
            continue
        failed = SubElement(root, "Error")
        _add(failed, "Key", outcome.key)
        _add(failed, "Code", outcome.error.code)
        _add(failed, "Message", outcome.error.message)
    return document(root)


# --- multipart uploads -------------------------------------------------------------------------------------


def initiate_multipart(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    return document(root)


def complete_multipart(location: str, bucket: str, key: str, etag: str) -> bytes:
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "ETag", f'"{etag}"')
    return document(root)


def copy_part_result(etag: str, last_modified: datetime) -> bytes:
    root = _root("CopyPartResult")
    _add(root, "LastModified", timestamp(last_modified))
    _add(root, "ETag", f'"{etag}"')
    return document(root)


@dataclass(frozen=True)
class PartEntry:
    number: int
    last_modified: datetime
    etag: str
    size: int


def list_parts(
    bucket: str,
    key: str,
    upload_id: str,
    owner: Owner,
    *,
    marker: int,
    next_marker: int | None,
    max_parts: int,
    parts: Iterable[PartEntry],
) -> bytes:
    root = _root("ListPartsResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    _owner(root, owner, "Initiator")
    _owner(root, owner)
    _add(root, "StorageClass", "STANDARD")
    _add(root, "PartNumberMarker", marker)
    if next_marker is not None:
        _add(root, "NextPartNumberMarker", next_marker)
    _add(root, "MaxParts", max_parts)
    _add(root, "IsTruncated", next_marker is not None)
    for part in parts:
        item = SubElement(root, "Part")
        _add(item, "PartNumber", part.number)
        _add(item, "LastModified", timestamp(part.last_modified))
        _add(item, "ETag", f'"{part.etag}"')
        _add(item, "Size", part.size)
    return document(root)


@dataclass(frozen=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: datetime


@dataclass(frozen=True)
class UploadListing:
    bucket: str
    prefix: str
    delimiter: str | None
    key_marker: str
    upload_id_marker: str
    max_uploads: int
    uploads: list[UploadEntry]
    common_prefixes: list[str]
    next_markers: tuple[str, str] | None  # (key, upload id) to go on from; None: the listing is complete
    url_encoded: bool


def list_multipart_uploads(listing: UploadListing, owner: Owner) -> bytes:
    def encoded(value: str) -> str:
        return url_encoded(value) if listing.url_encoded else value

    root = _root("ListMultipartUploadsResult")
    _add(root, "Bucket", listing.bucket)
    _add(root, "KeyMarker", encoded(listing.key_marker))
    _add(root, "UploadIdMarker", listing.upload_id_marker)
    if listing.next_markers is not None:
        _add(root, "NextKeyMarker", encoded(listing.next_markers[0]))
        _add(root, "NextUploadIdMarker", listing.next_markers[1])
    _add(root, "Prefix", encoded(listing.prefix))
    if listing.delimiter is not None:
        _add(root, "Delimiter", encoded(listing.delimiter))
    _add(root, "MaxUploads", listing.max_uploads)
    if listing.url_encoded:
        _add(root, "EncodingType", "url")
    _add(root, "IsTruncated", listing.next_markers is not None)
    for upload in listing.uploads:
        item = SubElement(root, "Upload")
        _add(item, "Key", encoded(upload.key))
        _add(item, "UploadId", upload.upload_id)
        _owner(item, owner, "Initiator")
        _owner(item, owner)
        _add(item, "StorageClass", "STANDARD")
        _add(item, "Initiated", timestamp(upload.initiated))
    for prefix in listing.common_prefixes:
        _add(SubElement(root, "CommonPrefixes"), "Prefix", encoded(prefix))
    return document(root)


def _forbid_dtd(*_: object) -> None:
    raise S3Error("MalformedXML", "The XML you provided may not have a DOCTYPE.", 400)


def _parse(body: bytes, root_name: str) -> Element:
    if len(body) > MAX_REQUEST_XML:
        raise S3Error("MalformedXML", "The XML you provided is too large.", 400)
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    # As defusedxml does: no DTD, so no entity of any kind (expansion bombs, external entities), whatever
    # the document's encoding.
    parser.StartDoctypeDeclHandler = _forbid_dtd
    parser.EntityDeclHandler = _forbid_dtd
    try:
        parser.Parse(body, True)
        root = builder.close()
    except (expat.ExpatError, AssertionError):  # not well-formed, or no element at all
        raise S3Error("MalformedXML", "The XML you provided was not well-formed.", 400) from None
    if _local(root.tag) != root_name:
        raise S3Error("MalformedXML", f"The XML you provided is not a {root_name} document.", 400)
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: Element, name: str) -> str | None:
    found = _children(element, name)
    return (found[0].text or "") if found else None


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """DeleteObjects' `<Delete><Object><Key/></Object>...<Quiet/></Delete>`: the keys and quiet."""
    root = _parse(body, "Delete")
    keys = []
    for item in _children(root, "Object"):
        key = _text(item, "Key")
        if key is None:
            raise S3Error("MalformedXML", "Each Object needs a Key.", 400)
        keys.append(key)
    if not keys or len(keys) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML", f"Delete between 1 and {MAX_DELETE_KEYS} keys at a time.", 400)
    return keys, (_text(root, "Quiet") or "").strip().lower() == "true"


def parse_acl_grants(body: bytes) -> list[tuple[str, str]]:
    """PutObjectAcl's / PutBucketAcl's `<AccessControlPolicy>`: each grant as (grantee ID or URI, permission)."""
    root = _parse(body, "AccessControlPolicy")
    grants = []
    for grant in root.iter():
        if _local(grant.tag) != "Grant":
            continue
        grantee = _children(grant, "Grantee")
        who = "" if not grantee else (_text(grantee[0], "ID") or _text(grantee[0], "URI") or "*")
        grants.append((who.strip(), (_text(grant, "Permission") or "").strip()))
    return grants


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """CompleteMultipartUpload's parts: (part number, ETag without quotes), in the order sent."""
    root = _parse(body, "CompleteMultipartUpload")
    parts = []
    for item in _children(root, "Part"):
        number, etag = _text(item, "PartNumber"), _text(item, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise S3Error("MalformedXML", "Each Part needs a PartNumber and an ETag.", 400)
        parts.append((int(number), etag.strip().strip('"')))
    if not parts:
        raise S3Error("MalformedXML", "The request names no parts.", 400)
    return parts
