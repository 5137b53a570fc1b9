from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.apikeys.service import reseal_all
from pockity.auth.schemas import KeyGrant, Principal
from pockity.auth.service import ScopeDenied, authorize
from pockity.config import Settings, load_settings
from pockity.kit import totp
from pockity.kit.crypto import Keyring, kek_id
from pockity.kit.time import utcnow
from pockity.migrate import upgrade
from pockity.models import ApiKey
from tests.fixtures.app import TEST_JWT_SECRET, TEST_KEK, client_for, make_settings, running_app
from tests.fixtures.users import TestUser, make_key, make_user

BIN = Path(sys.executable).parent


def _principal(scopes: set[str] | None, prefix: str | None = None) -> Principal:
    key = None
    if scopes is not None:
        key = KeyGrant(
            id="k", access_key_id="PK" + "A" * 18, name="k", scopes=frozenset(scopes), prefix=prefix, tier_id=None
        )
    return Principal(user_id="u", email="u@x.io", name="u", role="USER", is_active=True, created_at=utcnow(), key=key)


def test_authorize_scopes_and_prefix() -> None:
    authorize(_principal(None), "delete", "anything")  # a JWT is confined only by the user's space
    authorize(_principal({"read"}), "read", "a/b.txt")
    with pytest.raises(ScopeDenied) as denied:
        authorize(_principal({"read", "list"}), "write", "a/b.txt")
    assert denied.value.status == 403 and denied.value.code == "scope_denied"
    reports = _principal({"read", "write"}, prefix="reports/")
    authorize(reports, "write", "reports/2026/q1.csv")
    for outside in ("other/x", "reports", "reportsX/y", "", None):
        with pytest.raises(ScopeDenied):
            authorize(reports, "read", outside)


async def test_rotation_reseals_and_old_keys_keep_working(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, pg_url: str, tmp_path: Path
) -> None:
    key = await make_key(client, user)
    new_kek = base64.b64encode(secrets.token_bytes(32)).decode()
    # Mid-rotation: the new key seals, the old one still opens existing rows.
    mid = make_settings(pg_url, tmp_path, key_encryption_key=new_kek, key_encryption_keys_old=TEST_KEK)
    async for rotated_app in running_app(mid):
        async with client_for(rotated_app) as c:
            assert (await c.get("/api/auth/me", headers=key["headers"])).status_code == 200
            async with rotated_app.state.db.sessions() as s, s.begin():
                assert await reseal_all(s, rotated_app.state.keyring) == 1
    async with app.state.db.sessions() as s:
        row = (await s.scalars(select(ApiKey).where(ApiKey.id == key["id"]))).one()
    assert row.kek_id == kek_id(base64.b64decode(new_kek))
    # After rotation the old key is no longer needed at all.
    async for new_app in running_app(make_settings(pg_url, tmp_path, key_encryption_key=new_kek)):
        async with client_for(new_app) as c:
            assert (await c.get("/api/auth/me", headers=key["headers"])).status_code == 200


def test_keyring_refuses_a_sealed_value_moved_to_another_row() -> None:
    ring = Keyring(secrets.token_bytes(32))
    sealed, kid = ring.seal(b"secret", b"PKAAAAAAAAAAAAAAAAAA")
    assert ring.open(sealed, kid, b"PKAAAAAAAAAAAAAAAAAA") == b"secret"
    with pytest.raises(Exception, match="authentication"):
        ring.open(sealed, kid, b"PKBBBBBBBBBBBBBBBBBB")


async def test_cli_rotation_with_generated_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default: `pockity rotate-encryption-key` makes a new KEK and re-seals every secret."""
    for name in ("KEY_ENCRYPTION_KEY", "KEY_ENCRYPTION_KEYS_OLD", "DATABASE_URL", "JWT_SECRET", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = load_settings(bcrypt_rounds=4, _env_file=None)
    upgrade(settings.async_database_url)
    async for first in running_app(settings):
        async with client_for(first) as c:
            owner = await make_user(c)
            key = await make_key(c, owner)
            setup = await c.post("/api/auth/2fa/setup", headers=owner.headers)
            secret = setup.json()["secret"]
            step = totp.step_at(time.time())
            enabled = await c.post(
                "/api/auth/2fa/enable", json={"code": totp.hotp(secret, step)}, headers=owner.headers
            )
            assert enabled.status_code == 200, enabled.text
    old_id = kek_id(base64.b64decode(settings.key_encryption_key or ""))
    out = subprocess.run(
        [str(BIN / "pockity"), "rotate-encryption-key"],
        env={**os.environ, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "re-sealed 1 API key secret(s) and 1 two-factor secret(s)" in out.stdout
    rotated = load_settings(bcrypt_rounds=4, _env_file=None)
    assert rotated.key_encryption_key != settings.key_encryption_key
    async for second in running_app(replace_keys(rotated)):
        async with client_for(second) as c:
            assert (await c.get("/api/auth/me", headers=key["headers"])).status_code == 200
            first_step = await c.post("/api/auth/login", json={"email": owner.email, "password": owner.password})
            code = totp.hotp(secret, step + 1)  # the next step: the one used to enable cannot be used again
            second_step = await c.post(
                "/api/auth/login/2fa", json={"challenge": first_step.json()["challenge"], "code": code}
            )
            assert second_step.status_code == 200, second_step.text  # the secret opens under the new key alone
        async with second.state.db.sessions() as s:
            assert (await s.scalars(select(ApiKey.kek_id))).one() != old_id


def replace_keys(settings: Settings) -> Settings:
    """Drop the retired keys: every row must now open with the current key alone."""
    return settings.model_copy(update={"key_encryption_keys_old": ""})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_revocation_reaches_another_server_process_at_once(
    client: httpx.AsyncClient, user: TestUser, pg_url: str, tmp_path: Path
) -> None:
    key = await make_key(client, user)
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_url.replace("+asyncpg", ""),
        "JWT_SECRET": TEST_JWT_SECRET,
        "KEY_ENCRYPTION_KEY": TEST_KEK,
        "ENVIRONMENT": "production",
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [str(BIN / "pockity"), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as other:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await other.get("/api/open/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.1)
            assert (await other.get("/api/auth/me", headers=key["headers"])).status_code == 200
            assert (await client.delete(f"/api/apikeys/{key['id']}", headers=user.headers)).status_code == 200
            r = await other.get("/api/auth/me", headers=key["headers"])
            assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_revoked"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


async def test_activity_is_flushed_at_shutdown(pg_url: str, tmp_path: Path, client: httpx.AsyncClient) -> None:
    owner = await make_user(client)
    key = await make_key(client, owner)
    async for short_lived in running_app(make_settings(pg_url, tmp_path)):
        async with client_for(short_lived) as c:
            for _ in range(2):
                assert (await c.get("/api/auth/me", headers=key["headers"])).status_code == 200
    r = await client.get(f"/api/apikeys/{key['id']}", headers=owner.headers)
    assert r.json()["requestCount"] == 2
