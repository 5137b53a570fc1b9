"""Browser POST uploads (`<form method=post enctype=multipart/form-data action=.../{bucket}>`), streamed.

The form is read as it arrives (kit/multipart.py): its fields up to the `file` part (bounded), then the file's
bytes straight into `uploads.upload` — the same reservation as any upload, grown as the stream advances as
for the REST API's form uploads, since a policy's `content-length-range` is only a ceiling the file may stay
far below. The signature is in the form, not in a header: the policy (auth.authenticate_post, post_policy.py)
is checked against every field, with `${filename}` in the key already replaced by the file's name, before a
byte of the file is read; the key's scopes and prefix then apply to the key as for PutObject, and the
fields PutObject would take as headers (`x-amz-meta-*`, Cache-Control, Content-Disposition, ...) are stored
the same way (`acl` is allowed by the policy and ignored, as PutObject's x-amz-acl: objects stay private).
`content-length-range` is enforced while the file streams, so a file outside it is never stored and its
reservation released. What follows the file is read and ignored, as S3 does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from starlette.responses import Response

from pockity.kit import multipart
from pockity.s3api import metadata, xml
from pockity.s3api.auth import authenticate_post
from pockity.s3api.call import Call
from pockity.s3api.errors import S3Error
from pockity.s3api.post_policy import PostPolicy
from pockity.storage import service, uploads

MAX_FIELD_BYTES = 20 * 1024  # a policy of many conditions is a few KiB of base64
MAX_FIELDS_BYTES = 64 * 1024  # everything before the file


def is_form_upload(call: Call) -> bool:
    """`POST /{bucket}` with a multipart/form-data body: authenticated by the form, not by a header."""
    content_type = call.s3.headers.get("content-type", "")
    return (
        call.s3.method == "POST"
        and call.bucket is not None
        and call.key is None
        and not call.params
        and content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"
    )


def _malformed(detail: str) -> S3Error:
    return S3Error("MalformedPOSTRequest", f"The body of your POST request is not well-formed: {detail}.", 400)


@dataclass
class Form:
    """A POST form read up to its file: the fields (names lower-cased), the file part, the rest of the body."""

    fields: dict[str, str]
    file: multipart.PartStart
    events: AsyncIterator[multipart.Event]
    key: str
    policy: PostPolicy


async def _field(events: AsyncIterator[multipart.Event], room: int) -> str:
    data = b""
    async for event in events:
        if isinstance(event, multipart.PartEnd):
            break
        if isinstance(event, multipart.PartData):
            data += event.data
            if len(data) > min(room, MAX_FIELD_BYTES):
                raise S3Error(
                    "MaxPostPreDataLengthExceeded",
                    "Your POST request fields preceding the upload file were too large.",
                    400,
                )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("a field is not valid UTF-8") from None


async def open_form(call: Call, now: datetime) -> Form:
    """Read the fields up to the file, check the policy and authenticate the call (sets `call.auth`)."""
    try:
        boundary = multipart.boundary_of(call.s3.headers.get("content-type", ""))
        events = multipart.events(call.request.stream(), boundary)
        fields: dict[str, str] = {}
        file_part = None
        used = 0
        async for event in events:
            if not isinstance(event, multipart.PartStart):
                continue
            name = event.name.lower()
            if name == "file":
                file_part = event
                break
            if name in fields:  # a condition must never hold for one copy while the other is used
                raise S3Error("InvalidArgument", f"The form names the field {event.name!r} twice.", 400)
            fields[name] = await _field(events, MAX_FIELDS_BYTES - used)
            used += len(fields[name].encode())
    except multipart.MultipartError as exc:
        raise _malformed(str(exc)) from None
    if file_part is None:
        raise S3Error("InvalidArgument", "POST requires exactly one file upload per request.", 400)
    if not fields.get("key"):
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'key' before the file.", 400)
    key = fields["key"].replace("${filename}", uploads.utf8_name(file_part.filename or b""))
    assert call.bucket is not None
    auth, policy = await authenticate_post({**fields, "key": key}, call.bucket, call.state.db, call.state.keyring, now)
    call.auth = auth
    return Form(fields, file_part, events, key, policy)


async def _within(chunks: AsyncIterator[bytes], length_range: tuple[int, int] | None) -> AsyncIterator[bytes]:
    """The file's bytes, stopped the moment they pass the policy's content-length-range (or end below it)."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if length_range is not None and seen > length_range[1]:
            raise S3Error(
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size.",
                400,
                MaxSizeAllowed=str(length_range[1]),
            )
        yield chunk
    if length_range is not None and seen < length_range[0]:
        raise S3Error(
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed size.",
            400,
            MinSizeAllowed=str(length_range[0]),
            ProposedSize=str(seen),
        )


