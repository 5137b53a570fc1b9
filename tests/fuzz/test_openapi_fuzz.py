"""The fuzz stage: schemathesis drives every documented operation of a real `pockity serve` as an anonymous
caller, a user and an admin, with a fixed budget and seed. Any 500 (or another 5xx the operation does not
document), any undocumented status, and any response that does not match its documented schema, content
type or headers fails the build."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pockity.migrate import upgrade
from tests.fixtures.database import ADMIN_URL, _admin
from tests.fixtures.server import running_server, server_env

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL, ADMIN_PASSWORD = f"fuzz-admin-{uuid.uuid4().hex[:6]}@example.com", "fuzz admin password"
MAX_EXAMPLES = int(os.environ.get("POCKITY_FUZZ_EXAMPLES", "8"))
SEED = 20261203
CHECKS = ",".join(
    [
        "no_server_error",  # tests/fuzz/hooks.py
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


@pytest.fixture(scope="module")
def fuzz_db() -> Iterator[str]:
    """A database of its own: as an admin the fuzzer archives tiers and changes seed rows that the rest of the
    suite relies on (seed tables are not emptied between tests)."""
    name = f"pockity_fuzz_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def server(fuzz_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = server_env(
        fuzz_db,
        Path(tmp_path_factory.mktemp("fuzz")),
        ADMIN_EMAIL=ADMIN_EMAIL,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        LOGIN_MAX_FAILURES_PER_CLIENT="100000",
        # The limiter runs on every request, but never refuses: fuzzing wants responses, not 429s.
        RATE_LIMIT_REQUESTS_PER_SECOND="100000",
        RATE_LIMIT_BURST="10000000",
    )
    with running_server(env) as base:
        yield base


def token(base: str, email: str, password: str) -> str:
    r = httpx.post(f"{base}/api/auth/login", json={"email": email, "password": password}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def fuzz(base: str, headers: list[str]) -> tuple[int, str, float]:
    args = [str(SCHEMATHESIS), "run", f"{base}/openapi.json", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES)]
    args += ["--seed", str(SEED), "--phases", "examples,coverage,fuzzing", "--no-color", "--request-timeout", "20"]
    args += ["--generation-database", "none"]
    for header in headers:
        args += ["-H", header]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks", "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


def test_every_operation_as_anonymous_user_and_admin(server: str, subtests: pytest.Subtests) -> None:
    email = f"fuzz-user-{uuid.uuid4().hex[:6]}@example.com"
    body = {"email": email, "password": "fuzz user password", "name": "fuzz"}
    assert httpx.post(f"{server}/api/auth/register", json=body, timeout=10).status_code == 201
    personas = {
        "anonymous": [],
        "user": [f"Authorization: Bearer {token(server, email, 'fuzz user password')}"],
        "admin": [f"Authorization: Bearer {token(server, ADMIN_EMAIL, ADMIN_PASSWORD)}"],
    }
    for persona, headers in personas.items():
        with subtests.test(persona=persona):
            code, output, seconds = fuzz(server, headers)
            summary = output[output.find("SUMMARY") :] if "SUMMARY" in output else output[-3000:]
            print(f"fuzz as {persona}: exit {code} in {seconds:.0f}s\n{summary[-1500:]}")
            assert code == 0, output[-12000:]
