"""Each backend once per session; `backend` runs a test on both, with a fresh key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from pockity.storage.backends.base import StorageBackend
from pockity.storage.backends.local import LocalBackend
from pockity.storage.backends.s3 import MIN_PART_SIZE, S3Backend
from tests.fixtures.s3 import S3Server

SIGNING_KEY = b"contract-tests-signing-key-0000000"
PUBLIC_BASE_URL = "http://pockity.test"


@pytest.fixture(scope="session")
async def local_backend(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tmp_path_factory.mktemp("local-store"), PUBLIC_BASE_URL, SIGNING_KEY)
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture(scope="session")
async def s3_backend(s3_server: S3Server, s3_bucket: str) -> AsyncIterator[S3Backend]:
    # The smallest part size S3 allows, so a multipart upload needs only a few MiB of test data.
    backend = S3Backend(bucket=s3_bucket, part_size=MIN_PART_SIZE, **s3_server.backend_kwargs())
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> StorageBackend:
    # A plain fixture: async session fixtures can only be requested lazily from outside the event loop.
    return request.getfixturevalue(f"{request.param}_backend")  # type: ignore[no-any-return]


@pytest.fixture
def prefix() -> str:
    """Keys of one test live under their own prefix; S3 tests share the session's bucket."""
    return f"t-{uuid.uuid4().hex[:10]}/"
