"""Files: the folder listing (the storage service's keyset pages), previews, download, share links, delete,
upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from pydantic import Field

from pockity.console import sessions
from pockity.console.sessions import ConsoleUser
from pockity.console.templating import CSP, render
from pockity.db import DatabaseDep
from pockity.errors import PockityError, ValidationFailed
from pockity.kit import media_types
from pockity.kit.schemas import InputModel
from pockity.storage import deletes, direct, service, uploads
from pockity.storage.backends import StorageBackend

router = APIRouter(
    prefix="/files",
    include_in_schema=False,
    dependencies=[Depends(sessions.check_csrf), Depends(sessions.console_verified)],
)
PAGE_SIZE = 50
SHARE_CHOICES = ((3600, "1 hour"), (86400, "1 day"), (604800, "7 days"))
Name = Annotated[str, Query(min_length=1, max_length=1024)]
FormName = Annotated[str, Form(min_length=1, max_length=1024)]


def _backend(request: Request) -> StorageBackend:
    backend: StorageBackend = request.app.state.storage
    return backend


@dataclass(frozen=True)
class Crumb:
    label: str
    prefix: str


def breadcrumbs(folder: str) -> list[Crumb]:
    crumbs, walked = [Crumb("All files", "")], ""
    for part in folder.split("/")[:-1]:
        walked += part + "/"
        crumbs.append(Crumb(part, walked))
    return crumbs


def folder_of(name: str) -> str:
    return name.rsplit("/", 1)[0] + "/" if "/" in name else ""


def _listing_url(folder: str, **extra: str) -> str:
    query = {"prefix": folder, **extra} if folder else extra
    return "/files" + (f"?{urlencode(query)}" if query else "")


async def _page(db: DatabaseDep, principal: ConsoleUser, folder: str, filter_: str, cursor: str | None) -> service.Page:
    return await service.list_objects(
        db, principal, prefix=folder + filter_, delimiter="/", limit=PAGE_SIZE, cursor=cursor or None
    )


def as_folder(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


async def _listing_context(
    request: Request, db: DatabaseDep, principal: ConsoleUser, folder: str, filter_: str, cursor: str | None
) -> dict[str, Any]:
    page = await _page(db, principal, folder, filter_, cursor)
    return {
        "folder": folder,
        "filter": filter_,
        "page": page,
        "crumbs": breadcrumbs(folder),
        "more_url": _listing_url(folder, filter=filter_, cursor=page.next_cursor) if page.next_cursor else None,
        "listing_url": _listing_url,
        "share_choices": _share_choices(request),
        "direct_min": _direct_min(request),
    }


def _direct_min(request: Request) -> int:
    """From this size on the upload module sends files straight to storage (0: never)."""
    settings = request.app.state.settings
    return int(settings.console_direct_upload_min_bytes) if settings.console_sends_direct else 0


def files_csp(request: Request) -> str:
    """The files page's policy: with direct uploads to S3, the browser may also connect to the storage origin."""
    origin = request.app.state.settings.storage_origin if _direct_min(request) else None
    return CSP.replace("connect-src 'self'", f"connect-src 'self' {origin}") if origin else CSP


