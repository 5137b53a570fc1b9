"""The SigV4 verifier against botocore's signers (the reference): header and presigned, good and bad."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pockity.s3api import sigv4
from pockity.s3api.errors import S3Error
from pockity.s3api.sigv4 import Payload

KEY_ID, SECRET = "PKTESTACCESSKEY00001", "s3cr3t/with+odd=chars" + "x" * 19
CREDS = Credentials(KEY_ID, SECRET)


class Sent:
    """A request as it arrives at the server: method, raw path, raw query, lower-cased headers, signing time."""

    def __init__(self, request: AWSRequest) -> None:
        prepared = request.prepare()
        url = urlsplit(prepared.url)
        self.method, self.path, self.raw_query = prepared.method, url.path, url.query
        self.headers = {k.lower(): str(v) for k, v in prepared.headers.items()}
        self.headers["host"] = url.netloc
        self.body = prepared.body
        stamp = self.headers.get("x-amz-date") or dict(sigv4.parse_query_pairs(url.query))["X-Amz-Date"]
        self.at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    def check(self, secret: str = SECRET, at: datetime | None = None) -> sigv4.Verified:
        query = sigv4.parse_query_pairs(self.raw_query)
        req = sigv4.parse(self.headers, query)
        assert req is not None
        return sigv4.verify(req, secret, self.method, self.path, query, self.headers, at or self.at)


def signed(method: str, url: str, *, data: bytes = b"", headers: dict[str, str] | None = None) -> Sent:
    request = AWSRequest(method=method, url=url, data=data, headers=headers or {})
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    return Sent(request)


def presigned(method: str, url: str, expires: int = 3600, region: str = "eu-west-3") -> Sent:
    request = AWSRequest(method=method, url=url)
    S3SigV4QueryAuth(CREDS, "s3", region, expires=expires).add_auth(request)
    return Sent(request)


ODD_KEYS = ["plain.txt", "a b/c d.txt", "ü/日本語.pdf", "sp%20ace+plus&amp=eq?.bin", "~tilde/(paren)!*'", "x/./y"]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_header_signed_requests_from_botocore_verify(key: str) -> None:
    from urllib.parse import quote

    url = f"http://127.0.0.1:9000/pockity/{quote(key, safe='/~')}"
    get = signed("GET", url, headers={"Range": "bytes=0-9", "x-amz-meta-note": "  two   spaces  "})
    verified = get.check()
    assert verified.request.access_key_id == KEY_ID and verified.request.payload is Payload.SHA256
    assert verified.request.payload_sha256 == sigv4.EMPTY_SHA256
    put = signed("PUT", url, data=b"hello", headers={"Content-Type": "text/plain"})
    assert put.check().request.payload_sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_a_listing_query_is_canonicalised_however_it_was_encoded() -> None:
    url = (
        "http://localhost:9000/pockity?list-type=2&prefix=a%20b%2F&delimiter=%2F&encoding-type=url"
        "&continuation-token=ab%2Bc%3D%3D&start-after=%C3%BC&fetch-owner"
    )
    sent = signed("GET", url)
    sent.check()
    # The same request with the query in another order and encoded differently still verifies.
    sent.raw_query = (
        "fetch-owner=&delimiter=/&prefix=a%20b/&list-type=2&encoding-type=url&start-after=%c3%bc"
        "&continuation-token=ab%2Bc%3D%3D"
    )
    sent.check()


def test_presigned_urls_from_botocore_verify_until_they_expire() -> None:
    sent = presigned("GET", "https://s3.example.com/pockity/r%C3%A9sum%C3%A9.pdf?response-content-type=text%2Fplain")
    verified = sent.check(at=sent.at + timedelta(seconds=3599))
    assert verified.request.presigned and verified.request.region == "eu-west-3"
    assert verified.request.payload is Payload.UNSIGNED
    with pytest.raises(S3Error) as err:
        sent.check(at=sent.at + timedelta(seconds=3601))
    assert (err.value.code, err.value.status) == ("AccessDenied", 403)
    with pytest.raises(S3Error) as err:
        sent.check(at=sent.at - timedelta(minutes=16))
    assert err.value.code == "RequestTimeTooSkewed"


def _code(sent: Sent, **kwargs: object) -> str:
    with pytest.raises(S3Error) as err:
        sent.check(**kwargs)  # type: ignore[arg-type]
    return err.value.code


def test_a_wrong_secret_or_a_changed_request_does_not_match() -> None:
    sent = signed("GET", "http://127.0.0.1:9000/pockity/f.txt", headers={"Range": "bytes=0-9"})
    assert _code(sent, secret=SECRET[:-1] + "y") == "SignatureDoesNotMatch"
    sent.headers["range"] = "bytes=0-99"
    assert _code(sent) == "SignatureDoesNotMatch"
    other = signed("GET", "http://127.0.0.1:9000/pockity/f.txt")
    other.path = "/pockity/g.txt"
    assert _code(other) == "SignatureDoesNotMatch"
    query = signed("GET", "http://127.0.0.1:9000/pockity?prefix=a")
    query.raw_query = "prefix=b"
    assert _code(query) == "SignatureDoesNotMatch"


def test_unsigned_amz_headers_and_an_unsigned_host_are_refused() -> None:
    sent = signed("PUT", "http://127.0.0.1:9000/pockity/f.txt", data=b"x")
    sent.headers["x-amz-meta-injected"] = "1"
    assert _code(sent) == "AccessDenied"
    req = signed("GET", "http://127.0.0.1:9000/pockity/f.txt")
    auth = req.headers["authorization"]
    req.headers["authorization"] = auth.replace("SignedHeaders=host;", "SignedHeaders=")
    assert _code(req) == "AccessDenied"


def test_clock_skew_over_fifteen_minutes_is_refused() -> None:
    sent = signed("GET", "http://127.0.0.1:9000/pockity/f.txt")
    sent.check(at=sent.at + timedelta(minutes=14))
    assert _code(sent, at=sent.at + timedelta(minutes=16)) == "RequestTimeTooSkewed"
    assert _code(sent, at=sent.at - timedelta(minutes=16)) == "RequestTimeTooSkewed"


@pytest.mark.parametrize(
    ("headers", "query", "code", "status"),
    [
        ({"authorization": "AWS AKID:c2lnbmF0dXJl"}, "", "NotImplemented", 501),
        ({"authorization": "AWS4-ECDSA-P256-SHA256 Credential=x"}, "", "NotImplemented", 501),
        (
            {"authorization": "AWS4-HMAC-SHA256 Credential=AK/2026/us-east-1/s3/aws4_request"},
            "",
            "AuthorizationHeaderMalformed",
            400,
        ),
        (
            {
                "authorization": "AWS4-HMAC-SHA256 Credential=AK/20261203/us-east-1/s3/aws4_request, "
                "SignedHeaders=host;x-amz-date, Signature=00",
                "x-amz-date": "20261203T000000Z",
            },
            "",
            "InvalidRequest",
            400,
        ),
        (
            {
                "authorization": "AWS4-HMAC-SHA256 Credential=AK/20261203/us-east-1/s3/aws4_request, "
                "SignedHeaders=host;x-amz-date, Signature=00",
                "x-amz-date": "20261203T000000Z",
                "x-amz-content-sha256": "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
            },
            "",
            "NotImplemented",
            501,
        ),
        (
            {
                "authorization": "AWS4-HMAC-SHA256 Credential=AK/20261203/us-east-1/sqs/aws4_request, "
                "SignedHeaders=host, Signature=00",
            },
            "",
            "AuthorizationHeaderMalformed",
            400,
        ),
        (
            {},
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261203%2Fus-east-1%2Fs3%2Faws4_request",
            "AuthorizationQueryParametersError",
            400,
        ),
        (
            {},
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261203%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20261203T000000Z&X-Amz-Expires=604801&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
            "AuthorizationQueryParametersError",
            403,
        ),
    ],
)
def test_malformed_or_unsupported_signatures_get_s3_errors(
    headers: dict[str, str], query: str, code: str, status: int
) -> None:
    with pytest.raises(S3Error) as err:
        sigv4.parse(headers, sigv4.parse_query_pairs(query))
    assert (err.value.code, err.value.status) == (code, status)


def test_an_anonymous_request_has_no_signature() -> None:
    assert sigv4.parse({"host": "h"}, sigv4.parse_query_pairs("prefix=a")) is None
