"""Bucket-level S3 operations: the tenant's one bucket (list, head, create, location, ACL) and its listings."""

from __future__ import annotations

import re

from starlette.responses import Response

from pockity.s3api import xml
from pockity.s3api.call import MAX_KEYS, Call, owner, read_xml_body, xml_response
from pockity.s3api.errors import S3Error
from pockity.storage import service

_XML_CANNOT_CARRY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

# --- buckets -----------------------------------------------------------------------------------------------


async def list_buckets(call: Call) -> Response:
    return xml_response(xml.list_buckets(owner(call), [(call.state.settings.s3_api_bucket, call.principal.created_at)]))


async def head_bucket(call: Call) -> Response:
    return Response(status_code=200, headers={"x-amz-bucket-region": call.state.settings.aws_region})


async def create_bucket(call: Call) -> Response:
    # The tenant's bucket always exists. In us-east-1 S3 answers 200 to re-creating your own bucket (so
    # `aws s3 mb` succeeds); elsewhere 409 BucketAlreadyOwnedByYou, which rclone and others take as success.
    if call.state.settings.aws_region == "us-east-1":
        return Response(status_code=200, headers={"Location": f"/{call.bucket}"})
    raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded.", 409)


async def get_location(call: Call) -> Response:
    return xml_response(xml.location(call.state.settings.aws_region))


async def get_acl(call: Call) -> Response:
    """GetBucketAcl / GetObjectAcl: always the private canned ACL (of an object that exists and that the key
    may read)."""
    if call.key is not None:
        await service.get_object_meta(call.state.db, call.principal, call.key)
    return xml_response(xml.private_acl(owner(call)))


async def put_acl(call: Call) -> Response:
    """PutBucketAcl / PutObjectAcl: what is already true (private: the owner has FULL_CONTROL) is accepted and
    changes nothing; any other grant is 501, never silently dropped."""
    if call.key is not None:
        service.checked_name(call.principal, call.key, "write")
        await service.get_object_meta(call.state.db, call.principal, call.key)
    headers = call.s3.headers
    granted = [name for name in headers if name.startswith("x-amz-grant-")]
    canned = headers.get("x-amz-acl", "private").strip()
    body = await read_xml_body(call)
    grants = xml.parse_acl_grants(body) if body.strip() else []
    if canned != "private" or granted or any(g != (call.principal.user_id, "FULL_CONTROL") for g in grants):
        raise S3Error("NotImplemented", "Pockity's objects are private: only the private ACL can be set.", 501)
    return Response(status_code=200)


# --- listing --------------------------------------------------------------------------------------------------


def _max_keys(call: Call) -> int:
    raw = call.params.get("max-keys", str(MAX_KEYS))
    if not (raw.isascii() and raw.isdigit()):  # str.isdigit() also says yes to '²', which int() refuses
        raise S3Error("InvalidArgument", "max-keys must be a non-negative integer.", 400)
    return min(int(raw), MAX_KEYS)


def _options(call: Call) -> tuple[str, str | None, str | None]:
    """A listing's prefix, delimiter and encoding-type."""
    params = call.params
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter") or None
    encoding = params.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "encoding-type must be url.", 400)
    return prefix, delimiter, encoding


async def _page(
    call: Call, prefix: str, delimiter: str | None, max_keys: int, *, cursor: str | None, after: str | None
) -> service.Page:
    if any(_XML_CANNOT_CARRY.search(v) for v in (prefix, delimiter or "", after or "")):  # echoed in the answer
        raise S3Error("InvalidArgument", "Listing parameters may not contain control characters.", 400)
    if service.not_a_name_prefix(prefix) or len(prefix.encode()) > 1024:  # S3 lists nothing for it (the REST
        service.listing_prefix(call.principal, prefix)  # API refuses it: invalid_key); the key's scope applies
        return service.Page(items=[], folders=[], next_cursor=None)
    return await service.list_objects(
        call.state.db,
        call.principal,
        prefix=prefix,
        delimiter=delimiter,
        limit=max(1, max_keys),
        cursor=cursor,
        after=after,
    )


def _listing(
    call: Call, page: service.Page, prefix: str, delimiter: str | None, encoding: str | None, max_keys: int
) -> xml.Listing:
    entries = [xml.Entry(r.key, r.last_modified, r.etag, r.size) for r in page.items] if max_keys else []
    return xml.Listing(
        bucket=call.bucket or "",
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        entries=entries,
        common_prefixes=page.folders if max_keys else [],
        is_truncated=page.next_cursor is not None and max_keys > 0,
        url_encoded=encoding == "url",
    )


async def list_objects(call: Call) -> Response:
    params = call.params
    v2 = params.get("list-type") == "2"
    prefix, delimiter, encoding = _options(call)
    max_keys = _max_keys(call)
    token = params.get("continuation-token") if v2 else None
    after = (params.get("start-after") if v2 else params.get("marker")) or None
    page = await _page(call, prefix, delimiter, max_keys, cursor=token, after=after if token is None else None)
    listing = _listing(call, page, prefix, delimiter, encoding, max_keys)
    if v2:
        listed_owner = owner(call) if params.get("fetch-owner") == "true" else None
        return xml_response(
            xml.list_objects_v2(
                listing, continuation_token=token, next_token=page.next_cursor, start_after=after, owner=listed_owner
            )
        )
    names = [e.key for e in listing.entries] + listing.common_prefixes
    next_marker = max(names) if listing.is_truncated and delimiter and names else None
    return xml_response(
        xml.list_objects_v1(listing, marker=params.get("marker", ""), next_marker=next_marker, owner=owner(call))
    )


async def list_object_versions(call: Call) -> Response:
    """ListObjectVersions: one `null` version per object (Pockity keeps no others), paged by key-marker."""
    prefix, delimiter, encoding = _options(call)
    max_keys = _max_keys(call)
    key_marker, version_marker = call.params.get("key-marker", ""), call.params.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.", 400)
    if version_marker not in ("", "null"):
        raise S3Error("InvalidArgument", "Invalid version id specified: Pockity's only version id is null.", 400)
    # Keys after key-marker; with version-id-marker=null, the versions of key-marker older than null (there
    # are none), then the same keys.
    page = await _page(call, prefix, delimiter, max_keys, cursor=None, after=key_marker or None)
    listing = _listing(call, page, prefix, delimiter, encoding, max_keys)
    names = [e.key for e in listing.entries] + listing.common_prefixes
    next_key_marker = max(names) if listing.is_truncated and names else None
    return xml_response(
        xml.list_versions(
            listing,
            key_marker=key_marker,
            version_id_marker=version_marker,
            next_key_marker=next_key_marker,
            owner=owner(call),
        )
    )
