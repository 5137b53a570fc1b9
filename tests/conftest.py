from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.users import TestUser, make_admin, make_user

# Servers the tests start serve no S3 listener unless a test asks for one: S3_API_PORT's default (9000) would
# make every `pockity serve` of the suite compete for the same port.
os.environ.setdefault("S3_API_PORT", "0")

pytest_plugins = ["tests.fixtures.database", "tests.fixtures.s3", "tests.fixtures.tiers", "tests.fixtures.payments"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
async def app(pg_url: str, data_dir: Path) -> AsyncIterator[FastAPI]:
    async for application in running_app(make_settings(pg_url, data_dir)):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


@pytest.fixture
async def user(client: httpx.AsyncClient) -> TestUser:
    return await make_user(client, "alice")


@pytest.fixture
async def other_user(client: httpx.AsyncClient) -> TestUser:
    return await make_user(client, "bob")


@pytest.fixture
async def admin(app: FastAPI, client: httpx.AsyncClient) -> TestUser:
    return await make_admin(app, client)
