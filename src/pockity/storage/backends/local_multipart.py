"""Multipart uploads for the local backend, shaped like S3's: parts PUT to signed URLs, then assembled.

Parts live in ROOT/tmp/mp-<id>/ as `part-<n>.<md5>` (the name carries the part's ETag); completing copies them
in order into a temp file that is renamed into place like any other write.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import anyio
from anyio.to_thread import run_sync

from pockity.storage.backends.base import InvalidParts, NoSuchUpload, ObjectInfo, PartInfo

_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_COPY_BLOCK = 1024 * 1024


class PartRejected(ValueError):
    """A part body that does not match its signed size."""


class LocalMultipart:
    _tmp: Path
    _data: Path
    _base_url: str
    _signing_key: bytes

    def _path(self, tree: Path, key: str) -> Path:  # provided by LocalBackend
        raise NotImplementedError

    def _commit(  # provided by LocalBackend
        self, file: IO[bytes], tmp: Path, target: Path, key: str, etag: str, content_type: str | None
    ) -> ObjectInfo:
        raise NotImplementedError

    def _upload_dir(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.match(upload_id) or not (self._tmp / f"mp-{upload_id}").is_dir():
            raise InvalidParts("No such multipart upload.", details={"uploadId": upload_id[:64]})
        return self._tmp / f"mp-{upload_id}"

    async def create_multipart(self, key: str, content_type: str) -> str:
        """A directory for the parts, with the key and content type they will become."""
        self._path(self._data, key)  # refuses keys that could never be stored
        upload_id = secrets.token_hex(16)

        def _make() -> None:
            directory = self._tmp / f"mp-{upload_id}"
            directory.mkdir()
            (directory / "upload.json").write_text(json.dumps({"key": key, "content_type": content_type}))

        await run_sync(_make)
        return upload_id

    def _part_signature(self, upload_id: str, part_number: int, size: int, expires: int) -> str:
        message = json.dumps(["part", upload_id, part_number, size, expires]).encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    async def presign_part(self, key: str, upload_id: str, part_number: int, size: int, expires_in: int) -> str:
        """A Pockity URL (PUT /api/storage/parts/...) whose signature covers the part's exact size."""
        expires = int(time.time()) + expires_in
        query = urlencode(
            {"size": size, "expires": expires, "signature": self._part_signature(upload_id, part_number, size, expires)}
        )
        return f"{self._base_url}/api/storage/parts/{upload_id}/{part_number}?{query}"

    def verify_part(self, upload_id: str, part_number: int, size: int, expires: int, signature: str) -> bool:
        if expires < time.time():
            return False
        expected = self._part_signature(upload_id, part_number, size, expires).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))

    async def receive_part(self, upload_id: str, part_number: int, size: int, chunks: AsyncIterator[bytes]) -> str:
        """Store one part of exactly `size` bytes; returns its ETag (MD5 hex). Replaces an earlier try."""
        directory = await run_sync(self._upload_dir, upload_id)
        fd, tmp_name = await run_sync(lambda: tempfile.mkstemp(dir=directory, prefix="incoming-"))
        md5, seen = hashlib.md5(usedforsecurity=False), 0
        try:
            with os.fdopen(fd, "wb") as file:
                async for chunk in chunks:
                    seen += len(chunk)
                    if seen > size:
                        raise PartRejected(f"the part is longer than its signed size ({size} bytes)")
                    md5.update(chunk)
                    await run_sync(file.write, chunk)
            if seen != size:
                raise PartRejected(f"the part is shorter than its signed size ({size} bytes)")
            etag = md5.hexdigest()

            def _place() -> None:
                for old in directory.glob(f"part-{part_number:05d}.*"):
                    old.unlink()
                os.replace(tmp_name, directory / f"part-{part_number:05d}.{etag}")

            await run_sync(_place)
            return etag
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_sync(lambda: Path(tmp_name).unlink(missing_ok=True))
            raise

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]) -> ObjectInfo:
        """Assemble the listed parts in order (S3's rules: ascending numbers, matching ETags)."""

        def _assemble() -> ObjectInfo:
            directory = self._upload_dir(upload_id)
            meta: dict[str, Any] = json.loads((directory / "upload.json").read_text())
            numbers = [n for n, _ in parts]
            if meta["key"] != key or not parts or numbers != sorted(set(numbers)):
                raise InvalidParts()
            files = []
            for number, etag in parts:
                path = directory / f"part-{number:05d}.{etag.strip(chr(34))}"
                if not path.is_file():
                    raise InvalidParts(details={"partNumber": number})
                files.append(path)
            digests = b"".join(bytes.fromhex(p.name.split(".", 1)[1]) for p in files)
            etag = f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(files)}"
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
            out = os.fdopen(fd, "wb")
            try:
                for path in files:
                    with path.open("rb") as src:
                        shutil.copyfileobj(src, out, _COPY_BLOCK)
                info = self._commit(out, Path(tmp_name), self._path(self._data, key), key, etag, meta["content_type"])
            except BaseException:
                out.close()
                Path(tmp_name).unlink(missing_ok=True)
                raise
            shutil.rmtree(directory, ignore_errors=True)
            return info

        return await run_sync(_assemble)

    def _upload_of(self, key: str, upload_id: str) -> Path:
        """The directory of an upload of `key`, or NoSuchUpload (an unknown id, or one for another key)."""
        directory = self._tmp / f"mp-{upload_id}"
        try:
            meta: dict[str, Any] = json.loads((directory / "upload.json").read_text())
        except (OSError, ValueError):
            raise NoSuchUpload() from None
        if not _UPLOAD_ID.match(upload_id) or meta.get("key") != key:
            raise NoSuchUpload()
        return directory

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, size: int, chunks: AsyncIterator[bytes]
    ) -> str:
        """Stream one part into place (renamed in only after `chunks` ended without an error)."""
        await run_sync(self._upload_of, key, upload_id)
        return await self.receive_part(upload_id, part_number, size, chunks)

    async def copy_part(self, source: str, key: str, upload_id: str, part_number: int, first: int, last: int) -> str:
        """A part from a byte range of a stored object, read from disk like a download."""
        await run_sync(self._upload_of, key, upload_id)
        _, body = await self.open_range(source, first, last)  # type: ignore[attr-defined]
        return await self.receive_part(upload_id, part_number, last - first + 1, body)

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        def _list() -> list[PartInfo]:
            directory = self._upload_of(key, upload_id)
            found = []
            for path in directory.glob("part-*.*"):
                number, _, etag = path.name.removeprefix("part-").partition(".")
                stat = path.stat()
                found.append(PartInfo(int(number), stat.st_size, etag, datetime.fromtimestamp(stat.st_mtime, UTC)))
            return sorted(found, key=lambda p: p.number)

        return await run_sync(_list)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Remove the upload's parts (idempotent)."""
        if _UPLOAD_ID.match(upload_id):
            await run_sync(lambda: shutil.rmtree(self._tmp / f"mp-{upload_id}", ignore_errors=True))
