"""Settings from the environment and `.env`, keeping the seed's variable names."""

from __future__ import annotations

import base64
import logging
import os
import secrets
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("pockity.config")

# Values copied from tutorials and .env examples; they must never sign real tokens.
_PLACEHOLDER_SECRETS = {
    "",
    "secret",
    "changeme",
    "change-me",
    "change_me",
    "jwt_secret",
    "jwt-secret",
    "your-secret",
    "your_secret",
    "your-secret-key",
    "your_jwt_secret",
    "your-jwt-secret",
    "supersecret",
    "mysecret",
    "development",
    "test",
}
_MIN_SECRET_LENGTH = 32


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says which variable to fix."""


def is_placeholder_secret(value: str | None) -> bool:
    if value is None:
        return True
    v = value.strip().lower()
    return v in _PLACEHOLDER_SECRETS or "change" in v or "placeholder" in v or len(v) < _MIN_SECRET_LENGTH


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False, populate_by_name=True)

    environment: Literal["development", "production", "test"] = "development"
    port: int = 8080
    data_dir: Path = Path("./var")
    database_url: str | None = None
    # 25 kept, no overflow: overflow connections are closed when returned, so load above the pool would open and
    # close PostgreSQL connections continuously (measured: hundreds a second at 64 connections); requests
    # queue for a pooled connection instead (pool_timeout 30 s, then 503).
    database_pool_size: int = Field(25, ge=1)
    database_max_overflow: int = Field(0, ge=0)
    jwt_secret: str | None = None
    jwt_expires_minutes: int = Field(1440, ge=1)
    bcrypt_rounds: int = Field(12, ge=4, le=16)
    key_encryption_key: str | None = None
    key_encryption_keys_old: str = ""
    max_api_keys_per_user: int = Field(20, ge=1)
    api_key_activity_flush_seconds: float = Field(60.0, gt=0)
    cors_origins: str = ""
    # Proxies whose X-Forwarded-For/-Proto are believed (comma-separated addresses or networks, or "*").
    # Empty: none, the TCP peer is the client (so no client can pick its own address for login throttling).
    forwarded_allow_ips: str = ""
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    max_json_body_bytes: int = Field(1024 * 1024, ge=1024)
    metrics_token: str | None = None
    graceful_shutdown_seconds: int = Field(30, ge=1)
    admin_email: str | None = None
    admin_password: str | None = None
    # Login throttling: failures per email and per client address within the window.
    login_max_failures_per_email: int = Field(5, ge=1)
    login_max_failures_per_client: int = Field(20, ge=1)
    login_failure_window_seconds: int = Field(900, ge=1)
    login_lockout_seconds: int = Field(60, ge=1)
    # Fair sharing: the defaults for tiers that set no limits of their own (see README, "Fair sharing").
    # Each user (and each API key linked to a tier): `requests_per_second` on average, `burst` at once.
    rate_limit_enabled: bool = True
    rate_limit_requests_per_second: int = Field(100, ge=1, le=1_000_000)
    rate_limit_burst: int = Field(2000, ge=1, le=100_000_000)
    rate_limit_concurrent_uploads: int = Field(16, ge=1, le=100_000)
    # The most requests a process takes from the shared bucket at once (the lease; at most 1/20 of the burst).
    rate_limit_lease_max: int = Field(25, ge=1, le=10_000)
    # A request over the rate waits up to this long for its turn; past it, 429 after the whole wait (so a
    # client retrying in a tight loop costs little).
    rate_limit_patience_seconds: float = Field(0.5, ge=0, le=10)
    # Set: the shared buckets live in Redis (one Lua script per lease) instead of the database.
    redis_url: str | None = None
    redis_key_prefix: str = "pockity:"
    # The S3 API (issue 14): its own listener; every tenant sees one bucket of this name (its users/{id}/ space).
    s3_api_port: int = Field(9000, ge=0, le=65535)  # 0: no S3 listener
    s3_api_bucket: str = Field("pockity", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_api_domain: str | None = None  # set: virtual-hosted requests to {bucket}.{domain} too
    # Both or neither: the S3 listener serves HTTPS with this certificate chain and its private key (PEM files).
    s3_api_tls_cert: Path | None = None
    s3_api_tls_key: Path | None = None
    # Storage
    storage_backend: Literal["local", "s3"] = "local"
    local_storage_dir: Path | None = None
    public_base_url: str | None = None
    s3_bucket: str = "pockity"
    s3_endpoint_url: str | None = None
    s3_create_bucket: bool = True
    aws_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    s3_part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    max_upload_bytes: int = Field(5 * 1024**3, ge=1)
    max_concurrent_uploads: int = Field(32, ge=1)
    upload_reservation_ttl_seconds: int = Field(900, ge=10)
    upload_reserve_step_bytes: int = Field(8 * 1024 * 1024, ge=1)
    direct_upload_expires_seconds: int = Field(900, ge=60, le=604800)
    # Upload URLs live shorter than download URLs: a form's bytes stay reserved until it expires.
    direct_upload_max_expires_seconds: int = Field(3600, ge=60, le=604800)
    download_url_max_seconds: int = Field(604800, ge=1, le=604800)
    stale_upload_hours: float = Field(24, gt=0)
    s3_events_token: str | None = None
    jobs_enabled: bool = True
    # Payments: every provider is optional; one without its keys is reported unavailable.
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    razorpay_key_id: str | None = None
    razorpay_secret: str | None = None
    razorpay_webhook_secret: str | None = None
    razorpay_api_base: str | None = None
    crypto_eth_address: str | None = None
    crypto_usdc_address: str | None = None
    crypto_btc_address: str | None = None
    coinbase_commerce_webhook_secret: str | None = None
    btcpay_webhook_secret: str | None = None
    billing_grace_days: int = Field(7, ge=0, le=365)
    billing_renewal_notice_days: int = Field(3, ge=0, le=60)
    checkout_success_url: str | None = None
    checkout_cancel_url: str | None = None
    provider_timeout_seconds: float = Field(20.0, gt=0)
    # Email (the mail outbox). No SMTP_HOST: messages are written to the log and kept in the outbox.
    smtp_host: str | None = None
    smtp_port: int | None = Field(None, ge=1, le=65535)  # default: 587 (starttls), 465 (tls), 25 (none)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_ca_file: Path | None = None  # a CA bundle to trust instead of the system's (a private relay)
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    email_from: str = "Pockity <pockity@localhost>"
    product_name: str = "Pockity"
    console_url: str | None = None  # the console's address in emails; default: the public base URL
    # Accounts: until an address is verified, keys and storage answer 403 email_not_verified. Default: on in
    # production, off otherwise.
    require_email_verification: bool | None = None
    # The console sends files at least this large straight to storage, in parts (the direct-upload API: the
    # quota is reserved before a byte is sent). "auto": with the local backend (same origin); with S3 only when
    # "on", after the bucket's CORS lets the console's origin PUT parts and read their ETag (see the README).
    console_direct_uploads: Literal["auto", "on", "off"] = "auto"
    console_direct_upload_min_bytes: int = Field(64 * 1024 * 1024, ge=5 * 1024 * 1024)
    console_direct_part_bytes: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    require_admin_2fa: bool = False  # admins must enable two-factor sign-in before admin routes answer them
    email_token_minutes: int = Field(24 * 60, ge=5, le=7 * 24 * 60)  # verification and email-change links
    password_reset_minutes: int = Field(60, ge=5, le=24 * 60)

    @field_validator("s3_api_tls_cert", "s3_api_tls_key", "smtp_host", "smtp_ca_file", "smtp_port", mode="before")
    @classmethod
    def _unset_if_empty(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("data_dir", "local_storage_dir", "s3_api_tls_cert", "s3_api_tls_key", "smtp_ca_file", mode="after")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        return v.expanduser().resolve() if v is not None else None

    @property
    def is_development(self) -> bool:
        return self.environment != "production"

    @cached_property
    def async_database_url(self) -> str:
        return normalise_database_url(self.database_url or f"sqlite:///{self.data_dir / 'pockity.db'}")

    @property
    def storage_dir(self) -> Path:
        return self.local_storage_dir or self.data_dir / "storage"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://localhost:{self.port}").rstrip("/")

    @property
    def console_base_url(self) -> str:
        return (self.console_url or self.base_url).rstrip("/")

    @property
    def console_sends_direct(self) -> bool:
        if self.console_direct_uploads == "auto":
            return self.storage_backend == "local"
        return self.console_direct_uploads == "on"

    @property
    def storage_origin(self) -> str | None:
        """The origin of the S3 endpoint browsers send parts to (None: the local backend, this origin)."""
        if self.storage_backend != "s3" or not self.s3_endpoint_url:
            return None
        parts = urlsplit(self.s3_endpoint_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def email_verification_required(self) -> bool:
        if self.require_email_verification is None:
            return self.environment == "production"
        return self.require_email_verification

    @property
    def smtp_effective_port(self) -> int:
        return self.smtp_port or {"starttls": 587, "tls": 465, "none": 25}[self.smtp_security]


def normalise_database_url(url: str) -> str:
    """Accept the seed's plain `postgresql://` and `sqlite:///` URLs and pick the async drivers."""
    for plain in ("postgres://", "postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://"):
        if url.startswith(plain):
            url = "postgresql+asyncpg://" + url[len(plain) :]
            break
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        url = "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith("postgresql+asyncpg://") and "sslmode=" in url:
        # libpq spells it sslmode, asyncpg spells it ssl.
        url = url.replace("sslmode=", "ssl=")
    return url


