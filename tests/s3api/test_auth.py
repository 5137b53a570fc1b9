"""S3 authentication with real Pockity key pairs (PostgreSQL): botocore-signed requests, V4 and V2, and the
key states that must refuse at once."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.auth import HmacV1Auth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi import FastAPI
from sqlalchemy import update

from pockity.models import User
from pockity.s3api import auth, sigv4
from pockity.s3api.errors import S3Error
from tests.fixtures.users import TestUser, make_key

URL = "http://127.0.0.1:9000/pockity/docs/a%20b.txt?acl"


def arrived(request: AWSRequest) -> tuple[auth.S3Request, datetime]:
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    headers = {k.lower(): str(v) for k, v in prepared.headers.items()} | {"host": url.netloc}
    if "x-amz-date" in headers:
        at = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    elif "date" in headers:
        at = parsedate_to_datetime(headers["date"])
    else:
        at = datetime.strptime(dict(sigv4.parse_query_pairs(url.query))["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=UTC
        )
    query = sigv4.parse_query_pairs(url.query)
    return auth.S3Request(prepared.method, url.path, query, headers, url.path), at


def v4(key: dict[str, str], secret: str | None = None) -> tuple[auth.S3Request, datetime]:
    request = AWSRequest(method="GET", url=URL)
    S3SigV4Auth(Credentials(key["accessKeyId"], secret or key["secretKey"]), "s3", "us-east-1").add_auth(request)
    return arrived(request)


async def _check(app: FastAPI, sent: tuple[auth.S3Request, datetime]) -> auth.Authenticated:
    req, at = sent
    return await auth.authenticate(req, app.state.db, app.state.keyring, at)


async def _code(app: FastAPI, sent: tuple[auth.S3Request, datetime]) -> str:
    with pytest.raises(S3Error) as err:
        await _check(app, sent)
    return err.value.code


async def test_every_signature_kind_authenticates_as_the_keys_owner(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    key = await make_key(client, user, scopes=["read", "list"], prefix="docs/")
    creds = Credentials(key["accessKeyId"], key["secretKey"])
    presign = AWSRequest(method="GET", url=URL)
    S3SigV4QueryAuth(creds, "s3", "eu-central-1", expires=60).add_auth(presign)
    legacy = AWSRequest(method="GET", url=URL)
    HmacV1Auth(creds).add_auth(legacy)
    for sent in (v4(key), arrived(presign), arrived(legacy)):
        found = await _check(app, sent)
        assert found.principal.user_id == user.id
        assert found.principal.key is not None and found.principal.key.id == key["id"]
        assert found.principal.key.scopes == {"read", "list"} and found.principal.key.prefix == "docs/"


async def test_unknown_wrong_revoked_and_disabled_are_refused(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser
) -> None:
    key = await make_key(client, user)
    assert await _code(app, v4({**key, "accessKeyId": "PK" + "A" * 18})) == "InvalidAccessKeyId"
    wrong = key["secretKey"][:-1] + ("1" if key["secretKey"].endswith("0") else "0")  # never the secret itself
    assert await _code(app, v4(key, secret=wrong)) == "SignatureDoesNotMatch"
    sent = v4(key)
    r = await client.delete(f"/api/apikeys/{key['id']}", headers=user.headers)
    assert r.status_code == 200, r.text
    assert await _code(app, sent) == "InvalidAccessKeyId"
    other = await make_key(client, user)
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(User).where(User.id == user.id).values(is_active=False))
    assert await _code(app, v4(other)) == "AccessDenied"


async def test_an_anonymous_request_is_refused(app: FastAPI) -> None:
    req = auth.S3Request("GET", "/pockity", [], {"host": "127.0.0.1:9000"}, "/pockity")
    with pytest.raises(S3Error) as err:
        await auth.authenticate(req, app.state.db, app.state.keyring, datetime.now(UTC))
    assert (err.value.code, err.value.status) == ("AccessDenied", 403)
