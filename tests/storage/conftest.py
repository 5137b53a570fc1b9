from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from pockity.storage.backends.s3 import MIN_PART_SIZE
from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.s3 import S3Server


@pytest.fixture(scope="session")
async def s3_app(
    pg_url: str, s3_server: S3Server, s3_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FastAPI]:
    """The app on PostgreSQL and the real S3 server (Ceph RGW), with the smallest multipart part size."""
    settings = make_settings(
        pg_url,
        Path(tmp_path_factory.mktemp("s3app")),
        storage_backend="s3",
        s3_bucket=s3_bucket,
        s3_endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        aws_region=s3_server.region,
        s3_part_size=MIN_PART_SIZE,
        jobs_enabled=False,
    )
    async for app in running_app(settings):
        yield app


@pytest.fixture
async def s3_client(s3_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(s3_app) as c:
        yield c