def _read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """Read a generated secret from the data folder, creating it once (safe against racing workers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if value:
            return value
        raise ConfigError(f"{path} is empty; delete it to generate a new secret") from None
    with os.fdopen(fd, "w") as f:
        value = make()
        f.write(value + "\n")
    return value


def resolve_secrets(settings: Settings) -> Settings:
    """Fill in generated secrets for the embedded default; refuse missing ones in production."""
    updates: dict[str, str] = {}
    secrets_dir = settings.data_dir / "secrets"
    if is_placeholder_secret(settings.jwt_secret):
        if not settings.is_development:
            raise ConfigError(
                "JWT_SECRET is missing or a placeholder. Set it to a random value of at least "
                f"{_MIN_SECRET_LENGTH} characters, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
            )
        if settings.jwt_secret:
            log.warning("JWT_SECRET looks like a placeholder; using a generated secret instead")
        updates["jwt_secret"] = _read_or_create_secret(secrets_dir / "jwt_secret", lambda: secrets.token_urlsafe(48))
    if not settings.key_encryption_key:
        if not settings.is_development:
            raise ConfigError("KEY_ENCRYPTION_KEY is missing: set it to base64 of 32 random bytes.")
        updates["key_encryption_key"] = _read_or_create_secret(
            secrets_dir / "key_encryption_key", lambda: base64.b64encode(secrets.token_bytes(32)).decode()
        )
        old_file = secrets_dir / "key_encryption_keys_old"
        if old_file.exists() and not settings.key_encryption_keys_old:
            # Keys retired by `pockity rotate-encryption-key`, still needed to open older rows.
            updates["key_encryption_keys_old"] = ",".join(old_file.read_text().split())
    resolved = settings.model_copy(update=updates) if updates else settings
    _check_kek(resolved.key_encryption_key or "")
    return resolved


def _check_kek(value: str) -> None:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError("KEY_ENCRYPTION_KEY must be base64 of exactly 32 bytes.")


def _check_s3_tls(settings: Settings) -> None:
    if (settings.s3_api_tls_cert is None) != (settings.s3_api_tls_key is None):
        raise ConfigError(
            "S3_API_TLS_CERT and S3_API_TLS_KEY go together: set both (the certificate chain and its private key, "
            "PEM files) for an HTTPS S3 listener, or neither for plain HTTP."
        )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment and resolve generated secrets."""
    settings = resolve_secrets(Settings(**overrides))  # type: ignore[arg-type]
    _check_s3_tls(settings)
    return settings
