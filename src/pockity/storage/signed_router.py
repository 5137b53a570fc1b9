"""Routes for the local backend's presigned URLs; included only when the backend serves its own (app.py).

The signature in the URL or form is the authorization, so these routes take no other credentials.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response, StreamingResponse

from pockity.db import DatabaseDep
from pockity.kit import media_types
from pockity.storage import service, signed
from pockity.storage.backends import SignedEndpoints
from pockity.storage.backends.base import content_disposition
from pockity.storage.router import BackendDep

router = APIRouter(prefix="/api/storage", tags=["storage"], include_in_schema=False)


def get_signed(request: Request) -> SignedEndpoints:
    endpoints: SignedEndpoints = request.app.state.signed_endpoints
    return endpoints


SignedDep = Annotated[SignedEndpoints, Depends(get_signed)]


@router.get("/signed/{key:path}")
async def signed_download(
    key: str,
    request: Request,
    backend: BackendDep,
    endpoints: SignedDep,
    expires: str = "",
    signature: str = "",
    filename: str | None = None,
) -> StreamingResponse:
    """A presigned download URL."""
    info, body, byte_range = await signed.open_download(
        backend,
        endpoints,
        key,
        expires=expires,
        signature=signature,
        filename=filename,
        range_header=request.headers.get("range"),
    )
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{info.etag}"'}
    if byte_range:
        headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{info.size}"
    headers.update(service.download_headers(key, info.content_type))
    if filename:  # the name the link was signed for
        headers["Content-Disposition"] = content_disposition(filename)
    return StreamingResponse(
        body,
        status_code=206 if byte_range else 200,
        headers=headers,
        media_type=media_types.safe(info.content_type),
    )


@router.post("/direct/{upload_id}", status_code=status.HTTP_204_NO_CONTENT)
async def direct_post(
    upload_id: str, request: Request, db: DatabaseDep, backend: BackendDep, endpoints: SignedDep
) -> None:
    """A presigned form POST: the HMAC-signed form fields are the authorization."""
    await signed.receive_post(
        db, backend, endpoints, upload_id, request.stream(), request.headers.get("content-type", "")
    )


@router.put("/parts/{upload_id}/{part_number}")
async def part_put(
    upload_id: str,
    part_number: str,
    request: Request,
    db: DatabaseDep,
    endpoints: SignedDep,
    size: str = "",
    expires: str = "",
    signature: str = "",
) -> Response:
    """A presigned part URL: the HMAC signature (over the exact size) is the authorization."""
    # Anything malformed simply fails the signature check (403), like S3.
    number, length, until = (int(v) if v.isdigit() else -1 for v in (part_number, size, expires))
    etag = await signed.receive_part(db, endpoints, upload_id, number, length, until, signature, request.stream())
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})
