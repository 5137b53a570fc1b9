"""The real `pockity` console script, run as a subprocess against the embedded SQLite default."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures.app import client_for, make_settings, running_app

POCKITY = shutil.which("pockity", path=str(Path(sys.executable).parent)) or shutil.which("pockity")
ADMIN_PASSWORD = "longpassword1"


def run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `pockity ARGS` with only the environment given here (nothing leaks in from the test run)."""
    assert POCKITY, "the pockity console script is not installed next to the test interpreter"
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data_dir), "DATA_DIR": str(data_dir)}
    return subprocess.run(
        [POCKITY, *args],
        env={**base, "BCRYPT_ROUNDS": "4", **env},
        cwd=data_dir,  # no stray .env from the repository
        capture_output=True,
        text=True,
        timeout=60,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def users(data_dir: Path) -> dict[str, str]:
    """email -> role, read straight from the SQLite file."""
    with sqlite3.connect(data_dir / "pockity.db") as conn:
        return dict(conn.execute("SELECT email, role FROM users").fetchall())


def new_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder after `pockity migrate`; the tests below share it with distinct emails."""
    path = tmp_path_factory.mktemp("cli")
    result = run(path, "migrate")
    assert result.returncode == 0, output(result)
    assert "database migrated (sqlite+aiosqlite)" in result.stdout
    return path


def test_migrate_creates_the_database_and_secrets(data_dir: Path) -> None:
    with sqlite3.connect(data_dir / "pockity.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"users", "api_keys", "alembic_version"} <= tables
    assert version
    assert (data_dir / "secrets" / "jwt_secret").read_text().strip()
    assert (data_dir / "secrets" / "key_encryption_key").read_text().strip()


def test_create_admin_is_idempotent(data_dir: Path) -> None:
    email = new_email("admin")
    first = run(data_dir, "create-admin", email, "--password", ADMIN_PASSWORD)
    assert first.returncode == 0, output(first)
    assert f"{email}: created" in first.stdout
    # Again, spelled differently: the same account, left alone.
    second = run(data_dir, "create-admin", email.upper(), "--password", ADMIN_PASSWORD)
    assert second.returncode == 0, output(second)
    assert f"{email}: unchanged" in second.stdout
    matching = {e: role for e, role in users(data_dir).items() if e.lower() == email}
    assert matching == {email: "ADMIN"}


async def test_create_admin_promotes_an_existing_user(data_dir: Path) -> None:
    email, password = new_email("promote"), "user password 1"
    url = f"sqlite+aiosqlite:///{data_dir}/pockity.db"
    async for app in running_app(make_settings(url, data_dir)):
        async with client_for(app) as c:
            r = await c.post("/api/auth/register", json={"email": email, "password": password, "name": "P"})
            assert r.status_code == 201, r.text
            assert users(data_dir)[email] == "USER"

            result = run(data_dir, "create-admin", email, "--password", ADMIN_PASSWORD)
            assert result.returncode == 0, output(result)
            assert f"{email}: promoted" in result.stdout
            assert users(data_dir)[email] == "ADMIN"

            # The account keeps its password and now has admin access.
            login = await c.post("/api/auth/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            token = login.json()["token"]
            listed = await c.get("/api/admin/users", headers={"Authorization": f"Bearer {token}"})
            assert listed.status_code == 200, listed.text
            assert email in [u["email"] for u in listed.json()["items"]]


def test_short_password_fails_cleanly(data_dir: Path) -> None:
    email = new_email("short")
    result = run(data_dir, "create-admin", email, "--password", "short")
    assert result.returncode != 0
    assert "at least 8 characters" in result.stderr
    assert "Traceback" not in output(result)
    assert email not in users(data_dir)


def test_invalid_admin_email_fails_cleanly(data_dir: Path) -> None:
    # The API refuses this address at registration; the CLI must not create an account with it either.
    result = run(data_dir, "create-admin", "not-an-email", "--password", ADMIN_PASSWORD)
    assert result.returncode != 0, output(result)
    assert "email" in result.stderr.lower()
    assert "Traceback" not in output(result)
    assert "not-an-email" not in users(data_dir)


def test_production_without_jwt_secret_fails_cleanly(tmp_path: Path) -> None:
    result = run(tmp_path, "migrate", ENVIRONMENT="production")
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr
    assert "Traceback" not in output(result)
    assert not (tmp_path / "pockity.db").exists()


def test_serve_refuses_s3_tls_files_it_cannot_use(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    result = run(tmp_path, "serve", "--port", "1", S3_API_TLS_CERT="cert.pem", S3_API_TLS_KEY="key.pem")
    assert result.returncode == 2, output(result)  # before binding a socket (port 1 would fail otherwise)
    assert "S3_API_TLS_CERT/S3_API_TLS_KEY cannot be used" in result.stderr
    assert "Traceback" not in output(result)
    assert not (tmp_path / "pockity.db").exists()  # refused before migrating


def test_serve_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", S3_API_TLS_CERT="cert.pem")
    assert result.returncode == 2, output(result)
    assert "S3_API_TLS_CERT and S3_API_TLS_KEY go together" in result.stderr
    assert "Traceback" not in output(result)
    assert not (tmp_path / "pockity.db").exists()  # refused before migrating
