"""The headers an S3 client stores with an object and gets back on every GET and HEAD: user metadata
(`x-amz-meta-*`) and the standard representation headers. Kept in the object's row (`headers`), so a file's
metadata is as durable as its record; REST uploads store none."""

from __future__ import annotations

from collections.abc import Mapping

from pockity.s3api.errors import S3Error

STORED = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
USER_PREFIX = "x-amz-meta-"
MAX_USER_METADATA = 2048  # S3's limit: names (without the prefix) and values of x-amz-meta-*, in bytes


def from_request(headers: Mapping[str, str]) -> dict[str, str] | None:
    """What of a PutObject's (or CreateMultipartUpload's, CopyObject REPLACE's) headers is stored."""
    stored: dict[str, str] = {}
    user_bytes = 0
    for name, value in headers.items():
        if name.startswith(USER_PREFIX):
            user_bytes += len(name) - len(USER_PREFIX) + len(value.encode("latin-1"))
        elif name not in STORED:
            continue
        if name == "content-encoding":
            # aws-chunked is how the body was sent, not what it is (S3 drops it the same way).
            value = ",".join(v.strip() for v in value.split(",") if v.strip().lower() != "aws-chunked")
            if not value:
                continue
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            raise S3Error("InvalidArgument", f"The {name} header may not contain control characters.", 400)
        stored[name] = value
    if user_bytes > MAX_USER_METADATA:
        raise S3Error(
            "MetadataTooLarge",
            f"Your metadata headers exceed the maximum allowed metadata size ({MAX_USER_METADATA} bytes).",
            400,
        )
    return stored or None
