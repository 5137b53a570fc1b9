"""Bucket-level S3 operations: the tenant's one bucket (list, head, create, location, ACL) and its listings."""

from __future__ import annotations

import re

from starlette.responses import Response

from pockity.s3api import xml
from pockity.s3api.call import MAX_KEYS, Call, owner, xml_response
from pockity.s3api.errors import S3Error
from pockity.storage import service
from pockity.storage.backends import InvalidKey

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
    if call.key is not None:  # an object's ACL: only of an object that exists and that the key may read
        await service.get_object_meta(call.state.db, call.principal, call.key)
    return xml_response(xml.private_acl(owner(call)))


# --- listing --------------------------------------------------------------------------------------------------


def _max_keys(call: Call) -> int:
    raw = call.params.get("max-keys", str(MAX_KEYS))
    if not (raw.isascii() and raw.isdigit()):  # str.isdigit() also says yes to '²', which int() refuses
        raise S3Error("InvalidArgument", "max-keys must be a non-negative integer.", 400)
    return min(int(raw), MAX_KEYS)


async def list_objects(call: Call) -> Response:
    params = call.params
    v2 = params.get("list-type") == "2"
    prefix, delimiter = params.get("prefix", ""), params.get("delimiter") or None
    encoding = params.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "encoding-type must be url.", 400)
    max_keys = _max_keys(call)
    token = params.get("continuation-token") if v2 else None
    after = (params.get("start-after") if v2 else params.get("marker")) or None
    if any(_XML_CANNOT_CARRY.search(v) for v in (prefix, delimiter or "", after or "")):  # echoed in the answer
        raise S3Error("InvalidArgument", "Listing parameters may not contain control characters.", 400)
    try:
        page = await service.list_objects(
            call.state.db,
            call.principal,
            prefix=prefix,
            delimiter=delimiter,
            limit=max(1, max_keys),
            cursor=token,
            after=after if token is None else None,
        )
    except InvalidKey:  # a prefix no name can have (S3 lists nothing; the REST API says why)
        page = service.Page(items=[], folders=[], next_cursor=None)
    entries = [xml.Entry(r.key, r.last_modified, r.etag, r.size) for r in page.items] if max_keys else []
    listing = xml.Listing(
        bucket=call.bucket or "",
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        entries=entries,
        common_prefixes=page.folders if max_keys else [],
        is_truncated=page.next_cursor is not None and max_keys > 0,
        url_encoded=encoding == "url",
    )
    if v2:
        listed_owner = owner(call) if params.get("fetch-owner") == "true" else None
        return xml_response(
            xml.list_objects_v2(
                listing, continuation_token=token, next_token=page.next_cursor, start_after=after, owner=listed_owner
            )
        )
    names = [e.key for e in entries] + listing.common_prefixes
    next_marker = max(names) if listing.is_truncated and delimiter and names else None
    return xml_response(
        xml.list_objects_v1(listing, marker=params.get("marker", ""), next_marker=next_marker, owner=owner(call))
    )