@router.get("")
async def listing(
    request: Request,
    principal: ConsoleUser,
    db: DatabaseDep,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    filter: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    folder = as_folder(prefix)
    context = await _listing_context(request, db, principal, folder, filter, cursor)
    if request.headers.get("hx-request") and cursor:  # "More": the next rows only
        return render(request, "files/_rows.html", **context)
    return render(request, "files/list.html", csp=files_csp(request), **context)


@router.get("/download")
async def download(request: Request, name: Name, principal: ConsoleUser, db: DatabaseDep) -> Response:
    obj = await service.get_object_meta(db, principal, name)
    return RedirectResponse(service.download(_backend(request), obj, 300).url, status_code=303)


def _share_choices(request: Request) -> list[tuple[int, str]]:
    maximum: int = request.app.state.settings.download_url_max_seconds
    return [(s, label) for s, label in SHARE_CHOICES if s <= maximum]


@router.post("/share")
async def share(
    request: Request,
    principal: ConsoleUser,
    db: DatabaseDep,
    name: FormName,
    expires_in: Annotated[int, Form()] = 3600,
) -> Response:
    choices = dict(_share_choices(request))
    if expires_in not in choices:
        expires_in = min(choices)
    obj = await service.get_object_meta(db, principal, name)
    link = service.download(_backend(request), obj, expires_in)
    template = "files/_share.html" if request.headers.get("hx-request") else "files/share.html"
    return render(request, template, link=link, label=choices[expires_in], folder=folder_of(name))


@router.get("/delete")
async def confirm_delete(request: Request, name: Name, principal: ConsoleUser, db: DatabaseDep) -> Response:
    obj = await service.get_object_meta(db, principal, name)
    return render(request, "files/delete.html", obj=obj, folder=folder_of(name), listing_url=_listing_url)


@router.post("/delete")
async def delete(request: Request, name: FormName, principal: ConsoleUser, db: DatabaseDep) -> Response:
    error = (await deletes.delete_objects(db, _backend(request), principal, [name]))[name]
    if error is not None:
        raise error
    return RedirectResponse(_listing_url(folder_of(name), deleted=name), status_code=303)


@router.get("/new-folder")
async def new_folder(
    request: Request,
    principal: ConsoleUser,
    db: DatabaseDep,
    name: Annotated[str, Query(max_length=200)] = "",
    prefix: Annotated[str, Query(max_length=1024)] = "",
) -> Response:
    """S3 has no folders: a folder is the names under a prefix. The new one is opened empty; it lasts once a
    file is uploaded into it. Its name passes the same rules as a file's (checked on a name inside it)."""
    folder = as_folder(prefix)
    wanted = name.strip().strip("/")
    try:
        if not wanted:
            raise ValidationFailed("Give the new folder a name.")
        service.checked_name(principal, f"{folder}{wanted}/x", "write")
    except PockityError as exc:
        context = await _listing_context(request, db, principal, folder, "", None)
        return render(request, "files/list.html", status_code=exc.status, folder_error=exc.message, **context)
    return RedirectResponse(_listing_url(f"{folder}{wanted}/", created="1"), status_code=303)


MAX_SELECTED = 1000  # one DeleteObjects call


def _selected(names: list[str]) -> list[str]:
    chosen = list(dict.fromkeys(n for n in names if n))
    if not chosen:
        raise ValidationFailed("Choose the files to delete first.")
    if len(chosen) > MAX_SELECTED:
        raise ValidationFailed(f"At most {MAX_SELECTED} files can be deleted at once.")
    return chosen


@router.get("/delete-many")
async def confirm_delete_many(
    request: Request,
    principal: ConsoleUser,
    names: Annotated[list[str], Query(max_length=MAX_SELECTED + 1)],
    prefix: Annotated[str, Query(max_length=1024)] = "",
) -> Response:
    chosen = _selected(names)
    return render(request, "files/delete_many.html", names=chosen, folder=prefix, listing_url=_listing_url)


@router.post("/delete-many")
async def delete_many(
    request: Request,
    principal: ConsoleUser,
    db: DatabaseDep,
    names: Annotated[list[str], Form(max_length=MAX_SELECTED + 1)],
    prefix: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Delete the chosen files (the storage service's batch delete: each name checked and scoped as usual)."""
    results = await deletes.delete_objects(db, _backend(request), principal, _selected(names))
    errors = {name: exc for name, exc in results.items() if exc is not None}
    if errors:
        deleted = len(results) - len(errors)
        return render(
            request,
            "files/delete_many.html",
            status_code=200 if deleted else next(iter(errors.values())).status,
            names=list(errors),
            failed={name: exc.message for name, exc in errors.items()},
            deleted=deleted,
            folder=prefix,
            listing_url=_listing_url,
        )
    return RedirectResponse(_listing_url(prefix, deleted=f"{len(results)} files"), status_code=303)


@router.post("/upload", status_code=201)
async def upload(
    request: Request, principal: ConsoleUser, db: DatabaseDep, name: Annotated[str, Query(max_length=1024)]
) -> Response:
    """One file as multipart/form-data, streamed to storage as it arrives (our upload module's XHR)."""
    async with request.app.state.upload_slots:
        stored = await uploads.upload_form(
            db,
            _backend(request),
            principal,
            request.stream(),
            request.headers.get("content-type", ""),
            name=name,
            policy=request.app.state.upload_policy,
            check_name=lambda n: service.checked_name(principal, n, "write"),
        )
    return PlainTextResponse(stored.name, status_code=201, headers={"Cache-Control": "no-store"})


# --- straight to storage (the direct-upload API, in parts) ------------------------------------------------


class DirectStartIn(InputModel):
    name: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)
    content_type: str | None = Field(None, max_length=255)


class PartDoneIn(InputModel):
    part_number: int = Field(ge=1, le=10000)
    etag: str = Field(min_length=1, max_length=200)


class DirectCompleteIn(InputModel):
    parts: list[PartDoneIn] = Field(min_length=1, max_length=10000)


def _sentence(exc: PockityError) -> PlainTextResponse:
    return PlainTextResponse(exc.message, status_code=exc.status, headers={"Cache-Control": "no-store"})


def _same_origin(settings: Any, url: str) -> str:
    """The local backend's part URLs name PUBLIC_BASE_URL; the page uses them as paths of the origin it was
    served from (the same server), whatever host name the browser used."""
    base = settings.base_url
    return url[len(base) :] if settings.storage_origin is None and url.startswith(base + "/") else url


@router.post("/direct")
async def direct_start(request: Request, principal: ConsoleUser, db: DatabaseDep, body: DirectStartIn) -> Response:
    """Reserve the file's size (a quota refusal comes now, before any byte) and presign one PUT per part: the
    same service call as `POST /api/storage/uploads` with `multipart: true`."""
    settings = request.app.state.settings
    if not settings.console_sends_direct:
        return _sentence(ValidationFailed("Uploads go through the server here.", code="direct_uploads_off"))
    try:
        name = service.checked_name(principal, body.name, "write")
        started = await direct.start_multipart(
            db,
            _backend(request),
            principal,
            name,
            body.size,
            body.content_type,
            part_size=settings.console_direct_part_bytes,
            policy=request.app.state.upload_policy,
            expires_in=settings.direct_upload_expires_seconds,
        )
    except PockityError as exc:
        return _sentence(exc)
    parts = [{"partNumber": p.part_number, "size": p.size, "url": _same_origin(settings, p.url)} for p in started.parts]
    return JSONResponse({"uploadId": started.upload_id, "parts": parts}, headers={"Cache-Control": "no-store"})


@router.post("/direct/{upload_id}/complete")
async def direct_complete(
    request: Request, upload_id: str, principal: ConsoleUser, db: DatabaseDep, body: DirectCompleteIn
) -> Response:
    try:
        stored = await direct.complete(
            db, _backend(request), principal, upload_id, [(p.part_number, p.etag) for p in body.parts]
        )
    except PockityError as exc:
        return _sentence(exc)
    return PlainTextResponse(stored.name, status_code=201, headers={"Cache-Control": "no-store"})


@router.post("/direct/{upload_id}/cancel")
async def direct_cancel(request: Request, upload_id: str, principal: ConsoleUser, db: DatabaseDep) -> Response:
    try:
        await direct.cancel(db, _backend(request), principal, upload_id)
    except PockityError as exc:
        return _sentence(exc)
    return PlainTextResponse("Cancelled", headers={"Cache-Control": "no-store"})


# --- previews ----------------------------------------------------------------------------------------------

TEXT_PREVIEW_BYTES = 64 * 1024
_TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/markdown", "application/json"})
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"})
# The preview page may frame this site's own PDF responses (and nothing else).
PREVIEW_CSP = CSP.replace("object-src 'none'", "object-src 'none'; frame-src 'self'")
# A file served for a preview: nothing in it can run or load anything, and only our preview page may frame it.
RAW_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'"


def preview_kind(content_type: str | None, size: int) -> str | None:
    """How a file is previewed: "image", "pdf", "text", or None (download only). Only passive types: an SVG or
    HTML file is never shown inline, whatever its name."""
    kind = media_types.essence(media_types.safe(content_type))
    if kind in _IMAGE_TYPES:
        return "image"
    if kind == "application/pdf":
        return "pdf"
    if kind in _TEXT_TYPES or (kind == "application/octet-stream" and size == 0):
        return "text"
    return None


@router.get("/preview")
async def preview(request: Request, name: Name, principal: ConsoleUser, db: DatabaseDep) -> Response:
    obj = await service.get_object_meta(db, principal, name)
    kind = preview_kind(obj.content_type, obj.size)
    text, cut = None, False
    if kind == "text":
        end = min(obj.size, TEXT_PREVIEW_BYTES) - 1
        _, body = await service.open_content(_backend(request), obj, (0, end) if end >= 0 else None)
        chunks = [chunk async for chunk in body] if end >= 0 else []
        text = b"".join(chunks)[:TEXT_PREVIEW_BYTES].decode("utf-8", errors="replace")
        cut = obj.size > TEXT_PREVIEW_BYTES
    return render(
        request,
        "files/preview.html",
        csp=PREVIEW_CSP,
        obj=obj,
        kind=kind,
        text=text,
        cut=cut,
        folder=folder_of(name),
        listing_url=_listing_url,
        raw_url="/files/raw?" + urlencode({"name": name}),
    )


@router.get("/raw")
async def raw(request: Request, name: Name, principal: ConsoleUser, db: DatabaseDep) -> Response:
    """The bytes of an image or PDF for the preview page, from this origin, under a sandbox."""
    obj = await service.get_object_meta(db, principal, name)
    kind = preview_kind(obj.content_type, obj.size)
    if kind not in ("image", "pdf"):
        raise ValidationFailed("This file has no inline preview; download it instead.", code="no_preview")
    info, body = await service.open_content(_backend(request), obj, None)
    headers = {
        "Content-Length": str(info.size),
        "Content-Security-Policy": RAW_CSP,
        "X-Frame-Options": "SAMEORIGIN",
        "Cache-Control": "private, no-store",
        "Content-Disposition": "inline",
    }
    return StreamingResponse(body, headers=headers, media_type=media_types.essence(obj.content_type or ""))
