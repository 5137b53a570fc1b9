"""Two real server processes share each user's request limit exactly, with the counts in PostgreSQL or Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from pockity.models import Tier
from tests.fixtures.server import running_server, server_env
from tests.fixtures.storage import set_quota
from tests.fixtures.users import make_user
from tests.ratelimit.conftest import REDIS_URL

BURST, RATE = 100, 5  # a 20 s window


async def _start_of_a_window(window: int, margin: float = 5) -> None:
    """Windows are aligned to the epoch; start the run early in one so that it cannot straddle two."""
    left = window - time.time() % window
    if left < margin:
        await asyncio.sleep(left + 0.05)


@pytest.mark.parametrize("counters", ["database", "redis"])
async def test_two_processes_admit_exactly_the_burst_between_them(
    counters: str, client: httpx.AsyncClient, app: FastAPI, pg_url: str, tmp_path: Path
) -> None:
    user = await make_user(client, "flood")
    tier_id = await set_quota(app, user.id, storage_bytes=10**6)
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(Tier).where(Tier.id == tier_id).values(requests_per_second=RATE, request_burst=BURST))
    extra = {"RATE_LIMIT_LEASE_MAX": "5", "RATE_LIMIT_PATIENCE_SECONDS": "0"}
    if counters == "redis":
        extra |= {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": f"pockity-test-{uuid.uuid4().hex[:8]}:"}
    env = server_env(pg_url, tmp_path, **extra)
    with running_server(env) as one, running_server(env) as two:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as http:
            started = time.monotonic()
            results = await asyncio.gather(
                *(http.get(f"{(one, two)[i % 2]}/api/auth/me", headers=user.headers) for i in range(160))
            )
            elapsed = time.monotonic() - started
    codes = [r.status_code for r in results]
    assert codes.count(200) + codes.count(429) == 160, codes
    # The burst, plus what refilled while the requests ran (a process that kept its own count would admit
    # up to 2 x BURST, here all 160).
    assert BURST <= codes.count(200) <= BURST + RATE * elapsed + 1, (codes.count(200), elapsed)
    refused = [r for r in results if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limited"}
    assert {r.headers["Retry-After"] for r in refused} == {"1"}
