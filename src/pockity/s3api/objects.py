"""Object-level S3 operations: Head, Get, Put, Copy, Delete, DeleteObjects — each calling the storage services
the REST API uses, so quotas, scopes and the name's lock are the same."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.responses import Response, StreamingResponse

from pockity.kit import media_types
from pockity.s3api import bodies, metadata, xml
from pockity.s3api.call import Call, decoded, etag_listed, http_date, read_xml_body, xml_response
from pockity.s3api.errors import S3Error
from pockity.s3api.errors_map import translate
from pockity.storage import copies, deletes, parts, service, uploads
from pockity.storage.backends import InvalidRange


def _object_headers(obj: service.ObjectMeta, etag: str | None = None) -> dict[str, str]:
    """What GET and HEAD answer about a file: its entity headers, then the headers stored with it."""
    headers = {
        "ETag": f'"{etag or obj.etag}"',
        "Last-Modified": format_datetime(obj.updated_at.astimezone(UTC), usegmt=True),
        "Content-Length": str(obj.size),
        "Content-Type": media_types.safe(obj.content_type) or "binary/octet-stream",
        "Accept-Ranges": "bytes",
    }
    if obj.headers:
        headers |= obj.headers
    return headers


def _not_modified_answer(headers: dict[str, str]) -> Response:
    return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})


def _part_range(call: Call, obj: service.ObjectMeta, headers: dict[str, str]) -> tuple[int, int] | None:
    """GET/HEAD `?partNumber=N`: that part's byte range (a multipart object's layout is stored with it; any
    other object is one part), with `x-amz-mp-parts-count`; None when the whole object is the answer."""
    raw = call.params.get("partNumber")
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= parts.MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", f"partNumber must be between 1 and {parts.MAX_PART_NUMBER}.", 400)
    if "range" in call.s3.headers:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter.", 400)
    number = int(raw)
    if not obj.part_sizes:
        if number != 1:
            raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable.", 416)
        return None
    found = parts.part_range(obj.part_sizes, number)
    if found is None:
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable.", 416)
    headers["x-amz-mp-parts-count"] = str(parts.parts_count(obj.part_sizes))
    return found


def _byte_range(call: Call, size: int) -> tuple[int, int] | None:
    """GetObject's Range; one that addresses no byte is 416 InvalidRange with `Content-Range: bytes */size`."""
    header = call.s3.headers.get("range")
    try:
        return service.parse_range(header, size)
    except InvalidRange:
        err = S3Error(
            "InvalidRange",
            "The requested range is not satisfiable",
            416,
            RangeRequested=header or "",
            ActualObjectSize=str(size),
        )
        err.headers["Content-Range"] = f"bytes */{size}"
        raise err from None


