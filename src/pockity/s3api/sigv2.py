"""Verifying AWS Signature Version 2 (HMAC-SHA1), still sent by older tools and by boto3's
`generate_presigned_url` on a custom endpoint in us-east-1 unless told to use SigV4.

    Authorization: AWS <access key id>:<base64 HMAC-SHA1(secret, StringToSign)>
    ?AWSAccessKeyId=...&Expires=<epoch seconds>&Signature=...          (presigned)

    StringToSign = METHOD \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n
                   x-amz-* headers (lower-cased, sorted, "name:v1,v2\\n") + resource

The resource is `/bucket/key` as sent (also for virtual-hosted requests), plus the sub-resources S3 signs
(`?acl`, `?uploadId=...`, `response-*` overrides ...), sorted, values decoded. With an `x-amz-date` header the
Date line is empty (S3's rule). No payload is signed: V2 leaves the body to Content-MD5, if the client sends it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pockity.s3api.errors import S3Error, clock_skewed, signature_mismatch
from pockity.s3api.sigv4 import MAX_PRESIGN_SECONDS, MAX_SKEW

# Query parameters that are part of the signed resource (the same list S3 and botocore use).
SUBRESOURCES = frozenset(
    """accelerate acl cors defaultObjectAcl location logging partNumber policy requestPayment torrent versioning
    versionId versions website uploads uploadId response-content-type response-content-language response-expires
    response-cache-control response-content-disposition response-content-encoding delete lifecycle tagging
    restore storageClass notification replication analytics metrics inventory select select-type
    object-lock""".split()
)


@dataclass(frozen=True)
class SignedV2:
    access_key_id: str
    signature: str
    presigned: bool
    expires: int | None = None  # presigned: epoch seconds


def parse(headers: Mapping[str, str], query: list[tuple[str, str]]) -> SignedV2 | None:
    """A V2 signature in the Authorization header or the query, or None if the request has none."""
    auth = headers.get("authorization")
    if auth is not None and auth.startswith("AWS "):
        key_id, colon, signature = auth[4:].strip().rpartition(":")
        if not colon or not key_id or not signature:
            raise S3Error("AuthorizationHeaderMalformed", "The V2 authorization is 'AWS <key id>:<signature>'.", 400)
        return SignedV2(key_id, signature, presigned=False)
    params = dict(query)
    if "AWSAccessKeyId" in params and "Signature" in params:
        try:
            expires = int(params["Expires"])
        except (KeyError, ValueError):
            raise S3Error("AccessDenied", "A V2 presigned URL needs Expires (epoch seconds).", 403) from None
        return SignedV2(params["AWSAccessKeyId"], params["Signature"], presigned=True, expires=expires)
    return None


def string_to_sign(
    method: str, resource: str, query: list[tuple[str, str]], headers: Mapping[str, str], signed: SignedV2
) -> str:
    params = dict(query)

    def standard(name: str) -> str:  # a header, or (presigned) the query parameter botocore moved it to
        value = headers.get(name)
        if value is None and signed.presigned:
            value = params.get(name)
        return (value or "").strip()

    amz = {n: v for n, v in headers.items() if n.startswith("x-amz-")}
    if signed.presigned:
        amz |= {n.lower(): v for n, v in params.items() if n.lower().startswith("x-amz-") and n.lower() not in amz}
        date = str(signed.expires)
    else:
        date = "" if "x-amz-date" in amz else standard("date")
    lines = [method, standard("content-md5"), standard("content-type"), date]
    lines += [f"{n}:{amz[n].strip()}" for n in sorted(amz)]  # repeated headers arrive joined with ","
    sub = sorted((n, v) for n, v in query if n in SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(f"{n}={v}" if v else n for n, v in sub)
    return "\n".join([*lines, resource])


def _check_time(signed: SignedV2, headers: Mapping[str, str], now: datetime) -> None:
    if signed.presigned:
        assert signed.expires is not None
        if now.timestamp() > signed.expires:
            raise S3Error("AccessDenied", "Request has expired.", 403)
        if signed.expires - now.timestamp() > MAX_PRESIGN_SECONDS:
            raise S3Error("AccessDenied", "A presigned URL may be valid for at most 7 days.", 403)
        return
    raw = headers.get("x-amz-date") or headers.get("date")
    try:
        at = parsedate_to_datetime(raw) if raw else None
    except (TypeError, ValueError):
        at = None
    if at is None or at.tzinfo is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header.", 403)
    if abs(now - at.astimezone(UTC)) > MAX_SKEW:
        raise clock_skewed()


def verify(
    signed: SignedV2,
    secret: str,
    method: str,
    resource: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    now: datetime,
) -> None:
    """Check a V2 signature and its time; raises S3Error."""
    _check_time(signed, headers, now)
    to_sign = string_to_sign(method, resource, query, headers, signed)
    expected = base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, signed.signature):
        raise signature_mismatch()
