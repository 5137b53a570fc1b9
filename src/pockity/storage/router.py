from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import StreamingResponse

from pockity.auth.dependencies import VerifiedPrincipal
from pockity.db import DatabaseDep
from pockity.errors import BadRequest
from pockity.kit import media_types
from pockity.openapi import CONFLICT, STORAGE
from pockity.storage import deletes, direct, events, service, uploads
from pockity.storage.backends import StorageBackend
from pockity.storage.schemas import (
    BatchDeleteIn,
    BatchDeleteOut,
    CancelledOut,
    CompleteIn,
    DeletedOut,
    DirectUploadIn,
    DirectUploadOut,
    DownloadOut,
    EventsOut,
    ObjectOut,
    ObjectPage,
    UsageOut,
)

router = APIRouter(prefix="/api/storage", tags=["storage"], responses=CONFLICT | STORAGE)
log = logging.getLogger("pockity.storage")


async def get_backend(request: Request) -> StorageBackend:
    # async: a plain `def` dependency would hop to a worker thread on every storage request.
    backend: StorageBackend = request.app.state.storage
    return backend


BackendDep = Annotated[StorageBackend, Depends(get_backend)]
_UPLOAD_RESPONSES: dict[int | str, dict[str, str]] = {
    403: {"description": "object_quota_exceeded or scope_denied"},
    409: {"description": "object_busy: another upload or delete of this name is in progress"},
    413: {"description": "storage_quota_exceeded or file_too_large"},
    503: {"description": "storage_unavailable"},
}


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("Content-Length is not a number.", code="invalid_content_length")
    return int(value)


@router.put(
    "/files/{key:path}", status_code=status.HTTP_201_CREATED, response_model=ObjectOut, responses=_UPLOAD_RESPONSES
)
async def put_file(
    key: str, request: Request, principal: VerifiedPrincipal, db: DatabaseDep, backend: BackendDep
) -> object:
    """Upload the raw request body as `key` (`curl -T file URL`); replaces an existing file."""
    name = service.checked_name(principal, key, "write")
    async with request.app.state.upload_slots:
        return await uploads.upload(
            db,
            backend,
            principal,
            name,
            request.stream(),
            declared=_declared_length(request),
            content_type=request.headers.get("content-type"),
            policy=request.app.state.upload_policy,
        )


@router.post(
    "/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=ObjectOut,
    responses={**_UPLOAD_RESPONSES, 415: {"description": "unsupported_media_type: not multipart/form-data"}},
)
async def upload_form(
    request: Request,
    principal: VerifiedPrincipal,
    db: DatabaseDep,
    backend: BackendDep,
    key: Annotated[str | None, Query(description="The file name; or a `key` form field before `file`")] = None,
) -> object:
    """Upload a multipart/form-data `file` part, streamed to storage as it arrives."""
    async with request.app.state.upload_slots:
        return await uploads.upload_form(
            db,
            backend,
            principal,
            request.stream(),
            request.headers.get("content-type", ""),
            name=key,
            policy=request.app.state.upload_policy,
            check_name=lambda n: service.checked_name(principal, n, "write"),
        )


