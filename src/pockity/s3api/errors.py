"""S3's own errors: a code from S3's catalogue, a message and an HTTP status (rendered as S3 XML)."""

from __future__ import annotations


class S3Error(Exception):
    """An error the S3 API answers in S3's XML shape (`<Error><Code>...`)."""

    def __init__(self, code: str, message: str, status: int, **extra: str) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.extra = extra  # more elements of the error document (e.g. BucketName, Key)
