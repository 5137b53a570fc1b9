"""The SigV2 verifier against botocore's HmacV1 signers and boto3's own V2 presigned URLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from pockity.s3api import sigv2, sigv4
from pockity.s3api.errors import S3Error

KEY_ID, SECRET = "PKTESTACCESSKEY00002", "v2-secret/with+odd=chars" + "y" * 16


class Sent:
    def __init__(self, request: AWSRequest) -> None:
        prepared = request.prepare()
        url = urlsplit(prepared.url)
        self.method, self.path, self.raw_query = prepared.method, url.path, url.query
        self.headers = {k.lower(): str(v) for k, v in prepared.headers.items()}
        self.headers["host"] = url.netloc

    def check(self, at: datetime, secret: str = SECRET) -> None:
        query = sigv4.parse_query_pairs(self.raw_query)
        signed = sigv2.parse(self.headers, query)
        assert signed is not None
        sigv2.verify(signed, secret, self.method, self.path, query, self.headers, at)


def header_signed(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[Sent, datetime]:
    request = AWSRequest(method=method, url=url, headers=headers or {})
    HmacV1Auth(Credentials(KEY_ID, SECRET)).add_auth(request)
    sent = Sent(request)
    return sent, parsedate_to_datetime(sent.headers["date"])


@pytest.mark.parametrize("key", ["plain.txt", "a b/ü.txt", "x+y=z&w.bin"])
def test_header_signatures_from_botocore_verify(key: str) -> None:
    url = f"http://127.0.0.1:9000/pockity/{quote(key, safe='/~')}?uploadId=abc%2Bdef&partNumber=3&ignored=1"
    sent, at = header_signed(
        "PUT", url, {"Content-Type": "text/plain", "x-amz-meta-Note": " hi ", "Content-MD5": "XrY7u+Ae7tCTyyK7j1rNww=="}
    )
    sent.check(at)
    with pytest.raises(S3Error) as err:
        sent.check(at, secret=SECRET + "z")
    assert err.value.code == "SignatureDoesNotMatch"
    sent.headers["x-amz-meta-note"] = "changed"
    with pytest.raises(S3Error) as err:
        sent.check(at)
    assert err.value.code == "SignatureDoesNotMatch"


def test_a_changed_subresource_or_path_does_not_match() -> None:
    sent, at = header_signed("GET", "http://127.0.0.1:9000/pockity/f.txt?acl")
    sent.check(at)
    sent.raw_query = "uploads"
    with pytest.raises(S3Error):
        sent.check(at)
    other, at = header_signed("GET", "http://127.0.0.1:9000/pockity/f.txt")
    other.path = "/pockity/g.txt"
    with pytest.raises(S3Error):
        other.check(at)


def test_header_time_is_checked() -> None:
    sent, at = header_signed("GET", "http://127.0.0.1:9000/pockity/f.txt")
    sent.check(at + timedelta(minutes=14))
    with pytest.raises(S3Error) as err:
        sent.check(at + timedelta(minutes=16))
    assert err.value.code == "RequestTimeTooSkewed"
    del sent.headers["date"]
    with pytest.raises(S3Error) as err:
        sent.check(at)
    assert err.value.code == "AccessDenied"


def test_presigned_v2_urls_verify_until_they_expire() -> None:
    request = AWSRequest(
        method="GET", url="http://127.0.0.1:9000/pockity/r%C3%A9sum%C3%A9.pdf?response-content-type=text%2Fplain"
    )
    HmacV1QueryAuth(Credentials(KEY_ID, SECRET), expires=600).add_auth(request)
    sent = Sent(request)
    del sent.headers["date"]  # a browser following the URL sends no Date
    expires = int(dict(sigv4.parse_query_pairs(sent.raw_query))["Expires"])
    sent.check(datetime.fromtimestamp(expires - 1, UTC))
    with pytest.raises(S3Error) as err:
        sent.check(datetime.fromtimestamp(expires + 1, UTC))
    assert err.value.code == "AccessDenied"


def test_boto3s_generate_presigned_url_on_a_custom_endpoint_is_v2_and_verifies() -> None:
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(signature_version="s3", s3={"addressing_style": "path"}),
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "pockity", "Key": "a b.txt"}, ExpiresIn=300)
    parts = urlsplit(url)
    query = sigv4.parse_query_pairs(parts.query)
    signed = sigv2.parse({"host": parts.netloc}, query)
    assert signed is not None and signed.presigned
    sigv2.verify(signed, SECRET, "GET", parts.path, query, {"host": parts.netloc}, datetime.now(UTC))


def test_amz_date_replaces_date_in_the_string_to_sign() -> None:
    signed = sigv2.SignedV2(KEY_ID, "x", presigned=False)
    headers = {"date": "ignored", "x-amz-date": "Thu, 03 Dec 2026 12:00:00 GMT"}
    text = sigv2.string_to_sign("GET", "/pockity/a", [], headers, signed)
    assert text == "GET\n\n\n\nx-amz-date:Thu, 03 Dec 2026 12:00:00 GMT\n/pockity/a"


@pytest.mark.parametrize("auth", ["AWS nocolon", "AWS :sig", "AWS key:"])
def test_a_malformed_v2_header_is_refused(auth: str) -> None:
    with pytest.raises(S3Error) as err:
        sigv2.parse({"authorization": auth}, [])
    assert err.value.code == "AuthorizationHeaderMalformed"
