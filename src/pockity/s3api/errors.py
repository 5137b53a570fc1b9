"""S3's own errors: a code from S3's catalogue, a message and an HTTP status (rendered as S3 XML)."""

from __future__ import annotations


class S3Error(Exception):
    """An error the S3 API answers in S3's XML shape (`<Error><Code>...`)."""

    def __init__(self, code: str, message: str, status: int, **extra: str) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.extra = extra  # more elements of the error document (e.g. BucketName, Key)
        self.headers: dict[str, str] = {}  # more headers of the answer (e.g. a 416's Content-Range)


def signature_mismatch() -> S3Error:
    """The signature a request carries is not the one its key's secret gives (any signing scheme)."""
    return S3Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        403,
    )


def clock_skewed() -> S3Error:
    return S3Error(
        "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large.", 403
    )
