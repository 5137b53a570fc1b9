"""Local-disk storage: ROOT/data holds the objects, ROOT/meta their metadata, ROOT/tmp uploads in progress.

Three separate trees, so no object key can ever name a metadata or temp file. All file I/O runs in worker
threads. A key may not be both an object and a "directory" of other keys ("a" and "a/b"): a filesystem
cannot hold both, so the second one is refused with InvalidKey.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import stat
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

import anyio
from anyio.to_thread import run_sync

from pockity.storage.backends.base import (
    DEFAULT_CONTENT_TYPE,
    MAX_KEY_BYTES,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    resolve_range,
)
from pockity.storage.backends.local_multipart import LocalMultipart

WRITE_BATCH = 1024 * 1024  # coalesce small request chunks: one thread hop per MiB, not per 64 KiB
READ_CHUNK = 256 * 1024
INFO_BATCH = 256  # objects described per thread hop while listing
DELETE_BATCH = 1000  # keys deleted per thread hop
STALE_UPLOAD_SECONDS = 24 * 3600


def check_key(key: str) -> None:
    """Refuse keys that could escape the root or that a filesystem cannot store faithfully."""
    try:
        too_long = len(key.encode("utf-8")) > MAX_KEY_BYTES
    except UnicodeEncodeError:
        raise InvalidKey() from None
    if not key or too_long or "\x00" in key or "\\" in key or key.startswith("/"):
        raise InvalidKey()
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKey()


class LocalBackend(LocalMultipart):
    name = "local"

    def __init__(self, root: Path, public_base_url: str, signing_key: bytes) -> None:
        if not signing_key:
            raise ValueError("signing_key must not be empty")
        self._root = Path(root)
        self._base_url = public_base_url.rstrip("/")
        self._signing_key = signing_key
        self._data = self._root / "data"
        self._meta = self._root / "meta"
        self._tmp = self._root / "tmp"

    async def start(self) -> None:
        """Create the root's three trees and clear uploads a crash left behind."""
        await run_sync(self._prepare)

    def _prepare(self) -> None:
        for tree in (self._data, self._meta, self._tmp):
            tree.mkdir(parents=True, exist_ok=True)
        # Resolved once, so containment checks compare real paths even if ROOT is behind a symlink.
        self._data, self._meta, self._tmp = self._data.resolve(), self._meta.resolve(), self._tmp.resolve()
        self._remove_stale(STALE_UPLOAD_SECONDS)  # other workers may be uploading right now

    def _remove_stale(self, older_than_seconds: float, keep: Collection[str] = ()) -> int:
        cutoff, removed = time.time() - older_than_seconds, 0
        for entry in os.scandir(self._tmp):
            if entry.name.removeprefix("mp-") in keep:  # an upload Pockity still tracks
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    if entry.is_dir(follow_symlinks=False):  # an abandoned multipart upload's parts
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                    removed += 1
        return removed

    async def abort_stale_uploads(self, older_than: timedelta, prefix: str = "", keep: Collection[str] = ()) -> int:
        """Remove temporary upload files older than `older_than` (left by a crash), except the uploads in `keep`."""
        return await run_sync(self._remove_stale, older_than.total_seconds(), keep)

    async def close(self) -> None:
        """Nothing to release."""

    async def ping(self) -> None:
        """The data tree must exist and be writable."""
        if not await run_sync(os.access, self._data, os.W_OK | os.X_OK):
            raise StorageUnavailable("The storage directory is not writable.")

    def _path(self, tree: Path, key: str) -> Path:
        path = tree.joinpath(*key.split("/")).resolve()
        if not path.is_relative_to(tree) or path == tree:  # a symlink pointing out of the tree
            raise InvalidKey()
        return path

    # --- writing ---------------------------------------------------------------------------------

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str | None,
        size_hint: int | None = None,
    ) -> ObjectInfo:
        """Write to a temp file in ROOT/tmp, then os.replace it into place; nothing remains on error."""
        check_key(key)
        content_type = content_type or DEFAULT_CONTENT_TYPE
        target = await run_sync(self._path, self._data, key)
        fd, tmp_name = await run_sync(lambda: tempfile.mkstemp(dir=self._tmp, prefix="upload-"))
        tmp = Path(tmp_name)
        file = os.fdopen(fd, "wb")
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            pending = bytearray()
            async for chunk in chunks:  # the caller may raise in here (e.g. over quota)
                pending += chunk
                if len(pending) >= WRITE_BATCH:
                    data, pending = pending, bytearray()
                    await run_sync(self._write, file, md5, data)
            await run_sync(self._write, file, md5, pending)
            return await run_sync(self._commit, file, tmp, target, key, md5.hexdigest(), content_type)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_sync(self._discard, file, tmp)
            raise

    @staticmethod
    def _write(file: IO[bytes], md5: Any, data: bytearray) -> None:
        file.write(data)
        md5.update(data)

    @staticmethod
    def _discard(file: IO[bytes], tmp: Path) -> None:
        file.close()
        tmp.unlink(missing_ok=True)

    def _commit(
        self, file: IO[bytes], tmp: Path, target: Path, key: str, etag: str, content_type: str | None
    ) -> ObjectInfo:
        file.flush()
        os.fsync(file.fileno())  # the rename below must never expose a file whose data is not on disk
        size = os.fstat(file.fileno()).st_size
        file.close()
        self._install(tmp, target)
        meta = json.dumps({"content_type": content_type, "etag": etag, "size": size}).encode()
        fd, meta_tmp = tempfile.mkstemp(dir=self._tmp, prefix="meta-")
        with os.fdopen(fd, "wb") as f:
            f.write(meta)
        self._install(Path(meta_tmp), self._path(self._meta, key))
        return ObjectInfo(key, size, etag, content_type, _mtime(target.stat()))

    def _install(self, tmp: Path, target: Path) -> None:
        try:
            # Retried once: a concurrent delete may prune the freshly created parent directory.
            for attempt in (1, 2):
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(tmp, target)
                    return
                except FileNotFoundError:
                    if attempt == 2:
                        raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InvalidKey("The key clashes with another key or is too long to store.") from exc

    # --- reading ---------------------------------------------------------------------------------

    def _read_meta(self, key: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path(self._meta, key).read_bytes())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _describe(self, key: str, st: os.stat_result) -> ObjectInfo:
        meta = self._read_meta(key)
        # Files placed here by hand have no metadata: a weak etag from size and mtime still changes with them.
        etag = meta.get("etag") or f"{st.st_size:x}-{st.st_mtime_ns:x}"
        return ObjectInfo(key, st.st_size, str(etag), meta.get("content_type"), _mtime(st))

    def _stat_object(self, key: str) -> tuple[Path, os.stat_result]:
        path = self._path(self._data, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound() from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound()
        return path, st

    async def head(self, key: str) -> ObjectInfo:
        """Stat the file and read its metadata; raises ObjectNotFound."""
        check_key(key)
        return await run_sync(lambda: self._describe(key, self._stat_object(key)[1]))

    async def open_range(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> tuple[ObjectInfo, AsyncIterator[bytes]]:
        """Open the file now (a later replace or delete cannot change what is read) and stream the range."""
        check_key(key)

        def _open() -> tuple[ObjectInfo, IO[bytes], int]:
            path = self._stat_object(key)[0]
            file = path.open("rb")
            try:
                info = self._describe(key, os.fstat(file.fileno()))
                first, last = resolve_range(info.size, start, end)
                file.seek(first)
            except BaseException:
                file.close()
                raise
            return info, file, last - first + 1

        info, file, length = await run_sync(_open)
        return info, self._stream(file, length)

    @staticmethod
    async def _stream(file: IO[bytes], remaining: int) -> AsyncIterator[bytes]:
        try:
            while remaining > 0:
                chunk = await run_sync(file.read, min(READ_CHUNK, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def copy(self, source: str, dest: str) -> ObjectInfo:
        """Stream the source into a new file installed at dest like any other write (same content type)."""
        check_key(dest)
        info, body = await self.open_range(source)
        return await self.put_stream(dest, body, content_type=info.content_type, size_hint=info.size)

    # --- deleting --------------------------------------------------------------------------------

    def _delete(self, key: str) -> None:
        check_key(key)
        for tree in (self._data, self._meta):
            path = self._path(tree, key)
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue  # already gone, or only a "directory" of other keys: nothing to delete
            self._prune(tree, path.parent)

    @staticmethod
    def _prune(tree: Path, directory: Path) -> None:
        # Empty directories would otherwise pile up; rmdir fails harmlessly on a non-empty one.
        while directory != tree and directory.is_relative_to(tree):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    async def delete(self, key: str) -> None:
        """Remove the file and its metadata; a missing object is not an error."""
        await run_sync(self._delete, key)

    async def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete each key; returns key -> message for the ones that failed."""

        def _batch(batch: Sequence[str]) -> dict[str, str]:
            failures: dict[str, str] = {}
            for key in batch:
                try:
                    self._delete(key)
                except (StorageError, OSError) as exc:
                    failures[key] = exc.message if isinstance(exc, StorageError) else exc.strerror or "error"
            return failures

        failures: dict[str, str] = {}
        for i in range(0, len(keys), DELETE_BATCH):
            failures.update(await run_sync(_batch, keys[i : i + DELETE_BATCH]))
        return failures

    # --- signed URLs -----------------------------------------------------------------------------

    def _signature(self, key: str, expires: int, filename: str | None) -> str:
        # JSON keeps the fields unambiguous even when key or filename contain separators.
        message = json.dumps([key, expires, filename], ensure_ascii=False).encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def presign_get(self, key: str, expires_in: int, *, filename: str | None = None) -> str:
        """A Pockity URL (served by the storage router) carrying an expiry and an HMAC-SHA256 signature."""
        check_key(key)
        filename = filename or None  # "" and None must sign alike, as verify_download treats them alike
        expires = int(time.time()) + expires_in
        query: dict[str, str | int] = {"expires": expires, "signature": self._signature(key, expires, filename)}
        if filename:
            query["filename"] = filename
        return f"{self._base_url}/api/storage/signed/{quote(key, safe='/')}?{urlencode(query)}"

    async def presign_post(
        self, key: str, *, max_size: int, content_type: str, expires_in: int, upload_id: str
    ) -> tuple[str, dict[str, str]]:
        """A Pockity form-upload URL and signed fields, shaped like an S3 POST policy (see the storage router)."""
        check_key(key)
        expires = int(time.time()) + expires_in
        fields = {
            "key": key,
            "Content-Type": content_type,
            "x-pockity-max-size": str(max_size),
            "x-pockity-expires": str(expires),
        }
        fields["x-pockity-signature"] = self._post_signature(upload_id, fields)
        return f"{self._base_url}/api/storage/direct/{quote(upload_id, safe='')}", fields

    def _post_signature(self, upload_id: str, fields: dict[str, str]) -> str:
        message = json.dumps(
            [
                "post",
                upload_id,
                fields.get("key"),
                fields.get("Content-Type"),
                fields.get("x-pockity-max-size"),
                fields.get("x-pockity-expires"),
            ],
            ensure_ascii=False,
        ).encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def verify_post(self, upload_id: str, fields: dict[str, str]) -> bool:
        """True if the form fields are the ones presign_post signed for this upload and have not expired."""
        try:
            expired = int(fields.get("x-pockity-expires", "")) < time.time()
        except ValueError:
            return False
        expected = self._post_signature(upload_id, fields).encode()
        given = fields.get("x-pockity-signature", "").encode("utf-8", "replace")
        return not expired and hmac.compare_digest(expected, given)

    def verify_download(self, key: str, expires: str, signature: str, *, filename: str | None = None) -> bool:
        """True if the signature was made by presign_get for this key (and filename) and has not expired."""
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            return False
        if expires_at < time.time():
            return False
        expected = self._signature(key, expires_at, filename or None).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))

    # --- listing ---------------------------------------------------------------------------------

    async def iter_objects(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
        """Depth-first walk, each directory sorted so the overall order is the keys' byte order."""
        base, _, name_prefix = prefix.rpartition("/")
        try:
            if base:
                check_key(base)  # e.g. "a//": no storable key can lie under such a prefix
            start_dir = await run_sync(self._path, self._data, base) if base else self._data
        except InvalidKey:
            return
        after = start_after or ""
        stack = [(base + "/" if base else "", await run_sync(_sorted_entries, start_dir, name_prefix))]
        while stack:
            dir_key, entries = stack[-1]
            if not entries:
                stack.pop()
                continue
            batch: list[str] = []
            while entries and not entries[0][1] and len(batch) < INFO_BATCH:
                key = dir_key + entries.popleft()[0]
                if key > after:
                    batch.append(key)
            if batch:
                for info in await run_sync(self._describe_many, batch):
                    yield info
                continue
            if not entries or not entries[0][1]:
                continue
            sub = dir_key + entries.popleft()[0] + "/"
            if sub < after and not after.startswith(sub):
                continue  # every key below sorts before start_after
            path = self._data.joinpath(*sub[:-1].split("/"))
            stack.append((sub, await run_sync(_sorted_entries, path, "")))

    def _describe_many(self, keys: list[str]) -> list[ObjectInfo]:
        infos = []
        for key in keys:
            try:
                st = self._data.joinpath(*key.split("/")).stat(follow_symlinks=False)
            except OSError:
                continue  # deleted while we were listing
            infos.append(self._describe(key, st))
        return infos


def _sorted_entries(directory: Path, name_prefix: str) -> deque[tuple[str, bool]]:
    """(name, is_dir) sorted by name, with "/" appended to directories: that is the order of the full keys."""
    entries = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.name.startswith(name_prefix) or not _storable(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    entries.append((entry.name, True))
                elif entry.is_file(follow_symlinks=False):
                    entries.append((entry.name, False))
    except (FileNotFoundError, NotADirectoryError):
        return deque()
    entries.sort(key=lambda e: e[0] + "/" if e[1] else e[0])
    return deque(entries)


def _storable(name: str) -> bool:
    try:
        name.encode("utf-8")  # names that are not UTF-8 were not written by us
    except UnicodeEncodeError:
        return False
    return name not in (".", "..")


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)
