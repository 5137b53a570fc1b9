"""Operational routes and the per-request plumbing: health, request ids, metrics, the access log."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from pockity.open.health import StorageHealth
from pockity.storage.backends import StorageUnavailable
from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.users import TestUser, make_key

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
UNREACHABLE_DATABASES = [
    "postgresql+asyncpg://postgres@127.0.0.1:1/nothing",
    "postgresql+asyncpg://postgres@127.0.0.1:5432/pockity_no_such_database",
]


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """create_app() reconfigures the root logger; put it back so other tests see what they expect."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def requests_total(c: httpx.AsyncClient, method: str, route: str, status: str) -> float:
    r = await c.get("/metrics")
    assert r.status_code == 200
    for family in text_string_to_metric_families(r.text):
        if family.name != "pockity_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == {"method": method, "route": route, "status": status}:
                return sample.value
    return 0.0


# --- health ---------------------------------------------------------------------------------------------------


async def test_health_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/open/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert "error" not in body


@pytest.mark.parametrize("url", UNREACHABLE_DATABASES, ids=["closed-port", "missing-database"])
async def test_health_503_names_the_unreachable_database(data_dir: Path, url: str, restore_root_logging: None) -> None:
    async for app in running_app(make_settings(url, data_dir)):
        async with client_for(app) as c:
            start = time.monotonic()
            r = await c.get("/api/open/health")
            elapsed = time.monotonic() - start
    assert elapsed < 5, f"health took {elapsed:.1f}s with the database down"
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "unavailable" and body["database"] == "unavailable"
    assert body["error"]["code"] == "service_unavailable"
    assert body["error"]["details"] == {"failing": ["database"]}
    assert "database" in body["error"]["message"]
    assert "127.0.0.1" not in r.text and "postgres" not in r.text.lower()


