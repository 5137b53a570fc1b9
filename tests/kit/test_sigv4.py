"""kit/sigv4: presigned URLs byte-for-byte equal to botocore's for the same inputs and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pockity.kit.sigv4 import Presigner, host_header
from pockity.storage.backends.base import content_disposition
from pockity.storage.backends.s3 import S3Backend

ACCESS, SECRET = "AKIDEXAMPLE/with+odd=chars", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
KEYS = [
    "a.txt",
    "users/01abc/dir/file.bin",
    "with space/and  two  spaces.txt",
    "naïve/été ☀/日本語ファイル.png",
    "emoji/😀 party.gif",
    "specials/!#$&'()*+,;=:@[]?%.txt",
    "tilde~/under_score-dash.dot",
    "percent%20literal/%2F",
    "slashes//double/",
    "trailing dot.",
    'quote"back\\slash',
    "plus+and=equals&amp",
    "\u00a0nbsp\u2028line-sep",
]
FILENAMES = [None, "a.txt", 'report "final".pdf', "naïve ☀.png", "semi;colon, comma.txt", "x" * 200]
ENDPOINTS = [
    "http://127.0.0.1:7480",
    "https://s3.eu-west-1.amazonaws.com",
    "https://S3.Example.COM:443",
    "http://minio.local:80",
    "https://storage.example/base/path",
]
TIMES = [
    datetime(2026, 12, 3, 13, 5, 9, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC),
]


def botocore_url(
    endpoint: str,
    region: str,
    bucket: str,
    key: str,
    expires: int,
    filename: str | None,
    now: datetime,
    token: str | None = None,
) -> str:
    """What S3Backend did before kit/sigv4: botocore's query signer on the same URL and parameters."""
    url = f"{endpoint.rstrip('/')}/{quote(bucket)}/{quote(key, safe='/~')}"
    params = {"response-content-disposition": content_disposition(filename)} if filename else {}
    request = AWSRequest(method="GET", url=url, params=params)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        S3SigV4QueryAuth(Credentials(ACCESS, SECRET, token), "s3", region, expires=expires).add_auth(request)
    return str(request.prepare().url)


def ours(
    endpoint: str,
    region: str,
    bucket: str,
    key: str,
    expires: int,
    filename: str | None,
    now: datetime,
    token: str | None = None,
) -> str:
    signer = Presigner(endpoint, region=region, access_key=ACCESS, secret_key=SECRET, session_token=token)
    params = {"response-content-disposition": content_disposition(filename)} if filename else None
    return signer.presign("GET", f"/{quote(bucket)}/{quote(key, safe='/~')}", expires, params, now=now)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("filename", FILENAMES)
def test_same_url_as_botocore_for_every_key_and_filename(key: str, filename: str | None) -> None:
    now = TIMES[0]
    assert ours(ENDPOINTS[0], "us-east-1", "bucket", key, 3600, filename, now) == botocore_url(
        ENDPOINTS[0], "us-east-1", "bucket", key, 3600, filename, now
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_same_url_as_botocore_for_every_endpoint_region_time_and_expiry(endpoint: str) -> None:
    for region in ("us-east-1", "eu-central-1", "ap-southeast-2"):
        for now in TIMES:
            for expires in (1, 60, 3600, 604800):
                for bucket in ("bucket", "my.dotted-bucket"):
                    key, filename = KEYS[3], FILENAMES[3]
                    assert ours(endpoint, region, bucket, key, expires, filename, now) == botocore_url(
                        endpoint, region, bucket, key, expires, filename, now
                    ), (endpoint, region, now, expires, bucket)


def test_same_url_as_botocore_with_a_session_token() -> None:
    token = "FQoGZXIvYXdzE/with+slash=and=="
    now = TIMES[1]
    assert ours(ENDPOINTS[1], "eu-west-1", "b", KEYS[5], 900, FILENAMES[2], now, token) == botocore_url(
        ENDPOINTS[1], "eu-west-1", "b", KEYS[5], 900, FILENAMES[2], now, token
    )


def test_the_signing_key_cache_follows_the_date() -> None:
    """One signer across midnight: each URL is still the one botocore signs for its own instant."""
    signer = Presigner(ENDPOINTS[0], region="us-east-1", access_key=ACCESS, secret_key=SECRET)
    start = datetime(2026, 12, 3, 23, 59, 58, tzinfo=UTC)
    for step in range(4):  # 23:59:58, 23:59:59, 00:00:00 (next day), 00:00:01
        now = start + timedelta(seconds=step)
        for day_back in (now, now - timedelta(days=3), now):  # a different day in between, then back
            url = signer.presign("GET", "/bucket/" + quote(KEYS[1], safe="/~"), 60, now=day_back)
            assert url == botocore_url(ENDPOINTS[0], "us-east-1", "bucket", KEYS[1], 60, None, day_back)


def test_s3_backend_presign_get_matches_botocore() -> None:
    backend = S3Backend(
        bucket="pockity-bucket",
        region="us-east-1",
        endpoint_url="http://127.0.0.1:7480/",
        access_key=ACCESS,
        secret_key=SECRET,
    )
    for key in KEYS:
        for filename in FILENAMES:
            got = backend.presign_get(key, 3600, filename=filename, now=TIMES[2])
            assert got == botocore_url(
                "http://127.0.0.1:7480", "us-east-1", "pockity-bucket", key, 3600, filename, TIMES[2]
            )


def test_default_time_is_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    url = Presigner(ENDPOINTS[0], region="us-east-1", access_key="A", secret_key="S").presign("GET", "/b/k", 5)
    stamp = url.split("X-Amz-Date=", 1)[1].split("&", 1)[0]
    signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= signed_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:7480", "127.0.0.1:7480"),
        ("https://S3.Example.COM:443/x", "s3.example.com"),
        ("http://h:80", "h"),
        ("https://h:80", "h:80"),
        ("http://user:pw@h:9000", "h:9000"),
        ("http://[::1]:9000", "[::1]:9000"),
    ],
)
def test_host_header(url: str, host: str) -> None:
    assert host_header(url) == host