async def store(call: Call, form: Form) -> Response:
    """Stream the file into the form's key and answer as the form asked (redirect, 200, 201 or 204)."""
    name = service.checked_name(call.principal, form.key, "write")
    content_type = form.fields.get("content-type") or form.file.content_type
    try:
        async with call.state.upload_slots:
            obj = await uploads.upload(
                call.state.db,
                call.state.storage,
                call.principal,
                name,
                _within(uploads.part_bytes(form.events), form.policy.length_range),
                declared=None,
                content_type=content_type,
                policy=call.state.upload_policy,
                headers=metadata.from_request(_as_headers(form.fields)),
            )
    except multipart.MultipartError as exc:
        raise _malformed(str(exc)) from None
    await _drain(form.events)
    return _answer(call, form, obj.etag)


def _as_headers(fields: dict[str, str]) -> dict[str, str]:
    """The form's fields as the headers of a PutObject would carry them (UTF-8 bytes, read as latin-1), so
    `x-amz-meta-*`, Cache-Control, Content-Disposition... are stored and returned as PutObject's are."""
    return {name: value.encode("utf-8").decode("latin-1") for name, value in fields.items()}


async def _drain(events: AsyncIterator[multipart.Event]) -> None:
    """Read what follows the file and drop it, as S3 does: the file is stored, so nothing here may turn the
    answer into an error; past MAX_FIELDS_BYTES reading stops (the server then closes the connection)."""
    seen = 0
    with contextlib.suppress(multipart.MultipartError):
        async for event in events:
            if isinstance(event, multipart.PartData):
                seen += len(event.data)
                if seen > MAX_FIELDS_BYTES:
                    return


def _location(call: Call, key: str) -> str:
    """The new object's URL, addressed as the form was (virtual-hosted forms post to `/`)."""
    url = call.request.url
    host = call.s3.headers.get("host") or url.netloc
    virtual = call.s3.raw_path in ("", "/")
    return f"{url.scheme}://{host}{'' if virtual else '/' + (call.bucket or '')}/{quote(key)}"


def _redirect(target: str, bucket: str, key: str, etag: str) -> str | None:
    """success_action_redirect with bucket, key and etag added to its query; None if it is no http(s) URL."""
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None  # S3 ignores a redirect it cannot use, and answers as success_action_status says
    query = urlencode({"bucket": bucket, "key": key, "etag": f'"{etag}"'})
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


def _answer(call: Call, form: Form, etag: str) -> Response:
    bucket = call.bucket or ""
    headers = {"ETag": f'"{etag}"', "Location": _location(call, form.key)}
    target = form.fields.get("success_action_redirect") or form.fields.get("redirect")
    redirect = _redirect(target, bucket, form.key, etag) if target else None
    if redirect is not None:
        return Response(status_code=303, headers={**headers, "Location": redirect})
    status = form.fields.get("success_action_status")
    if status == "201":
        body = xml.post_response(headers["Location"], bucket, form.key, etag)
        return Response(body, status_code=201, headers=headers, media_type="application/xml")
    # 200 answers an empty document; anything else (or nothing) is S3's default, 204
    return Response(status_code=200 if status == "200" else 204, headers=headers)
