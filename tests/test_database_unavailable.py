"""PostgreSQL going away (a restart, a refused connect) is a 503 the client may retry, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.tcp_proxy import CuttableProxy
from tests.fixtures.users import make_user


@pytest.fixture
async def pg_proxy(pg_url: str) -> AsyncIterator[CuttableProxy]:
    """A TCP proxy in front of PostgreSQL: stopping it is PostgreSQL refusing and dropping connections."""
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    proxy = CuttableProxy(f"http://{host_port}")
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def proxied_app(pg_url: str, pg_proxy: CuttableProxy, tmp_path: Path) -> AsyncIterator[FastAPI]:
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    url = pg_url.replace(host_port, f"127.0.0.1:{pg_proxy.port}")
    async for application in running_app(make_settings(url, tmp_path)):
        yield application


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "service_unavailable" and set(error) == {"code", "message", "details"}
    assert int(r.headers["Retry-After"]) >= 1


async def test_database_down_is_503_with_retry_after_and_recovers(
    proxied_app: FastAPI, pg_proxy: CuttableProxy
) -> None:
    async with client_for(proxied_app) as client:
        user = await make_user(client, "dbdown")
        assert (await client.get("/api/storage/files", headers=user.headers)).status_code == 200

        await pg_proxy.stop()  # pooled connections are dropped, new ones refused
        # First the pooled connection that died under the request, then a connect that is refused.
        for _ in range(2):
            assert_unavailable(await client.get("/api/storage/files", headers=user.headers))
        assert_unavailable(await client.post("/api/auth/login", json={"email": user.email, "password": user.password}))

        await pg_proxy.start()  # back on the same port: the pool reconnects
        r = await client.get("/api/storage/files", headers=user.headers)
        assert r.status_code == 200, r.text
