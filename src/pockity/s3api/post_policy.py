"""Browser POST uploads (`<form method=post enctype=multipart/form-data>` to the bucket): the policy and its
signature, SigV4 (`x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, `x-amz-signature`) or SigV2
(`AWSAccessKeyId`, `signature`).

The policy is base64 JSON: an `expiration` and `conditions`. Its signature covers the base64 text itself.
Every form field the client sends (except the signature, `policy`, `file` and `x-ignore-*`) must be allowed by
a condition — exact (`{"key": "a"}` or `["eq", "$key", "a"]`), a prefix (`["starts-with", "$key", "user/"]`,
`""` allowing anything) — and the file's size must lie in `content-length-range` when that is given; the
size is enforced by the caller as the file streams (`PostPolicy.length_range`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pockity.s3api import sigv4
from pockity.s3api.errors import S3Error, signature_mismatch

_UNCHECKED = {"policy", "file", "x-amz-signature", "signature", "awsaccesskeyid"}


def _denied(message: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {message}", 403)


@dataclass(frozen=True)
class PostPolicy:
    access_key_id: str
    length_range: tuple[int, int] | None  # content-length-range, inclusive


def _fields(form: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in form.items()}


def credentials(form: Mapping[str, str]) -> tuple[str, str]:
    """(access key id, "v4" | "v2") of a POST form, before the secret is known."""
    fields = _fields(form)
    if "policy" not in fields:
        raise S3Error("InvalidArgument", "A POST upload needs a policy.", 400)
    if "x-amz-credential" in fields:
        if fields.get("x-amz-algorithm") != sigv4.ALGORITHM:
            raise S3Error("InvalidArgument", "x-amz-algorithm must be AWS4-HMAC-SHA256.", 400)
        return fields["x-amz-credential"].split("/", 1)[0], "v4"
    if "awsaccesskeyid" in fields and "signature" in fields:
        return fields["awsaccesskeyid"], "v2"
    raise S3Error("InvalidArgument", "A POST upload needs x-amz-credential or AWSAccessKeyId.", 400)


def _signature_ok(fields: dict[str, str], secret: str, version: str) -> bool:
    policy = fields["policy"].encode()
    if version == "v4":
        parts = fields["x-amz-credential"].split("/")
        if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
            raise S3Error("InvalidArgument", "x-amz-credential is malformed.", 400)
        key = sigv4.signing_key(secret, parts[1], parts[2], parts[3])
        expected = hmac.new(key, policy, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields.get("x-amz-signature", ""))
    expected = base64.b64encode(hmac.new(secret.encode(), policy, hashlib.sha1).digest()).decode()
    return hmac.compare_digest(expected, fields.get("signature", ""))


def _document(fields: dict[str, str]) -> dict[str, Any]:
    try:
        doc = json.loads(base64.b64decode(fields["policy"], validate=True))
    except (binascii.Error, ValueError):
        raise S3Error("InvalidPolicyDocument", "The policy is not base64-encoded JSON.", 400) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("conditions"), list) or "expiration" not in doc:
        raise S3Error("InvalidPolicyDocument", "The policy needs an expiration and a list of conditions.", 400)
    return doc


def _expiration(doc: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(doc["expiration"]).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise S3Error("InvalidPolicyDocument", "The policy's expiration is not an ISO 8601 time.", 400) from None


def verify(form: Mapping[str, str], secret: str, bucket: str, now: datetime) -> PostPolicy:
    """Check a POST form's signature, expiry and conditions; raises S3Error (AccessDenied for the policy)."""
    key_id, version = credentials(form)
    fields = _fields(form)
    if not _signature_ok(fields, secret, version):
        raise signature_mismatch()
    doc = _document(fields)
    if now > _expiration(doc):
        raise _denied("Policy expired.")
    values = {**fields, "bucket": bucket}
    covered: set[str] = set()
    length_range = None
    for condition in doc["conditions"]:
        if isinstance(condition, dict) and len(condition) == 1:
            ((name, expected),) = condition.items()
            op, field = "eq", str(name).lower()
        elif isinstance(condition, list) and len(condition) == 3:
            op = str(condition[0]).lower()
            if op == "content-length-range":
                try:
                    low, high = int(condition[1]), int(condition[2])
                except (TypeError, ValueError):
                    raise S3Error("InvalidPolicyDocument", "content-length-range needs two numbers.", 400) from None
                length_range = (low, high)
                continue
            field, expected = str(condition[1]).lower().removeprefix("$"), condition[2]
        else:
            raise S3Error("InvalidPolicyDocument", f"Unknown condition {condition!r}.", 400)
        actual = values.get(field)
        if actual is None or not isinstance(expected, str):
            raise _denied(f"Condition on {field!r} failed.")
        if (op == "eq" and actual != expected) or (op == "starts-with" and not actual.startswith(expected)):
            raise _denied(f"Condition on {field!r} failed.")
        if op not in ("eq", "starts-with"):
            raise S3Error("InvalidPolicyDocument", f"Unknown condition operator {op!r}.", 400)
        covered.add(field)
    extra = sorted(n for n in fields if n not in covered and n not in _UNCHECKED and not n.startswith("x-ignore-"))
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}.")
    return PostPolicy(key_id, length_range)