@router.get("/files", response_model=ObjectPage)
async def list_files(
    principal: VerifiedPrincipal,
    db: DatabaseDep,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    delimiter: Annotated[str | None, Query(max_length=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> object:
    return await service.list_objects(db, principal, prefix=prefix, delimiter=delimiter, limit=limit, cursor=cursor)


@router.get(
    "/files/{key:path}/content",
    response_class=StreamingResponse,
    responses={416: {"description": "range_not_satisfiable"}},
)
async def get_content(
    key: str, request: Request, principal: VerifiedPrincipal, db: DatabaseDep, backend: BackendDep
) -> StreamingResponse:
    """Stream the file through Pockity; one `Range: bytes=` range is honoured (206)."""
    obj = await service.get_object_meta(db, principal, key)
    byte_range = service.parse_range(request.headers.get("range"), obj.size)
    info, body = await service.open_content(backend, obj, byte_range)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{info.etag}"',
        **service.download_headers(obj.name, obj.content_type),
    }
    if byte_range:
        start, end = byte_range
        headers.update({"Content-Range": f"bytes {start}-{end}/{info.size}", "Content-Length": str(end - start + 1)})
    else:
        headers["Content-Length"] = str(info.size)
    return StreamingResponse(
        body,
        status_code=206 if byte_range else 200,
        headers=headers,
        media_type=media_types.safe(obj.content_type),
    )


@router.get("/files/{key:path}", response_model=DownloadOut)
async def get_file(
    key: str,
    request: Request,
    principal: VerifiedPrincipal,
    db: DatabaseDep,
    backend: BackendDep,
    expires_in: Annotated[int, Query(alias="expiresIn", ge=1, le=604800)] = 3600,
) -> object:
    """Metadata and a time-limited download URL."""
    if expires_in > request.app.state.settings.download_url_max_seconds:
        raise BadRequest("expiresIn is above the server's maximum.", code="invalid_expiry")
    obj = await service.get_object_meta(db, principal, key)
    return service.download(backend, obj, expires_in)


@router.delete("/files/{key:path}", response_model=DeletedOut)
async def delete_file(key: str, principal: VerifiedPrincipal, db: DatabaseDep, backend: BackendDep) -> object:
    results = await deletes.delete_objects(db, backend, principal, [key])
    error = results[key]
    if error is not None:
        raise error
    return {"key": key, "deleted": True}


@router.post("/files/delete", response_model=BatchDeleteOut)
async def delete_files(
    body: BatchDeleteIn, principal: VerifiedPrincipal, db: DatabaseDep, backend: BackendDep
) -> object:
    """Delete up to 1000 files; each gets its own result."""
    return await deletes.delete_batch(db, backend, principal, body.keys)


@router.get("/usage", response_model=UsageOut)
async def get_usage(principal: VerifiedPrincipal, db: DatabaseDep) -> object:
    return await service.read_usage(db, principal.user_id)


@router.post(
    "/uploads", status_code=status.HTTP_201_CREATED, response_model=DirectUploadOut, responses=_UPLOAD_RESPONSES
)
async def start_direct_upload(
    body: DirectUploadIn, request: Request, principal: VerifiedPrincipal, db: DatabaseDep, backend: BackendDep
) -> object:
    """Reserve `size` bytes and get a presigned POST (url + form fields) to send the file straight to storage."""
    name = service.checked_name(principal, body.key, "write")
    settings = request.app.state.settings
    expires_in = direct.upload_expiry(
        body.expires_in,
        default=settings.direct_upload_expires_seconds,
        maximum=settings.direct_upload_max_expires_seconds,
    )
    policy = request.app.state.upload_policy
    if body.multipart:
        return await direct.start_multipart(
            db,
            backend,
            principal,
            name,
            body.size,
            body.content_type,
            part_size=body.part_size,
            policy=policy,
            expires_in=expires_in,
        )
    return await direct.start(
        db, backend, principal, name, body.size, body.content_type, policy=policy, expires_in=expires_in
    )


@router.post("/uploads/{upload_id}/complete", status_code=status.HTTP_201_CREATED, response_model=ObjectOut)
async def complete_direct_upload(
    upload_id: str, principal: VerifiedPrincipal, db: DatabaseDep, backend: BackendDep, body: CompleteIn | None = None
) -> object:
    """Record a file sent with a presigned POST (or assemble its parts: `{"parts": [{partNumber, etag}]}`)."""
    parts = [(p.part_number, p.etag) for p in body.parts] if body and body.parts else None
    return await direct.complete(db, backend, principal, upload_id, parts)


@router.delete("/uploads/{upload_id}", response_model=CancelledOut)
async def cancel_direct_upload(
    upload_id: str, principal: VerifiedPrincipal, db: DatabaseDep, backend: BackendDep
) -> object:
    await direct.cancel(db, backend, principal, upload_id)
    return {"upload_id": upload_id, "cancelled": True}


@router.post("/events", response_model=EventsOut, responses={401: {"description": "invalid_token (S3_EVENTS_TOKEN)"}})
async def ingest_events(request: Request, db: DatabaseDep, backend: BackendDep, token: str | None = None) -> object:
    """S3 event notifications (AWS `Records`, SNS envelopes); `Authorization: Bearer S3_EVENTS_TOKEN` or ?token=."""
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or token
    settings = request.app.state.settings
    events.check_token(given, settings.s3_events_token)
    return await events.receive(db, backend, settings.s3_bucket, await request.body())
