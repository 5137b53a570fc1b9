"""Who an S3 request is: its signature (SigV4 header or presigned, SigV2 header or presigned, or a browser POST
form's policy) checked with the access key's secret, then the key's state. Anonymous requests are refused (every
bucket is private)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pockity.apikeys import service as apikeys
from pockity.auth.schemas import Principal
from pockity.auth.service import AccountDisabled
from pockity.db import Database
from pockity.kit.crypto import Keyring
from pockity.s3api import post_policy, sigv2, sigv4
from pockity.s3api.errors import S3Error
from pockity.s3api.post_policy import PostPolicy
from pockity.s3api.sigv4 import Payload, Verified


@dataclass(frozen=True)
class S3Request:
    """A request as it arrived: the raw path and query as signed, headers lower-cased (repeats joined by ",")."""

    method: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    resource: str  # /bucket[/key] as SigV2 signs it (the path-style path, also for virtual-hosted requests)


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    verified: Verified | None  # SigV4: what aws-chunked bodies go on verifying with; None for SigV2
    payload: Payload
    payload_sha256: str | None  # Payload.SHA256: the digest the body must have


def _unknown_key() -> S3Error:
    return S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.", 403)


async def authenticate(req: S3Request, db: Database, keyring: Keyring, now: datetime) -> Authenticated:
    """Check the request's signature and key; raises S3Error."""
    v2 = None
    v4 = None
    if req.headers.get("authorization", "").startswith("AWS "):
        v2 = sigv2.parse(req.headers, req.query)
    else:
        v4 = sigv4.parse(req.headers, req.query)
        if v4 is None:
            v2 = sigv2.parse(req.headers, req.query)
    signed = v4 or v2
    if signed is None:
        raise S3Error("AccessDenied", "Anonymous access is not allowed; sign the request with a Pockity key pair.", 403)
    found = await apikeys.signing_key(db, keyring, signed.access_key_id)
    if found is None:
        raise _unknown_key()
    verified = None
    if v4 is not None:
        verified = sigv4.verify(v4, found.secret, req.method, req.raw_path, req.query, req.headers, now)
    else:
        assert v2 is not None
        sigv2.verify(v2, found.secret, req.method, req.resource, req.query, req.headers, now)
    principal = _principal(found)
    if v4 is not None:
        return Authenticated(principal, verified, v4.payload, v4.payload_sha256)
    return Authenticated(principal, None, Payload.UNSIGNED, None)


async def authenticate_post(
    form: Mapping[str, str], bucket: str, db: Database, keyring: Keyring, now: datetime
) -> tuple[Authenticated, PostPolicy]:
    """A browser POST upload's policy: its signature with the key's secret, its expiry and every condition
    over the form's fields (`post_policy.verify`), then the key's state; raises S3Error."""
    key_id, _ = post_policy.credentials(form)
    found = await apikeys.signing_key(db, keyring, key_id)
    if found is None:
        raise _unknown_key()
    policy = post_policy.verify(form, found.secret, bucket, now)
    return Authenticated(_principal(found), None, Payload.UNSIGNED, None), policy


def _principal(found: apikeys.SigningKey) -> Principal:
    """Who a key whose signature verified is — or why it may no longer act (only the secret's holder learns)."""
    try:
        return found.principal()
    except (apikeys.ApiKeyRevoked, apikeys.ApiKeyExpired) as exc:
        raise S3Error("InvalidAccessKeyId", f"The access key is no longer valid: {exc.message}", 403) from None
    except AccountDisabled:
        raise S3Error("AccessDenied", "This account is disabled.", 403) from None
