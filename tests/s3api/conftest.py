"""The S3 API in-process: requests signed by botocore (the reference signer), sent through httpx to S3App."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi import FastAPI

from pockity.s3api.router import S3App
from tests.fixtures.s3api import served, served_tls, tls_ca  # noqa: F401  (real servers, once per session)
from tests.fixtures.users import TestUser, make_key

BASE = "http://s3.pockity.test"


@dataclass
class S3Client:
    """Signs with one key pair and sends to the in-process S3 app."""

    http: httpx.AsyncClient
    access_key: str
    secret: str

    async def send(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        request = AWSRequest(method=method, url=BASE + path, data=body, headers=headers or {})
        S3SigV4Auth(Credentials(self.access_key, self.secret), "s3", "us-east-1").add_auth(request)
        prepared = request.prepare()
        return await self.http.request(method, prepared.url, content=body, headers=dict(prepared.headers.items()))


@pytest.fixture
async def s3http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=S3App(app)), base_url=BASE) as http:
        yield http


async def s3_client_for(client: httpx.AsyncClient, http: httpx.AsyncClient, user: TestUser, **key: object) -> S3Client:
    made = await make_key(client, user, **key)
    return S3Client(http, made["accessKeyId"], made["secretKey"])


@pytest.fixture
async def s3(client: httpx.AsyncClient, s3http: httpx.AsyncClient, user: TestUser) -> S3Client:
    return await s3_client_for(client, s3http, user)
