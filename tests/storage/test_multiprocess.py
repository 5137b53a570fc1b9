"""Quotas hold across server processes: two real servers, one PostgreSQL, one S3 bucket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fastapi import FastAPI

from pockity.storage.backends.s3 import S3Backend
from tests.fixtures.s3 import S3Server
from tests.fixtures.server import running_server, server_env
from tests.fixtures.storage import MIB, set_quota, stored_rows, usage
from tests.fixtures.users import make_user


async def test_parallel_uploads_on_two_servers_never_pass_the_quota(
    s3_client: httpx.AsyncClient, s3_app: FastAPI, s3_server: S3Server, s3_bucket: str, pg_url: str, tmp_path: Path
) -> None:
    user = await make_user(s3_client)
    await set_quota(s3_app, user.id, storage_bytes=5 * MIB)
    env = server_env(
        pg_url,
        tmp_path,
        STORAGE_BACKEND="s3",
        S3_BUCKET=s3_bucket,
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
    )
    payload = b"m" * MIB
    with running_server(env) as one, running_server(env) as two:
        async with httpx.AsyncClient(timeout=60) as http:
            results = await asyncio.gather(
                *(
                    http.put(
                        f"{(one, two)[i % 2]}/api/storage/files/part-{i}.bin", content=payload, headers=user.headers
                    )
                    for i in range(20)
                )
            )
    codes = [r.status_code for r in results]
    assert codes.count(201) == 5 and codes.count(413) == 15, codes
    assert all(r.json()["error"]["code"] == "storage_quota_exceeded" for r in results if r.status_code == 413)
    backend: S3Backend = s3_app.state.storage
    in_bucket = {i.key.rsplit("/", 1)[-1]: i.size async for i in backend.iter_objects(f"users/{user.id}/")}
    assert sum(in_bucket.values()) == 5 * MIB
    assert await stored_rows(s3_app, user.id) == in_bucket
    u = await usage(s3_client, user)
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (5 * MIB, 5, 0)
