from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, Field

from pockity.kit.schemas import InputModel, OutputModel


class ObjectOut(OutputModel):
    key: str = Field(validation_alias=AliasChoices("key", "name"))
    size: int
    content_type: str | None
    etag: str
    created_at: datetime


class ObjectListItem(OutputModel):
    key: str = Field(validation_alias=AliasChoices("key", "name"))
    size: int
    content_type: str | None
    etag: str
    last_modified: datetime = Field(validation_alias=AliasChoices("last_modified", "updated_at"))


class ObjectPage(OutputModel):
    items: list[ObjectListItem]
    folders: list[str]
    next_cursor: str | None


class DownloadOut(OutputModel):
    key: str
    url: str
    expires_at: datetime
    size: int
    content_type: str | None
    etag: str
    last_modified: datetime


class DeletedOut(OutputModel):
    key: str
    deleted: bool


class BatchDeleteIn(InputModel):
    keys: list[str] = Field(min_length=1, max_length=1000)


class BatchDeleteResult(OutputModel):
    key: str
    deleted: bool
    error: dict[str, Any] | None = None


class BatchDeleteOut(OutputModel):
    results: list[BatchDeleteResult]
    deleted: int
    failed: int


class TierSummary(OutputModel):
    id: str
    name: str
    storage_bytes: int
    max_objects: int
    max_object_size_bytes: int | None


class UsageOut(OutputModel):
    bytes_used: int
    object_count: int
    bytes_reserved: int
    storage_limit_bytes: int
    max_objects: int
    percent_used: float
    over_quota: bool
    tier: TierSummary | None
    as_of: datetime


class DirectUploadIn(InputModel):
    key: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0, description="The exact or largest size in bytes; this much quota is reserved")
    content_type: str | None = Field(None, max_length=255)
    expires_in: int | None = Field(None, ge=60, le=7 * 24 * 3600, description="Seconds the upload URL is valid")
    multipart: bool = Field(False, description="Presigned part URLs instead of one POST (for large files)")
    part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)


class PartUrlOut(OutputModel):
    part_number: int
    size: int
    url: str


class DirectUploadOut(OutputModel):
    upload_id: str
    key: str
    url: str | None
    fields: dict[str, str]
    expires_at: datetime
    multipart: bool
    part_size: int | None
    parts: list[PartUrlOut]


class CompletedPart(InputModel):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=128)


class CompleteIn(InputModel):
    parts: list[CompletedPart] | None = Field(None, max_length=10_000)


class CancelledOut(OutputModel):
    upload_id: str
    cancelled: bool


class EventsOut(OutputModel):
    received: int
    outcomes: dict[str, int]
