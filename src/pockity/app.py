"""create_app(): the lifespan builds the database, key activity tracker and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pockity import __version__, openapi
from pockity.accounts.router import router as accounts_router
from pockity.accounts.service import AccountPolicy
from pockity.admin.router import router as admin_router
from pockity.apikeys.router import router as apikeys_router
from pockity.apikeys.tasks import ActivityTracker
from pockity.auth import tasks as auth_tasks
from pockity.auth.router import router as auth_router
from pockity.auth.service import LoginPolicy
from pockity.billing import tasks as billing_tasks
from pockity.billing.router import router as billing_router
from pockity.config import ConfigError, Settings, load_settings
from pockity.console import routes as console
from pockity.db import Database, create_database
from pockity.errors import error_response, install_error_handlers
from pockity.kit.crypto import Keyring
from pockity.kit.expect_continue import ExpectContinueGuard
from pockity.kit.jobs import Job, JobContext, JobRunner
from pockity.mail import tasks as mail_tasks
from pockity.mail.links import action_key
from pockity.mail.router import admin_router as mail_admin_router
from pockity.mail.router import router as mail_router
from pockity.notifications.router import router as notifications_router
from pockity.observability import RequestContextMiddleware, RequestGuardMiddleware, configure_logging
from pockity.open.health import StorageHealth
from pockity.open.router import router as open_router
from pockity.payments.providers import razorpay_provider, stripe_provider
from pockity.payments.router import router as payments_router
from pockity.payments.router import webhooks as payment_webhooks_router
from pockity.ratelimit import tasks as ratelimit_tasks
from pockity.ratelimit.limiter import CounterStore, Rate, RequestLimiter
from pockity.ratelimit.repository import DatabaseCounters
from pockity.s3api.router import S3App
from pockity.security_headers import SecurityHeadersMiddleware
from pockity.storage import parts, reconcile
from pockity.storage import tasks as storage_tasks
from pockity.storage.backends import SignedEndpoints, StorageBackend, StorageUnavailable
from pockity.storage.backends.local import LocalBackend
from pockity.storage.router import router as storage_router
from pockity.storage.signed_router import router as signed_router
from pockity.storage.uploads import UploadPolicy
from pockity.tier_requests.router import router as tier_requests_router
from pockity.tiers.router import router as tiers_router
from pockity.usage import tasks as usage_tasks
from pockity.usage.router import admin_router as usage_admin_router
from pockity.usage.router import router as usage_router

log = logging.getLogger("pockity")


def _streams_body(method: str, path: str) -> bool:
    """Routes whose request bodies are streamed to storage instead of read into memory."""
    if method == "PUT":
        return path.startswith(("/api/storage/files/", "/api/storage/parts/"))
    return method == "POST" and (
        path in ("/api/storage/upload", "/files/upload") or path.startswith("/api/storage/direct/")
    )


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The usual 503, and the health check's cached `ok` for the storage ends: the next probe checks again."""
    assert isinstance(exc, StorageUnavailable)
    request.app.state.storage_health.mark_down()
    return error_response(exc)


def _login_policy(settings: Settings) -> LoginPolicy:
    assert settings.jwt_secret
    return LoginPolicy(
        max_failures_per_email=settings.login_max_failures_per_email,
        max_failures_per_client=settings.login_max_failures_per_client,
        window_seconds=settings.login_failure_window_seconds,
        lockout_seconds=settings.login_lockout_seconds,
        jwt_secret=settings.jwt_secret,
        jwt_expires_minutes=settings.jwt_expires_minutes,
        bcrypt_rounds=settings.bcrypt_rounds,
    )


def _account_policy(settings: Settings) -> AccountPolicy:
    assert settings.jwt_secret
    return AccountPolicy(
        action_key=action_key(settings.jwt_secret),
        email_token_minutes=settings.email_token_minutes,
        reset_minutes=settings.password_reset_minutes,
        bcrypt_rounds=settings.bcrypt_rounds,
        verification_required=settings.email_verification_required,
    )


