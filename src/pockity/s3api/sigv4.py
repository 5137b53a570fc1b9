"""Verifying AWS Signature Version 4 on requests to the S3 API: pure functions over what arrived.

Two places a signature can come in: the `Authorization` header, or the query string of a presigned URL
(`X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=...&X-Amz-Signature=...`). `parse` reads either without
any secret; the caller looks up the access key's secret and calls `verify`, which rebuilds the canonical
request exactly as the client signed it:

- the path as sent on the wire (S3 signs the encoded path once and never normalises it);
- the query re-encoded per RFC 3986 and sorted (clients differ in how they encode it; the canonical form
  does not), without `X-Amz-Signature`;
- the signed headers, lower-cased, values trimmed and inner runs of spaces collapsed;
- the payload: the `x-amz-content-sha256` header (a hex digest the body must then match, or one of the
  streaming / unsigned modes), `UNSIGNED-PAYLOAD` for presigned URLs.

`host` and every `x-amz-*` header present must be signed (an unsigned `x-amz-*` header would let a proxy or
an attacker change what the request means). Clock skew: ±15 minutes; presigned URLs: at most 7 days. The
signature is compared in constant time. The signing key (four HMACs) is cached per secret, day and region.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import lru_cache
from urllib.parse import quote, unquote

from pockity.s3api.errors import S3Error, clock_skewed, signature_mismatch

ALGORITHM = "AWS4-HMAC-SHA256"
ECDSA_ALGORITHM = "AWS4-ECDSA-P256-SHA256"
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SPACES = re.compile(r" +")
_UNRESERVED = "-_.~"


class Payload(Enum):
    """How the body is (or is not) covered by the signature."""

    SHA256 = "sha256"  # a hex digest in x-amz-content-sha256: the body must hash to it
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"  # aws-chunked, every chunk signed
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"  # aws-chunked, a checksum trailer


_MODES = {p.value: p for p in Payload if p is not Payload.SHA256}
_ECDSA_MODES = {"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"}


@dataclass(frozen=True)
class SignedRequest:
    """What a request says about its signature, read before any secret is known."""

    access_key_id: str
    day: str  # yyyymmdd of the credential scope
    region: str
    service: str
    amz_date: str  # yyyymmddThhmmssZ
    signed_headers: tuple[str, ...]
    signature: str
    payload: Payload
    payload_sha256: str | None  # with Payload.SHA256
    presigned: bool
    expires: int | None = None  # presigned: seconds from amz_date

    @property
    def scope(self) -> str:
        return f"{self.day}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class Verified:
    """A request whose signature checked out: what the body decoder needs to go on verifying."""

    request: SignedRequest
    signing_key: bytes

    @property
    def seed_signature(self) -> str:
        return self.request.signature


def _malformed(message: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed", message, 400)


def _parse_credential(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise _malformed("The Credential must be <access key id>/<yyyymmdd>/<region>/s3/aws4_request.")
    if parts[3] != "s3":
        raise _malformed(f"The credential's service must be s3, not {parts[3]!r}.")
    return parts[0], parts[1], parts[2], parts[3]


def _payload(value: str | None) -> tuple[Payload, str | None]:
    if value is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256.", 400)
    if value in _MODES:
        return _MODES[value], None
    if value in _ECDSA_MODES:
        raise S3Error("NotImplemented", "SigV4a (ECDSA) signed payloads are not supported; use SigV4.", 501)
    if _HEX64.fullmatch(value):
        return Payload.SHA256, value
    raise S3Error(
        "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a streaming mode or a SHA-256 hex.", 400
    )


def parse_query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The query's name/value pairs, percent-decoded ('+' is a plus sign, as S3 clients mean it)."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote(name, errors="strict"), unquote(value, errors="strict")))
    return pairs


def parse(headers: Mapping[str, str], query: list[tuple[str, str]]) -> SignedRequest | None:
    """The request's SigV4 signature (header or presigned query), or None for an anonymous request.

    `headers` are lower-cased names (repeated headers joined with ","); `query` from `parse_query_pairs`."""
    auth = headers.get("authorization")
    params = dict(query)
    if auth is not None:
        return _parse_header(auth, headers)
    algorithm = params.get("X-Amz-Algorithm")
    if algorithm is not None:
        return _parse_presigned(algorithm, params)
    return None


def _parse_header(auth: str, headers: Mapping[str, str]) -> SignedRequest:
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm == ECDSA_ALGORITHM:
        raise S3Error("NotImplemented", "SigV4a (ECDSA) signatures are not supported; use SigV4.", 501)
    if algorithm != ALGORITHM:
        if algorithm == "AWS":
            raise S3Error("NotImplemented", "Signature Version 2 is not supported yet; sign with SigV4.", 501)
        raise _malformed(f"Unsupported authorization type {algorithm!r}.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name in fields:
            raise _malformed("The authorization header is malformed.")
        fields[name] = value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise _malformed("The authorization header needs Credential, SignedHeaders and Signature.")
    key_id, day, region, service = _parse_credential(fields["Credential"])
    amz_date = headers.get("x-amz-date")
    if amz_date is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid x-amz-date header.", 403)
    payload, digest = _payload(headers.get("x-amz-content-sha256"))
    return SignedRequest(
        access_key_id=key_id,
        day=day,
        region=region,
        service=service,
        amz_date=amz_date,
        signed_headers=_signed_headers(fields["SignedHeaders"]),
        signature=fields["Signature"],
        payload=payload,
        payload_sha256=digest,
        presigned=False,
    )


def _parse_presigned(algorithm: str, params: Mapping[str, str]) -> SignedRequest:
    if algorithm != ALGORITHM:
        raise S3Error(
            "NotImplemented" if algorithm == ECDSA_ALGORITHM else "AuthorizationQueryParametersError",
            f"Unsupported X-Amz-Algorithm {algorithm!r}.",
            501 if algorithm == ECDSA_ALGORITHM else 400,
        )
    needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [n for n in needed if n not in params]
    if missing:
        raise S3Error("AuthorizationQueryParametersError", f"The presigned URL lacks {', '.join(missing)}.", 400)
    key_id, day, region, service = _parse_credential(params["X-Amz-Credential"])
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires must be a number of seconds.", 400) from None
    # Refused as forbidden (403), as S3 conformance suites expect: a URL valid for no time at all has expired,
    # one valid for more than 7 days was never allowed.
    if expires <= 0:
        raise S3Error("AccessDenied", "Request has expired.", 403)
    if expires > MAX_PRESIGN_SECONDS:
        raise S3Error(
            "AuthorizationQueryParametersError", "X-Amz-Expires must be between 1 and 604800 seconds (7 days).", 403
        )
    return SignedRequest(
        access_key_id=key_id,
        day=day,
        region=region,
        service=service,
        amz_date=params["X-Amz-Date"],
        signed_headers=_signed_headers(params["X-Amz-SignedHeaders"]),
        signature=params["X-Amz-Signature"],
        payload=Payload.UNSIGNED,
        payload_sha256=None,
        presigned=True,
        expires=expires,
    )


def _signed_headers(value: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or any(not n or n != n.lower() or n.strip() != n for n in names) or list(names) != sorted(names):
        raise _malformed("SignedHeaders must be lower-case header names, sorted, separated by ';'.")
    return names


def _timestamp(amz_date: str) -> datetime:
    try:
        return datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise S3Error(
            "AccessDenied", "X-Amz-Date must be an ISO 8601 basic timestamp (yyyymmddThhmmssZ).", 403
        ) from None


def _check_time(req: SignedRequest, now: datetime) -> None:
    signed_at = _timestamp(req.amz_date)
    if req.amz_date[:8] != req.day:
        raise _malformed("The credential's date does not match X-Amz-Date.")
    if req.presigned:
        assert req.expires is not None
        if now < signed_at - MAX_SKEW:
            raise S3Error("RequestTimeTooSkewed", "The presigned URL is dated in the future.", 403)
        if now > signed_at + timedelta(seconds=req.expires):
            raise S3Error("AccessDenied", "Request has expired.", 403)
    elif abs(now - signed_at) > MAX_SKEW:
        raise clock_skewed()


def _uri_encode(value: str) -> str:
    return quote(value, safe=_UNRESERVED)


def canonical_query(query: list[tuple[str, str]], presigned: bool) -> str:
    pairs = sorted((_uri_encode(k), _uri_encode(v)) for k, v in query if not (presigned and k == "X-Amz-Signature"))
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_request(
    req: SignedRequest, method: str, raw_path: str, query: list[tuple[str, str]], headers: Mapping[str, str]
) -> str:
    lines = [method, raw_path or "/", canonical_query(query, req.presigned)]
    for name in req.signed_headers:
        value = headers.get(name)
        if value is None:
            raise S3Error("AccessDenied", f"The signed header {name!r} is missing from the request.", 403)
        lines.append(f"{name}:{_SPACES.sub(' ', value.strip())}")
    payload = req.payload_sha256 if req.payload is Payload.SHA256 else req.payload.value
    lines += ["", ";".join(req.signed_headers), payload or ""]
    return "\n".join(lines)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@lru_cache(maxsize=4096)
def signing_key(secret: str, day: str, region: str, service: str = "s3") -> bytes:
    """kSigning = HMAC chain over the date, region, service and "aws4_request" (cached: it changes daily)."""
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), day), region), service), "aws4_request")


def string_to_sign(req: SignedRequest, canonical: str) -> str:
    return f"{ALGORITHM}\n{req.amz_date}\n{req.scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def verify(
    req: SignedRequest,
    secret: str,
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    now: datetime,
) -> Verified:
    """Check the signature (and its time); raises S3Error. The body is the caller's to check (see Payload)."""
    _check_time(req, now)
    signed = set(req.signed_headers)
    if "host" not in signed:
        raise S3Error("AccessDenied", "The host header must be signed.", 403)
    unsigned = sorted(n for n in headers if n.startswith("x-amz-") and n not in signed)
    if unsigned:
        raise S3Error("AccessDenied", f"Headers {', '.join(unsigned)} must be signed.", 403)
    canonical = canonical_request(req, method, raw_path, query, headers)
    key = signing_key(secret, req.day, req.region, req.service)
    expected = hmac.new(key, string_to_sign(req, canonical).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, req.signature):
        raise signature_mismatch()
    return Verified(req, key)
