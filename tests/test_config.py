"""Settings: secrets refused in production, generated (once) for the embedded default; database URLs."""

from __future__ import annotations

import base64
import secrets
import stat
from pathlib import Path

import pytest

from pockity.config import ConfigError, Settings, load_settings, normalise_database_url, resolve_secrets
from pockity.kit import jwt

STRONG_SECRET = secrets.token_urlsafe(48)
VALID_KEK = base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting leaks in from the machine running the tests; DATA_DIR is a fresh folder."""
    for name in Settings.model_fields:  # each setting's environment name is its field name, any case
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return tmp_path


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def production(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    return load(monkeypatch, ENVIRONMENT="production", **{"KEY_ENCRYPTION_KEY": VALID_KEK, **env})


# --- JWT_SECRET ---------------------------------------------------------------------------------------------


def test_production_without_jwt_secret_is_refused(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        production(monkeypatch)
    assert not (clean_env / "secrets" / "jwt_secret").exists()


@pytest.mark.parametrize(
    "placeholder",
    ["changeme", "secret", "CHANGEME", "short-but-random-9f3a", "   ", "please-change-me-" + "x" * 40, "x" * 31],
)
def test_production_with_placeholder_jwt_secret_is_refused(monkeypatch: pytest.MonkeyPatch, placeholder: str) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        production(monkeypatch, JWT_SECRET=placeholder)


def test_production_with_a_strong_secret_keeps_it(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    settings = production(monkeypatch, JWT_SECRET=STRONG_SECRET)
    assert settings.jwt_secret == STRONG_SECRET and settings.key_encryption_key == VALID_KEK
    assert not (clean_env / "secrets").exists()  # nothing generated behind the operator's back


def test_development_generates_jwt_secret_into_data_dir(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    settings = load(monkeypatch, ENVIRONMENT="development")
    path = clean_env / "secrets" / "jwt_secret"
    assert path.read_text().strip() == settings.jwt_secret
    assert settings.jwt_secret and len(settings.jwt_secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generated_jwt_secret_survives_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(monkeypatch)
    token, _ = jwt.issue_token("01user", "USER", first.jwt_secret or "", 5, password_stamp="s")
    second = load(monkeypatch)
    assert second.jwt_secret == first.jwt_secret
    assert jwt.decode_token(token, second.jwt_secret or "").sub == "01user"


def test_development_replaces_a_placeholder_with_the_generated_secret(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    settings = load(monkeypatch, JWT_SECRET="changeme")
    assert settings.jwt_secret != "changeme"
    assert settings.jwt_secret == (clean_env / "secrets" / "jwt_secret").read_text().strip()


def test_development_keeps_a_strong_jwt_secret(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    assert load(monkeypatch, JWT_SECRET=STRONG_SECRET).jwt_secret == STRONG_SECRET
    assert not (clean_env / "secrets" / "jwt_secret").exists()


def test_empty_generated_secret_file_is_an_error(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / "secrets").mkdir()
    (clean_env / "secrets" / "jwt_secret").write_text("\n")
    with pytest.raises(ConfigError, match="jwt_secret"):
        load(monkeypatch)


# --- KEY_ENCRYPTION_KEY -------------------------------------------------------------------------------------


def test_development_generates_a_32_byte_kek(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    settings = load(monkeypatch)
    assert settings.key_encryption_key
    assert len(base64.b64decode(settings.key_encryption_key, validate=True)) == 32
    path = clean_env / "secrets" / "key_encryption_key"
    assert path.read_text().strip() == settings.key_encryption_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(monkeypatch).key_encryption_key == settings.key_encryption_key


def test_production_without_kek_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="KEY_ENCRYPTION_KEY"):
        load(monkeypatch, ENVIRONMENT="production", JWT_SECRET=STRONG_SECRET)


@pytest.mark.parametrize(
    "kek",
    [
        base64.b64encode(secrets.token_bytes(16)).decode(),
        base64.b64encode(secrets.token_bytes(33)).decode(),
        "not base64 at all!",
        "changeme",
        secrets.token_hex(32),  # 64 hex characters: the right entropy, the wrong encoding
    ],
    ids=["16-bytes", "33-bytes", "not-base64", "placeholder", "hex"],
)
@pytest.mark.parametrize("environment", ["production", "development"])
def test_wrong_kek_is_refused(monkeypatch: pytest.MonkeyPatch, kek: str, environment: str) -> None:
    with pytest.raises(ConfigError, match="KEY_ENCRYPTION_KEY"):
        load(monkeypatch, ENVIRONMENT=environment, JWT_SECRET=STRONG_SECRET, KEY_ENCRYPTION_KEY=kek)


def test_resolve_secrets_accepts_settings_built_in_code(clean_env: Path) -> None:
    settings = Settings(environment="test", data_dir=clean_env, _env_file=None)  # type: ignore[call-arg]
    resolved = resolve_secrets(settings)
    assert resolved.jwt_secret and resolved.key_encryption_key
    assert settings.jwt_secret is None  # the input is not modified


# --- database URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql+psycopg2://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
        ("postgresql://u@db/app?sslmode=require", "postgresql+asyncpg://u@db/app?ssl=require"),
        ("sqlite:///var/p.db", "sqlite+aiosqlite:///var/p.db"),
        ("sqlite:////abs/p.db", "sqlite+aiosqlite:////abs/p.db"),
        ("sqlite+aiosqlite:///var/p.db", "sqlite+aiosqlite:///var/p.db"),
    ],
)
def test_normalise_database_url(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


def test_default_database_is_sqlite_in_data_dir(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    settings = load(monkeypatch)
    assert settings.async_database_url == f"sqlite+aiosqlite:///{clean_env.resolve() / 'pockity.db'}"


def test_database_url_from_env_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, DATABASE_URL="postgres://app:pw@db.internal:5432/pockity")
    assert settings.async_database_url == "postgresql+asyncpg://app:pw@db.internal:5432/pockity"


def test_relative_data_dir_becomes_absolute(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.chdir(clean_env)
    settings = load(monkeypatch, DATA_DIR="./rel")
    assert settings.data_dir == (clean_env / "rel").resolve()
    assert (clean_env / "rel" / "secrets" / "jwt_secret").exists()


# --- The S3 listener's TLS files ----------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["S3_API_TLS_CERT", "S3_API_TLS_KEY"])
def test_s3_tls_needs_both_files(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    with pytest.raises(ConfigError, match="S3_API_TLS_CERT and S3_API_TLS_KEY go together"):
        load(monkeypatch, **{given: "/etc/pockity/s3.pem"})


def test_s3_tls_files_become_absolute_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.chdir(clean_env)
    settings = load(monkeypatch, S3_API_TLS_CERT="tls/cert.pem", S3_API_TLS_KEY="tls/key.pem")
    tls = clean_env.resolve() / "tls"
    assert (settings.s3_api_tls_cert, settings.s3_api_tls_key) == (tls / "cert.pem", tls / "key.pem")
    unset = load(monkeypatch, S3_API_TLS_CERT="", S3_API_TLS_KEY=" ")
    assert (unset.s3_api_tls_cert, unset.s3_api_tls_key) == (None, None)