async def test_health_reuses_a_recent_storage_ok_until_a_request_sees_storage_fail(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.state.storage
    pings: list[str] = []
    healthy = True

    async def ping() -> None:
        pings.append("ping")
        if not healthy:
            raise StorageUnavailable("down")

    async def failing_put(*_: object, **__: object) -> None:
        raise StorageUnavailable("down")

    monkeypatch.setattr(backend, "ping", ping)
    app.state.storage_health.mark_down()  # whatever earlier tests left
    for _ in range(5):
        r = await client.get("/api/open/health")
        assert r.status_code == 200 and r.json()["storage"] == "ok"
    assert len(pings) == 1  # one storage call for five probes
    healthy = False
    monkeypatch.setattr(backend, "put_stream", failing_put)
    r = await client.put("/api/storage/files/x.bin", content=b"x", headers=user.headers)
    assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
    for _ in range(2):  # right after the failure, and a failing state is never reused
        r = await client.get("/api/open/health")
        assert r.status_code == 503 and r.json()["storage"] == "unavailable"
    assert len(pings) == 3
    healthy = True
    assert (await client.get("/api/open/health")).status_code == 200
    assert (await client.get("/api/open/health")).status_code == 200
    assert len(pings) == 4


async def test_storage_health_expires_and_ignores_a_check_overtaken_by_a_failure() -> None:
    now = [100.0]
    health = StorageHealth(ttl=5.0, clock=lambda: now[0])
    calls: list[int] = []

    async def ping() -> None:
        calls.append(1)

    await health.check(ping)
    await health.check(ping)
    assert len(calls) == 1
    now[0] += 5.0  # the ok has expired
    await health.check(ping)
    assert len(calls) == 2

    async def overtaken() -> None:
        health.mark_down()  # a request saw the storage fail while this check was in flight

    now[0] += 5.0
    await health.check(overtaken)
    await health.check(ping)  # so the check's ok was not kept
    assert len(calls) == 3

    async def broken() -> None:
        raise StorageUnavailable("down")

    health.mark_down()
    with pytest.raises(StorageUnavailable):
        await health.check(broken)
    await health.check(ping)
    assert len(calls) == 4


# --- request ids --------------------------------------------------------------------------------------------


async def test_request_id_generated_when_absent(client: httpx.AsyncClient) -> None:
    first = (await client.get("/api/open/health")).headers["X-Request-ID"]
    second = (await client.get("/api/open/health")).headers["X-Request-ID"]
    assert GENERATED_ID.match(first) and GENERATED_ID.match(second)
    assert first != second


async def test_sane_request_id_is_kept(client: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for sent in ["abc-123", "req.42_X", "a" * 64, "0f8fad5b-d9cb-469f-a165-70867728950e"]:
        with subtests.test(sent=sent):
            r = await client.get("/api/open/health", headers={"X-Request-ID": sent})
            assert r.headers["X-Request-ID"] == sent


async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for sent in ["a" * 200, "a" * 65, "has spaces in it", "semi;colon", "<script>", "", "ünï"]:
        with subtests.test(sent=sent):
            r = await client.get("/api/open/health", headers={"X-Request-ID": sent.encode("utf-8")})
            got = r.headers["X-Request-ID"]
            assert got != sent and GENERATED_ID.match(got)


async def test_request_id_on_error_responses(client: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for method, path, status in [("GET", "/api/auth/me", 401), ("GET", "/nope", 404), ("GET", "/api/auth/login", 405)]:
        with subtests.test(route=f"{method} {path}"):
            r = await client.request(method, path, headers={"X-Request-ID": "err-check-1"})
            assert r.status_code == status
            assert r.headers["X-Request-ID"] == "err-check-1"


async def test_request_id_on_413(client: httpx.AsyncClient, app: FastAPI) -> None:
    too_big = b" " * (app.state.settings.max_json_body_bytes + 1)
    r = await client.post(
        "/api/auth/login", content=too_big, headers={"X-Request-ID": "big-1", "Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.headers["X-Request-ID"] == "big-1"


# --- metrics ------------------------------------------------------------------------------------------------


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient, user: TestUser) -> None:
    before = await requests_total(client, "GET", "/api/auth/me", "200")
    for _ in range(3):
        assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
    assert await requests_total(client, "GET", "/api/auth/me", "200") == before + 3


async def test_metrics_use_templates_not_ids(client: httpx.AsyncClient, user: TestUser) -> None:
    key_id = "01" + secrets.token_hex(12)
    before = await requests_total(client, "GET", "/api/apikeys/{key_id}", "404")
    r = await client.get(f"/api/apikeys/{key_id}", headers=user.headers)
    assert r.status_code == 404
    assert await requests_total(client, "GET", "/api/apikeys/{key_id}", "404") == before + 1
    text = (await client.get("/metrics")).text
    assert key_id not in text


async def test_metrics_unmatched_paths_share_one_label(client: httpx.AsyncClient) -> None:
    junk = "junk-" + secrets.token_hex(8)
    before = await requests_total(client, "GET", "unmatched", "404")
    assert (await client.get(f"/{junk}")).status_code == 404
    assert await requests_total(client, "GET", "unmatched", "404") == before + 1
    assert junk not in (await client.get("/metrics")).text


async def test_metrics_expose_latency_histogram(client: httpx.AsyncClient) -> None:
    await client.get("/api/open/health")
    text = (await client.get("/metrics")).text
    assert 'pockity_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/open/health"}' in text


# --- structured access log ----------------------------------------------------------------------------------


@pytest.fixture
async def json_app(pg_url: str, data_dir: Path, restore_root_logging: None) -> AsyncIterator[FastAPI]:
    settings = make_settings(pg_url, data_dir, log_format="json", log_level="INFO")
    async for app in running_app(settings):
        yield app


@pytest.fixture
def access_lines(json_app: FastAPI) -> Iterator[io.StringIO]:
    """What pockity.access writes, formatted by the formatter the app installed on the root handler."""
    root_handler = logging.getLogger().handlers[0]
    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.setFormatter(root_handler.formatter)
    logger = logging.getLogger("pockity.access")
    logger.addHandler(capture)
    yield stream
    logger.removeHandler(capture)


def line_for(stream: io.StringIO, r: httpx.Response) -> dict[str, object]:
    """The single access-log line of this response (fixtures may have logged requests of their own)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    mine = [line for line in lines if line.get("request_id") == r.headers["X-Request-ID"]]
    assert len(mine) == 1, lines
    return mine[0]


async def test_access_log_is_one_json_line_per_request(
    json_app: FastAPI, access_lines: io.StringIO, user: TestUser
) -> None:
    async with client_for(json_app) as c:
        r = await c.get("/api/auth/me", headers={**user.headers, "X-Request-ID": "log-check-1"})
    assert r.status_code == 200
    line = line_for(access_lines, r)
    assert line["logger"] == "pockity.access" and line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["route"] == "/api/auth/me"
    assert line["status"] == 200
    assert line["request_id"] == "log-check-1"
    assert line["user_id"] == user.id
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0


async def test_access_log_for_anonymous_error(json_app: FastAPI, access_lines: io.StringIO) -> None:
    key_id = "01" + secrets.token_hex(12)
    async with client_for(json_app) as c:
        r = await c.get(f"/api/apikeys/{key_id}")
    assert r.status_code == 401
    line = line_for(access_lines, r)
    assert line["route"] == "/api/apikeys/{key_id}" and line["status"] == 401
    assert "user_id" not in line
    assert line["request_id"] == r.headers["X-Request-ID"]


async def test_access_log_names_the_api_key(
    json_app: FastAPI, access_lines: io.StringIO, client: httpx.AsyncClient, user: TestUser
) -> None:
    key = await make_key(client, user)
    async with client_for(json_app) as c:
        r = await c.get("/api/auth/me", headers=key["headers"])
    assert r.status_code == 200
    line = line_for(access_lines, r)
    assert line["user_id"] == user.id and line["api_key_id"] == key["id"]
    assert key["secretKey"] not in access_lines.getvalue()


async def test_access_log_after_login_names_the_user(
    json_app: FastAPI, access_lines: io.StringIO, user: TestUser
) -> None:
    async with client_for(json_app) as c:
        r = await c.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert r.status_code == 200
    line = line_for(access_lines, r)
    assert line["route"] == "/api/auth/login" and line["user_id"] == user.id
    assert user.password not in access_lines.getvalue()
