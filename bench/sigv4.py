"""The S3 API's signature check in-process: `sigv4.parse` + `sigv4.verify` on requests botocore signed (a GET
with a Range, a listing query, a presigned URL), against the floor of the same run: the one HMAC-SHA256 a
verification cannot avoid. Target (issue 14): under 100 µs per request.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from lib import Server, log

from pockity.s3api import sigv4

TARGET_US = 100.0
CREDS = Credentials("PKBENCHACCESSKEY0001", "b" * 40)


def _arrived(request: AWSRequest) -> tuple[str, str, str, dict[str, str], datetime]:
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    headers = {k.lower(): str(v) for k, v in prepared.headers.items()} | {"host": url.netloc}
    stamp = headers.get("x-amz-date") or dict(sigv4.parse_query_pairs(url.query))["X-Amz-Date"]
    at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return prepared.method, url.path, url.query, headers, at


def _cases() -> dict[str, tuple[str, str, str, dict[str, str], datetime]]:
    get = AWSRequest(
        method="GET", url="http://127.0.0.1:9000/pockity/reports/q3%20final.pdf", headers={"Range": "bytes=0-99"}
    )
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(get)
    listing = AWSRequest(
        method="GET", url="http://127.0.0.1:9000/pockity?list-type=2&prefix=a%2F&delimiter=%2F&encoding-type=url"
    )
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(listing)
    presigned = AWSRequest(method="GET", url="http://127.0.0.1:9000/pockity/a.txt")
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=3600).add_auth(presigned)
    return {"get_range": _arrived(get), "list_v2": _arrived(listing), "presigned": _arrived(presigned)}


def _per_call_us(fn: Any, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return round(best * 1e6, 2)


def bench_sigv4(_server: Server, opts: argparse.Namespace, _wrk: str) -> tuple[dict[str, Any], list[str]]:
    n = opts.sigv4_iterations
    key = sigv4.signing_key(CREDS.secret_key, "20261203", "us-east-1")
    floor = _per_call_us(lambda: hmac.new(key, b"x" * 200, hashlib.sha256).hexdigest(), n)
    results: dict[str, Any] = {"floor_one_hmac_us": floor}
    for name, (method, path, raw_query, headers, at) in _cases().items():

        def verify(
            method: str = method,
            path: str = path,
            raw_query: str = raw_query,
            headers: dict[str, str] = headers,
            at: datetime = at,
        ) -> None:
            query = sigv4.parse_query_pairs(raw_query)
            req = sigv4.parse(headers, query)
            assert req is not None
            sigv4.verify(req, CREDS.secret_key, method, path, query, headers, at)

        us = _per_call_us(verify, n)
        results[name] = {"us_per_request": us, "vs_floor": round(us / floor, 1)}
        log(f"  {name:<10} {us:7.1f} µs a verification ({us / floor:.0f}x one HMAC); target < {TARGET_US} µs")
    worst = max(v["us_per_request"] for k, v in results.items() if isinstance(v, dict))
    results["verdict"] = "ok" if worst < TARGET_US else "FAIL"
    return {"what": "sigv4.parse + sigv4.verify in-process, best of 5", "iterations": n, **results}, []
