"""Copying one of a user's files to another name inside storage (the S3 API's CopyObject).

A flow module like uploads.py: the destination is reserved exactly as an upload of the source's size would be
(quota, object count, upload slot, the name's lock), the bytes are copied by the backend without passing
through Pockity, and the new file is recorded — or, on failure, released like a failed upload.
"""

from __future__ import annotations

from pockity.auth.schemas import Principal
from pockity.db import Database
from pockity.models import StorageObject
from pockity.storage import service, uploads
from pockity.storage.backends import StorageBackend
from pockity.storage.keys import physical_key


async def copy_object(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    source: str,
    dest: str,
    *,
    content_type: str | None,
    keep_content_type: bool,
    policy: uploads.UploadPolicy,
) -> StorageObject:
    """Copy `source` to `dest` (read scope on the one, write on the other); the content type is the source's
    when `keep_content_type`, else `content_type`."""
    service.checked_name(principal, dest, "write")
    meta = await service.get_object_meta(db, principal, source)
    content_type = meta.content_type if keep_content_type else uploads.checked_content_type(content_type)
    ticket = await uploads.begin(db, principal, dest, meta.size, policy)
    try:
        info = await backend.copy(physical_key(principal.user_id, source), physical_key(principal.user_id, dest))
    except BaseException as exc:
        if uploads.outcome_unknown(exc):
            await uploads.abort_unknown(db, backend, ticket, policy)
        else:
            await uploads.abort(db, ticket)
        raise
    return await uploads.finish(db, backend, ticket, info, content_type)
