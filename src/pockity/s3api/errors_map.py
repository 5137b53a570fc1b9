"""Pockity's own errors (from the storage services the S3 API shares) as the S3 errors clients know.

The message stays Pockity's (it names the limit and what remains); the code is S3's, so clients react as they
would to S3: retry SlowDown and ServiceUnavailable, stop on QuotaExceeded and AccessDenied.
"""

from __future__ import annotations

from pockity.errors import PockityError
from pockity.s3api.errors import S3Error

_CODES: dict[str, tuple[str, int]] = {
    "storage_quota_exceeded": ("QuotaExceeded", 403),
    "object_quota_exceeded": ("QuotaExceeded", 403),
    "file_too_large": ("EntityTooLarge", 400),
    "invalid_key": ("InvalidArgument", 400),
    "invalid_content_type": ("InvalidArgument", 400),
    "invalid_cursor": ("InvalidArgument", 400),
    "invalid_value": ("InvalidArgument", 400),
    "scope_denied": ("AccessDenied", 403),
    "no_storage_tier": ("AccessDenied", 403),
    "subscription_past_due": ("AccessDenied", 403),
    "account_disabled": ("AccessDenied", 403),
    "file_not_found": ("NoSuchKey", 404),
    "range_not_satisfiable": ("InvalidRange", 416),
    "object_busy": ("OperationAborted", 409),
    "precondition_failed": ("PreconditionFailed", 412),
    "rate_limited": ("SlowDown", 503),
    "storage_unavailable": ("ServiceUnavailable", 503),
    "service_unavailable": ("ServiceUnavailable", 503),
    "upload_expired": ("ServiceUnavailable", 503),
    "no_such_upload": ("NoSuchUpload", 404),
    "invalid_part": ("InvalidPart", 400),
    "invalid_parts": ("InvalidPart", 400),
    "invalid_part_order": ("InvalidPartOrder", 400),
    "entity_too_small": ("EntityTooSmall", 400),
    "invalid_part_number": ("InvalidArgument", 400),
    "upload_of_another_key": ("AccessDenied", 403),
    "length_mismatch": ("IncompleteBody", 400),
    "too_many_parts": ("InvalidArgument", 400),
}


def translate(err: PockityError) -> S3Error:
    """The S3 error for a Pockity error (InvalidRequest / InternalError for codes S3 has no word for)."""
    code, status = _CODES.get(err.code, ("InvalidRequest" if err.status < 500 else "InternalError", err.status))
    if err.code == "invalid_key" and "1024" in err.message:
        code = "KeyTooLongError"
    return S3Error(code, err.message, status)
