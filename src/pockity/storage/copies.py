"""Copying one of a user's files to another name inside storage (the S3 API's CopyObject).

A flow module like uploads.py: the destination is reserved exactly as an upload of the source's size would be
(quota, object count, upload slot, the name's lock), the bytes are copied by the backend without passing
through Pockity, and the new file is recorded — or, on failure, released like a failed upload.
"""

from __future__ import annotations

from collections.abc import Callable

from pockity.auth.schemas import Principal
from pockity.db import Database
from pockity.kit.time import utcnow
from pockity.models import StorageObject
from pockity.storage import service, uploads
from pockity.storage.backends import ObjectInfo, StorageBackend
from pockity.storage.keys import physical_key

SourceCheck = Callable[[service.ObjectMeta], None]


async def copy_object(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    source: str,
    dest: str,
    *,
    content_type: str | None,
    headers: dict[str, str] | None,
    keep_metadata: bool,
    policy: uploads.UploadPolicy,
    source_check: SourceCheck | None = None,
) -> StorageObject:
    """Copy `source` to `dest` (read scope on the one, write on the other). The content type and stored headers
    are the source's when `keep_metadata`, else `content_type` and `headers`. `source_check` sees the source
    before anything is reserved (S3's x-amz-copy-source-if-*) and may refuse the copy by raising."""
    service.checked_name(principal, dest, "write")
    meta = await service.get_object_meta(db, principal, source)
    if source_check is not None:
        source_check(meta)
    if keep_metadata:
        content_type, headers = meta.content_type, meta.headers
    else:
        content_type = uploads.checked_content_type(content_type)
    if source == dest:
        return await _replace_metadata(db, backend, principal, dest, meta.size, content_type, headers, policy)
    ticket = await uploads.begin(db, principal, dest, meta.size, policy)
    try:
        info = await backend.copy(physical_key(principal.user_id, source), physical_key(principal.user_id, dest))
    except BaseException as exc:
        if uploads.outcome_unknown(exc):
            await uploads.abort_unknown(db, backend, ticket, policy)
        else:
            await uploads.abort(db, ticket)
        raise
    return await uploads.finish(db, backend, ticket, info, content_type, headers=headers)


async def _replace_metadata(
    db: Database,
    backend: StorageBackend,
    principal: Principal,
    name: str,
    size: int,
    content_type: str | None,
    headers: dict[str, str] | None,
    policy: uploads.UploadPolicy,
) -> StorageObject:
    """A copy onto itself with new metadata: the bytes stay where they are, only the row changes — under the
    name's lock, from the row as it is then (another upload may have replaced the file since it was read)."""
    current: list[StorageObject] = []

    def under_lock(existing: StorageObject | None) -> None:
        if existing is None:
            raise service.FileNotFound(details={"key": name})
        current.append(existing)

    ticket = await uploads.begin(db, principal, name, size, policy, precondition=under_lock)
    try:
        found = current[0]
        info = ObjectInfo(name, found.size, found.etag, content_type, utcnow())
    except BaseException:
        await uploads.abort(db, ticket)
        raise
    return await uploads.finish(db, backend, ticket, info, content_type, headers=headers)
