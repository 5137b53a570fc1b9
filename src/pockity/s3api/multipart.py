"""S3 multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts, ListMultipartUploads.

The flow — quota per part, the name's lock at completion, expiry of idle uploads — is storage/parts.py's; this
module reads S3's requests and writes S3's answers. The UploadId a client sees is Pockity's reservation id,
never the backend's, and it is looked up only among the caller's own uploads.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.responses import Response

from pockity.s3api import bodies, metadata, xml
from pockity.s3api.call import MAX_KEYS, Call, owner, read_xml_body, xml_response
from pockity.s3api.errors import S3Error
from pockity.s3api.objects import copy_source, source_condition, write_condition
from pockity.storage import parts

_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def _upload_id(call: Call) -> str:
    upload_id = call.params.get("uploadId", "")
    if not upload_id:
        raise S3Error("InvalidArgument", "uploadId is empty.", 400)
    return upload_id


def _part_number(call: Call) -> int:
    raw = call.params.get("partNumber", "")
    if not raw.isdigit() or not 1 <= int(raw) <= parts.MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {parts.MAX_PART_NUMBER}.", 400)
    return int(raw)


def _bounded_int(call: Call, name: str, default: int, maximum: int) -> int:
    raw = call.params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer.", 400)
    return min(int(raw), maximum)


async def create_multipart_upload(call: Call) -> Response:
    upload_id = await parts.create(
        call.state.db,
        call.state.storage,
        call.principal,
        call.object_key,
        content_type=call.s3.headers.get("content-type"),
        headers=metadata.from_request(call.s3.headers),
        policy=call.state.parts_policy,
    )
    answer = xml_response(xml.initiate_multipart(call.bucket or "", call.object_key, upload_id))
    if "x-amz-checksum-algorithm" in call.s3.headers:  # parts are checked one by one (bodies.py)
        answer.headers["x-amz-checksum-algorithm"] = call.s3.headers["x-amz-checksum-algorithm"]
    return answer


async def upload_part(call: Call) -> Response:
    declared = bodies.declared_length(call)
    if declared is None:
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
    async with call.state.upload_slots:
        etag = await parts.upload_part(
            call.state.db,
            call.state.storage,
            call.principal,
            _upload_id(call),
            call.object_key,
            _part_number(call),
            declared,
            bodies.verified_body(call, declared),
            call.state.parts_policy,
        )
    headers = {"ETag": f'"{etag}"'}
    for name, value in call.s3.headers.items():  # a checksum sent as a header was verified: echo it, as S3 does
        if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-type":
            headers[name] = value
    return Response(status_code=200, headers=headers)


def _copy_range(call: Call) -> tuple[int, int] | None:
    raw = call.s3.headers.get("x-amz-copy-source-range")
    if raw is None:
        return None
    found = _COPY_RANGE.match(raw.strip())
    if found is None:
        raise S3Error("InvalidArgument", "x-amz-copy-source-range must be bytes=first-last.", 400)
    return int(found[1]), int(found[2])


async def upload_part_copy(call: Call) -> Response:
    source = copy_source(call)
    etag = await parts.copy_part(
        call.state.db,
        call.state.storage,
        call.principal,
        _upload_id(call),
        call.object_key,
        _part_number(call),
        source,
        _copy_range(call),
        call.state.parts_policy,
        source_check=source_condition(call),
    )
    return xml_response(xml.copy_part_result(etag, datetime.now(UTC)))


async def complete_multipart_upload(call: Call) -> Response:
    listed = xml.parse_complete(await read_xml_body(call))
    async with call.state.upload_slots:
        obj = await parts.complete(
            call.state.db,
            call.state.storage,
            call.principal,
            _upload_id(call),
            call.object_key,
            listed,
            call.state.parts_policy,
            precondition=write_condition(call),
        )
    location = f"{call.request.url.scheme}://{call.s3.headers.get('host', '')}{call.s3.resource}"
    return xml_response(xml.complete_multipart(location, call.bucket or "", call.object_key, obj.etag))


async def abort_multipart_upload(call: Call) -> Response:
    await parts.abort(call.state.db, call.state.storage, call.principal, _upload_id(call), call.object_key)
    return Response(status_code=204)


async def list_parts(call: Call) -> Response:
    upload_id = _upload_id(call)
    max_parts = _bounded_int(call, "max-parts", MAX_KEYS, MAX_KEYS)
    marker = _bounded_int(call, "part-number-marker", 0, parts.MAX_PART_NUMBER)
    _, stored = await parts.list_parts(call.state.db, call.state.storage, call.principal, upload_id, call.object_key)
    after = [p for p in stored if p.number > marker]
    page = after[:max_parts]
    next_marker = page[-1].number if len(after) > len(page) and page else None
    return xml_response(
        xml.list_parts(
            call.bucket or "",
            call.object_key,
            upload_id,
            owner(call),
            marker=marker,
            next_marker=next_marker,
            max_parts=max_parts,
            parts=[xml.PartEntry(p.number, p.last_modified, p.etag, p.size) for p in page],
        )
    )


async def list_multipart_uploads(call: Call) -> Response:
    params = call.params
    delimiter = params.get("delimiter") or None
    if delimiter is not None and delimiter != "/":
        raise S3Error("InvalidArgument", "Pockity supports '/' as the only delimiter.", 400)
    encoding = params.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "encoding-type must be url.", 400)
    max_uploads = _bounded_int(call, "max-uploads", MAX_KEYS, MAX_KEYS)
    key_marker, id_marker = params.get("key-marker", ""), params.get("upload-id-marker", "")
    # After the marker key: its uploads after upload-id-marker, or none of them without one (S3's rule).
    after = (key_marker, id_marker or "\U0010ffff") if key_marker else None
    requested = params.get("prefix", "")
    prefix, found = await parts.list_uploads(
        call.state.db, call.principal, prefix=requested, after=after, limit=max(1, max_uploads) * 4 + 1
    )
    uploads: list[xml.UploadEntry] = []
    folders: list[str] = []
    next_markers: tuple[str, str] | None = None
    skip_folder = key_marker if delimiter and not id_marker and key_marker.endswith(delimiter) else None
    for row in found:
        assert row.target is not None
        if skip_folder is not None and row.target.startswith(skip_folder):
            continue  # the previous page ended with this folder
        if len(uploads) + len(folders) >= max_uploads:
            next_markers = (uploads[-1].key, uploads[-1].upload_id) if uploads else (folders[-1], "")
            break
        rest = row.target[len(requested) :]
        if delimiter is not None and delimiter in rest:
            folder = requested + rest.split(delimiter, 1)[0] + delimiter
            if not folders or folders[-1] != folder:
                folders.append(folder)
            continue
        uploads.append(xml.UploadEntry(row.target, row.id, row.created_at))
    else:
        if len(found) == max(1, max_uploads) * 4 + 1 and found[-1].target is not None:
            next_markers = (found[-1].target, found[-1].id)  # a page of folders: go on after the last row read
    listing = xml.UploadListing(
        bucket=call.bucket or "",
        prefix=requested if prefix.startswith(requested) else prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        upload_id_marker=id_marker,
        max_uploads=max_uploads,
        uploads=uploads,
        common_prefixes=folders,
        next_markers=next_markers,
        url_encoded=encoding == "url",
    )
    return xml_response(xml.list_multipart_uploads(listing, owner(call)))
