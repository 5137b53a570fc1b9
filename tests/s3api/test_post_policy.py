"""Browser POST policies: boto3's generate_presigned_post (V4 and V2) verifies; tampering does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.config import Config

from pockity.s3api import post_policy, sigv4
from pockity.s3api.errors import S3Error

KEY_ID, SECRET = "PKTESTACCESSKEY00003", "post-secret" + "p" * 29


def form(version: str, **kwargs: object) -> dict[str, str]:
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(signature_version=version, s3={"addressing_style": "path"}),
    )
    post = client.generate_presigned_post("pockity", "uploads/${filename}", ExpiresIn=600, **kwargs)  # type: ignore[arg-type]
    return {k: str(v) for k, v in post["fields"].items()}


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_boto3_forms_verify_with_their_conditions(version: str) -> None:
    fields = form(
        version,
        Fields={"acl": "private", "success_action_status": "201"},
        Conditions=[
            {"acl": "private"},
            {"success_action_status": "201"},
            ["starts-with", "$key", "uploads/"],
            ["content-length-range", 1, 1000],
        ],
    )
    fields["key"] = "uploads/a.txt"
    policy = post_policy.verify(fields, SECRET, "pockity", datetime.now(UTC))
    assert policy.access_key_id == KEY_ID and policy.length_range == (1, 1000)


def _code(fields: dict[str, str], *, bucket: str = "pockity", now: datetime | None = None) -> str:
    with pytest.raises(S3Error) as err:
        post_policy.verify(fields, SECRET, bucket, now or datetime.now(UTC))
    return err.value.code


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_tampered_expired_or_uncovered_forms_are_refused(version: str) -> None:
    fields = form(version, Conditions=[["starts-with", "$key", "uploads/"]])
    fields["key"] = "elsewhere/a.txt"  # outside the policy's prefix
    assert _code(fields) == "AccessDenied"
    fields["key"] = "uploads/a.txt"
    assert _code(fields, bucket="someone-elses") == "AccessDenied"
    assert _code({**fields, "x-amz-meta-sneaky": "1"}) == "AccessDenied"  # a field no condition allows
    assert _code(fields, now=datetime.now(UTC) + timedelta(minutes=11)) == "AccessDenied"
    assert post_policy.verify({**fields, "x-ignore-me": "1"}, SECRET, "pockity", datetime.now(UTC))
    signature = "x-amz-signature" if version == "s3v4" else "signature"
    assert _code({**fields, signature: fields[signature][:-2] + "00"}) == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as err:
        post_policy.verify(fields, SECRET + "x", "pockity", datetime.now(UTC))
    assert err.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("policy", ["not base64!", base64.b64encode(b"[1, 2]").decode()])
def test_a_signed_policy_that_is_not_a_policy_document_is_invalid(policy: str) -> None:
    fields = form("s3v4")
    day, region = fields["x-amz-credential"].split("/")[1:3]
    fields["policy"] = policy
    key = sigv4.signing_key(SECRET, day, region)
    fields["x-amz-signature"] = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(S3Error) as err:
        post_policy.verify(fields, SECRET, "pockity", datetime.now(UTC))
    assert err.value.code == "InvalidPolicyDocument"
