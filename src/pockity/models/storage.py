from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base, UTCDateTime, created_at_column, id_column, updated_at_column

# Object names sort by byte order on both databases (PostgreSQL's "C" collation, SQLite's BINARY), so a
# cursor (the last name returned) pages without losing or repeating objects.
NameType = String(1024).with_variant(String(1024, collation="C"), "postgresql")


class StorageObject(Base):
    """One stored object; the physical key is `users/{user_id}/` + name."""

    __tablename__ = "storage_objects"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_storage_objects_user_id_name"),)

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(NameType, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    etag: Mapped[str] = mapped_column(String(128), nullable=False)
    content_type: Mapped[str | None] = mapped_column(String(255))
    api_key_id: Mapped[str | None] = mapped_column(String(26))  # the key that wrote it (None: JWT)
    # Response headers stored with the object by an S3 client (x-amz-meta-*, Cache-Control, ...): s3api/metadata.py.
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # A multipart object's parts as runs of [size, count] (S3's GetObject ?partNumber); None: one part.
    part_sizes: Mapped[list[list[int]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class UsageCounter(Base):
    """Bytes and objects stored and reserved, per quota scope: `user:{id}` or `key:{id}`.

    Every change is one conditional UPDATE (see storage/repository.py); nothing reads, compares and writes.
    """

    __tablename__ = "usage_counters"

    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    bytes_used: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    object_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    bytes_reserved: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    objects_reserved: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    uploads_open: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # reservations holding a slot
    updated_at: Mapped[datetime] = updated_at_column()


class Reservation(Base):
    """Quota held for an upload in flight. Unique per (user, name): it is also the name's write lock.

    A "hold" has no name (NULLs never collide in the unique constraint), so it locks no file: it keeps the
    bytes a direct-upload form could still store in staging reserved until the form has expired.
    """

    __tablename__ = "storage_reservations"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_storage_reservations_user_id_name"),
        Index("ix_storage_reservations_expires_at", "expires_at"),
        Index("ix_storage_reservations_backend_upload_id", "backend_upload_id"),
        Index("ix_storage_reservations_user_id_target", "user_id", "target"),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str | None] = mapped_column(NameType)  # None: a hold
    api_key_id: Mapped[str | None] = mapped_column(String(26))
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    objects: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    key_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    key_objects: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # 1 while it holds an upload slot of the user's (and its key's) counter; 0 for holds and locks.
    uploads: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # "stream": bytes through Pockity; "direct": a presigned upload straight to storage, open; "closing": a
    # direct upload being completed (by its client, an event or the expiry job; only one of them claims it);
    # "hold": see above; "lock": a delete or a repair; "parts": an S3 multipart upload in progress, holding
    # the bytes of its parts (storage/parts.py). It names no file (several uploads of one key may run at
    # once, as in S3), so the file it will complete to is `target`.
    kind: Mapped[str] = mapped_column(String(8), nullable=False, default="stream")
    declared_size: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(255))
    backend_upload_id: Mapped[str | None] = mapped_column(String(1024))  # a direct multipart upload's id
    target: Mapped[str | None] = mapped_column(NameType)  # kind "parts": the file it completes to
    headers: Mapped[dict[str, str] | None] = mapped_column(JSON)  # kind "parts": the file's stored headers
    # A stream upload of a name that had no file: if this reservation is left (its upload never got its 2xx),
    # whatever landed under the file's key was never acknowledged, so the expiry job deletes it, not adopts it.
    discard: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ReconciliationReport(Base):
    """One run of reconciliation (all users or one): what drifted between the bucket and the database."""

    __tablename__ = "reconciliation_reports"
    __table_args__ = (Index("ix_reconciliation_reports_started_at", "started_at"),)

    id: Mapped[str] = id_column()
    scope_user_id: Mapped[str | None] = mapped_column(String(26))  # None: every user
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="RUNNING")  # RUNNING|DONE|FAILED
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # job|cli|admin
    objects_seen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    adopted: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    removed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    corrected: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # {user_id: {"adopted": n, "removed": n, "corrected": n, "bytesDrift": n}} for users with drift only
    drift: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = created_at_column()
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StorageEvent(Base):
    """An S3 event notification record, stored once (dedupe_key unique) with what it did."""

    __tablename__ = "storage_events"
    __table_args__ = (Index("ix_storage_events_received_at", "received_at"),)

    id: Mapped[str] = id_column()
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    event_name: Mapped[str] = mapped_column(String(64), nullable=False)
    bucket: Mapped[str | None] = mapped_column(String(255))
    object_key: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(26))
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)  # adopted|corrected|dropped|unchanged|ignored:*
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    received_at: Mapped[datetime] = created_at_column()