def _ranged(headers: dict[str, str], byte_range: tuple[int, int], size: int) -> None:
    start, end = byte_range
    headers |= {"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)}


def _not_modified(call: Call, etag: str, modified: datetime) -> bool:
    """The conditional headers of a GET or HEAD (RFC 9110 §13.2.2 order): 412 PreconditionFailed, or whether
    the answer is 304 Not Modified."""
    headers, seconds = call.s3.headers, modified.astimezone(UTC).replace(microsecond=0)
    if "if-match" in headers:
        if not etag_listed(headers["if-match"], etag):
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold.", 412)
    elif (since := http_date(headers.get("if-unmodified-since", ""))) is not None and seconds > since:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold.", 412)
    if "if-none-match" in headers:
        return etag_listed(headers["if-none-match"], etag)
    since = http_date(headers.get("if-modified-since", ""))
    return since is not None and seconds <= since


_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def _overridden(call: Call, headers: dict[str, str]) -> dict[str, str]:
    """GetObject's `response-*` query parameters (signed with the request, so the key holder chose them)."""
    for param, header in _OVERRIDES.items():
        value = call.params.get(param)
        if value is None:
            continue
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise S3Error("InvalidArgument", f"{param} may not contain control characters.", 400)
        headers[header] = value
    if not media_types.is_passive(media_types.safe(headers.get("Content-Type"))):
        headers["Content-Security-Policy"] = "sandbox"  # an active type never runs as a page of this origin
    return headers


async def head_object(call: Call) -> Response:
    obj = await service.get_object_meta(call.state.db, call.principal, call.object_key)
    headers = _object_headers(obj)
    if _not_modified(call, obj.etag, obj.updated_at):
        return _not_modified_answer(headers)
    # A HEAD answers as its GET would, without the body: a part or a Range is 206 with that Content-Range (or
    # 416), and the response-* overrides apply.
    byte_range = _part_range(call, obj, headers) or _byte_range(call, obj.size)
    headers = _overridden(call, headers)
    if byte_range is not None:
        _ranged(headers, byte_range, obj.size)
        return Response(status_code=206, headers=headers)
    return Response(status_code=200, headers=headers)


async def get_object(call: Call) -> Response:
    obj = await service.get_object_meta(call.state.db, call.principal, call.object_key)
    headers = _object_headers(obj)
    if _not_modified(call, obj.etag, obj.updated_at):
        return _not_modified_answer(headers)
    byte_range = _part_range(call, obj, headers) or _byte_range(call, obj.size)
    info, body = await service.open_content(call.state.storage, obj, byte_range)
    headers = _overridden(call, headers | {"ETag": f'"{info.etag}"'})
    if byte_range is None:
        return StreamingResponse(body, status_code=200, headers=headers)
    _ranged(headers, byte_range, info.size)
    return StreamingResponse(body, status_code=206, headers=headers)


def write_condition(call: Call) -> uploads.Precondition | None:
    """PutObject's conditional writes: `If-None-Match: *` (only if the key is free) or an ETag list (only if the
    current file is none of them), `If-Match: <etag>` (only over that file)."""
    none_match, match = call.s3.headers.get("if-none-match"), call.s3.headers.get("if-match")
    if none_match is None and match is None:
        return None

    def check(existing: Any) -> None:
        if none_match is not None and existing is not None and etag_listed(none_match, existing.etag):
            raise uploads.PreconditionFailed("A file of this name exists (If-None-Match).")
        if match is not None and (existing is None or not etag_listed(match, existing.etag)):
            raise uploads.PreconditionFailed("The file's ETag is not the one If-Match names.")

    return check


async def put_object(call: Call) -> Response:
    assert call.key is not None
    name = service.checked_name(call.principal, call.key, "write")
    declared = bodies.declared_length(call)
    async with call.state.upload_slots:
        obj = await uploads.upload(
            call.state.db,
            call.state.storage,
            call.principal,
            name,
            bodies.verified_body(call, declared),
            declared=declared,
            content_type=call.s3.headers.get("content-type"),
            policy=call.state.upload_policy,
            precondition=write_condition(call),
            headers=metadata.from_request(call.s3.headers),
        )
    return Response(status_code=200, headers={"ETag": f'"{obj.etag}"'})


def copy_source(call: Call) -> str:
    """The source key of `x-amz-copy-source` (`[/]bucket/key[?versionId=null]`, percent-encoded)."""
    raw = call.s3.headers["x-amz-copy-source"]
    path, _, version = raw.partition("?")
    if version and version != "versionId=null":
        raise S3Error("InvalidArgument", "Pockity keeps one version of each object (versionId=null).", 400)
    bucket, slash, key = decoded(path).lstrip("/").partition("/")
    if not slash or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be bucket/key.", 400)
    if bucket != call.state.settings.s3_api_bucket:  # a tenant has one bucket: no other exists for them
        raise S3Error("NoSuchBucket", "The specified bucket does not exist.", 404, BucketName=bucket)
    return key


_SOURCE_CONDITIONS = (
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-none-match",
    "x-amz-copy-source-if-modified-since",
    "x-amz-copy-source-if-unmodified-since",
)


def source_condition(call: Call) -> copies.SourceCheck | None:
    """CopyObject's and UploadPartCopy's `x-amz-copy-source-if-*`, checked against the source: 412 when one
    fails. As in S3, a matching If-Match wins over If-Unmodified-Since, and a failing If-None-Match over
    If-Modified-Since."""
    headers = call.s3.headers
    if not any(name in headers for name in _SOURCE_CONDITIONS):
        return None
    match, none_match = headers.get(_SOURCE_CONDITIONS[0]), headers.get(_SOURCE_CONDITIONS[1])
    modified_since = http_date(headers.get(_SOURCE_CONDITIONS[2], ""))
    unmodified_since = http_date(headers.get(_SOURCE_CONDITIONS[3], ""))

    def check(source: service.ObjectMeta) -> None:
        seconds = source.updated_at.astimezone(UTC).replace(microsecond=0)
        if match is not None:
            if not etag_listed(match, source.etag):
                raise uploads.PreconditionFailed("The copy source's ETag is not the one named.")
        elif unmodified_since is not None and seconds > unmodified_since:
            raise uploads.PreconditionFailed("The copy source was modified since the date named.")
        if none_match is not None:
            if etag_listed(none_match, source.etag):
                raise uploads.PreconditionFailed("The copy source's ETag is one If-None-Match names.")
        elif modified_since is not None and seconds <= modified_since:
            raise uploads.PreconditionFailed("The copy source was not modified since the date named.")

    return check


async def copy_object(call: Call) -> Response:
    assert call.key is not None
    source = copy_source(call)
    directive = call.s3.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE.", 400)
    if source == call.key and directive == "COPY":
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without changing "
            "the object's metadata.",
            400,
        )
    async with call.state.upload_slots:
        obj = await copies.copy_object(
            call.state.db,
            call.state.storage,
            call.principal,
            source,
            call.key,
            content_type=call.s3.headers.get("content-type"),
            headers=metadata.from_request(call.s3.headers) if directive == "REPLACE" else None,
            keep_metadata=directive == "COPY",
            policy=call.state.upload_policy,
            source_check=source_condition(call),
        )
    return xml_response(xml.copy_result(obj.etag, obj.updated_at or datetime.now(UTC)))


async def delete_object(call: Call) -> Response:
    assert call.key is not None
    results = await deletes.delete_objects(call.state.db, call.state.storage, call.principal, [call.key])
    error = results[call.key]
    if error is not None and error.code != "file_not_found":  # S3: deleting a missing key succeeds
        raise error
    return Response(status_code=204)


async def delete_objects(call: Call) -> Response:
    keys, quiet = xml.parse_delete(await read_xml_body(call))
    results = await deletes.delete_objects(call.state.db, call.state.storage, call.principal, keys)
    outcomes = []
    for key in keys:
        error = results.get(key)
        gone = error is None or error.code == "file_not_found"
        outcomes.append(xml.DeleteOutcome(key, None if gone else translate(error)))  # type: ignore[arg-type]
    return xml_response(xml.delete_result(outcomes, quiet))