def build_backend(settings: Settings) -> StorageBackend:
    """The configured storage backend (the S3 module, and so the AWS SDK, is imported only here)."""
    if settings.storage_backend == "s3":
        from pockity.storage.backends.s3 import S3Backend

        if not (settings.aws_access_key_id and settings.aws_secret_access_key):
            raise ConfigError("STORAGE_BACKEND=s3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
        return S3Backend(
            bucket=settings.s3_bucket,
            region=settings.aws_region,
            endpoint_url=settings.s3_endpoint_url,
            access_key=settings.aws_access_key_id,
            secret_key=settings.aws_secret_access_key,
            create_bucket=settings.s3_create_bucket,
            part_size=settings.s3_part_size,
            max_pool_connections=max(10, settings.max_concurrent_uploads * 2),
        )
    assert settings.jwt_secret
    signing_key = hmac.new(settings.jwt_secret.encode(), b"pockity-local-storage-urls", hashlib.sha256).digest()
    return LocalBackend(settings.storage_dir, settings.base_url, signing_key)


def _upload_policy(settings: Settings) -> UploadPolicy:
    return UploadPolicy(
        server_max_bytes=settings.max_upload_bytes,
        reservation_ttl=timedelta(seconds=settings.upload_reservation_ttl_seconds),
        reserve_step=settings.upload_reserve_step_bytes,
        default_concurrent_uploads=settings.rate_limit_concurrent_uploads if settings.rate_limit_enabled else None,
    )


def build_rate_counters(settings: Settings, db: Database) -> CounterStore:
    """Where the shared request counts live: Redis when REDIS_URL is set (imported only then), else the database."""
    if settings.redis_url:
        from pockity.ratelimit.redis_store import RedisCounters

        return RedisCounters(settings.redis_url, settings.redis_key_prefix)
    return DatabaseCounters(db.reader)


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    db = create_database(
        settings.async_database_url, pool_size=settings.database_pool_size, max_overflow=settings.database_max_overflow
    )
    app.state.db = db
    counters = build_rate_counters(settings, db) if settings.rate_limit_enabled else None
    if counters is not None:
        app.state.limiter = RequestLimiter(counters, lease_max=settings.rate_limit_lease_max)
    # A configured provider's SDK is imported now, not inside the first payment request.
    if settings.stripe_secret_key or settings.stripe_webhook_secret:
        stripe_provider.load_sdk()
    if razorpay_provider.configured(settings) or settings.razorpay_webhook_secret:
        razorpay_provider.load_sdk()
    storage: StorageBackend = app.state.storage
    try:
        await storage.start()
    except StorageUnavailable:
        # Serve anyway: reads of metadata work, and /api/open/health reports the storage as down.
        log.exception("storage backend unavailable at start")
    tracker: ActivityTracker = app.state.key_activity
    flusher = asyncio.create_task(tracker.run(db, settings.api_key_activity_flush_seconds))
    runner = JobRunner(JobContext(db=db, storage=storage, settings=settings), all_jobs())
    app.state.jobs = runner
    jobs = asyncio.create_task(runner.run_forever()) if settings.jobs_enabled else None
    log.info("pockity %s started (%s, storage=%s)", __version__, db.engine.dialect.name, settings.storage_backend)
    try:
        yield
    finally:
        await _stop(jobs)
        await _stop(flusher)
        await reconcile.cancel_background()  # an admin-started run is marked cancelled, not left RUNNING
        try:
            await tracker.flush(db)
        except Exception:
            log.exception("could not flush API key activity at shutdown")
        await storage.close()
        if counters is not None:
            await counters.close()
        await db.dispose()


def all_jobs() -> list[Job]:
    """Every domain's periodic jobs, as each domain's `tasks.JOBS` declares them."""
    return [
        *usage_tasks.JOBS,
        *storage_tasks.JOBS,
        *billing_tasks.JOBS,
        *ratelimit_tasks.JOBS,
        *mail_tasks.JOBS,
        *auth_tasks.JOBS,
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; settings default to the environment (plus generated dev secrets)."""
    settings = settings or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = FastAPI(
        title="Pockity",
        version=__version__,
        description="Multi-tenant, quota-controlled S3 storage. Authenticate with a JWT or an API key pair.",
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
        # Pockity has its own metrics and access log (observability.py); FastAPI's native OpenTelemetry would
        # otherwise look up the global tracer, meter and logger providers (and the environment) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.keyring = Keyring.from_config(settings.key_encryption_key or "", settings.key_encryption_keys_old)
    app.state.login_policy = _login_policy(settings)
    app.state.account_policy = _account_policy(settings)
    app.state.key_activity = ActivityTracker()
    app.state.storage = build_backend(settings)
    app.state.upload_policy = _upload_policy(settings)
    app.state.parts_policy = parts.Policy(app.state.upload_policy, timedelta(hours=settings.stale_upload_hours))
    app.state.upload_slots = anyio.Semaphore(settings.max_concurrent_uploads)
    app.state.limiter = None  # built with the database, in the lifespan (None: RATE_LIMIT_ENABLED=false)
    app.state.default_rate = Rate(settings.rate_limit_requests_per_second, settings.rate_limit_burst)
    app.state.storage_health = StorageHealth()
    install_error_handlers(app)
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    app.add_middleware(
        RequestGuardMiddleware,
        limit=settings.max_json_body_bytes,
        streaming=_streams_body,
        name_paths=("/api/storage/",),
    )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestContextMiddleware)
    if isinstance(app.state.storage, SignedEndpoints):
        # Resolved once, here: only a backend that serves its own presigned URLs gets their routes.
        app.state.signed_endpoints = app.state.storage
        app.include_router(signed_router)
    app.add_middleware(ExpectContinueGuard)  # an early answer to `Expect: 100-continue` closes the connection
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: also on the guard's and CORS's own answers
    for router in (
        open_router,
        auth_router,
        accounts_router,
        apikeys_router,
        storage_router,
        tiers_router,
        tier_requests_router,
        billing_router,
        payments_router,
        payment_webhooks_router,
        usage_router,
        notifications_router,
        mail_router,
        usage_admin_router,
        mail_admin_router,
        admin_router,
    ):
        app.include_router(router)
    console.install(app)  # the web console at / (after every exception handler: it wraps them for its pages)
    openapi.install(app, _streams_body)
    return app


class ListenerRouter:
    """One process, two listeners: requests that came in on the S3 API's port go to the S3 app, the rest (and
    the lifespan, which builds the shared state) to the REST app."""

    def __init__(self, main: FastAPI, s3: ASGIApp, s3_port: int) -> None:
        self.main, self.s3, self.s3_port = main, s3, s3_port
        self.state = main.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] == "http" and server is not None and server[1] == self.s3_port:
            await self.s3(scope, receive, send)
        else:
            await self.main(scope, receive, send)


def create_served_app() -> FastAPI | ListenerRouter:
    """What `pockity serve` runs: the REST app, and the S3 API beside it when S3_API_PORT is set."""
    app = create_app()
    port = app.state.settings.s3_api_port
    return ListenerRouter(app, ExpectContinueGuard(S3App(app)), port) if port else app
