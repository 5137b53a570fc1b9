"""The `pockity` command: serve, worker, migrate, create-admin, reconcile, rotate-encryption-key."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pockity.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from pockity.serving import ListenerTls

app = typer.Typer(help="Pockity: multi-tenant, quota-controlled S3 storage.", no_args_is_help=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def _migrate(settings: Settings) -> None:
    from pockity.migrate import upgrade

    upgrade(settings.async_database_url)


async def _ensure_admin(settings: Settings, email: str, password: str, source: str) -> str:
    from pockity.audit.service import Actor
    from pockity.db import create_database
    from pockity.users.service import ensure_admin

    db = create_database(settings.async_database_url, pool_size=1)
    try:
        async with db.sessions() as session, session.begin():
            user, outcome = await ensure_admin(
                session,
                email=email,
                password=password,
                bcrypt_rounds=settings.bcrypt_rounds,
                actor=Actor.system(source),
            )
            return f"{user.email}: {outcome}"
    finally:
        await db.dispose()


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    settings = _settings()
    _migrate(settings)
    typer.echo(f"database migrated ({settings.async_database_url.split('://')[0]})")


@app.command("create-admin")
def create_admin(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create an administrator, or promote the existing account with this email."""
    from pockity.errors import PockityError

    settings = _settings()
    _migrate(settings)
    try:
        typer.echo(asyncio.run(_ensure_admin(settings, email, password, "cli")))
    except PockityError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(1) from None


def _s3_listener_tls(settings: Settings) -> ListenerTls | None:
    """The S3 listener's TLS files, checked here once (each worker process loads its own context)."""
    from pockity.serving import ListenerTls

    if not (settings.s3_api_port and settings.s3_api_tls_cert and settings.s3_api_tls_key):
        return None
    tls = ListenerTls(settings.s3_api_port, settings.s3_api_tls_cert, settings.s3_api_tls_key)
    try:
        tls.context()
    except OSError as exc:  # ssl.SSLError included: not PEM, or a key that is not the certificate's
        typer.secho(f"configuration error: S3_API_TLS_CERT/S3_API_TLS_KEY cannot be used: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    return tls


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int | None, typer.Option(help="Port (default: PORT or 8080)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate")] = True,
) -> None:
    """Migrate, create the admin from ADMIN_EMAIL/ADMIN_PASSWORD if set, and serve the API."""
    import uvicorn

    from pockity.serving import DrainingServer, ServingConfig

    settings = _settings()
    tls = _s3_listener_tls(settings)
    if migrate_first:
        # In a child process: Alembic and the migration scripts would otherwise stay in the server's memory.
        if subprocess.run([sys.executable, "-m", "pockity.cli", "migrate"], check=False).returncode != 0:
            typer.secho("database migration failed; not serving", fg="red", err=True)
            raise typer.Exit(1)
    if settings.admin_email and settings.admin_password:
        typer.echo(asyncio.run(_ensure_admin(settings, settings.admin_email, settings.admin_password, "env")))
    port = port or settings.port
    # Workers re-read settings; generated secrets are already on disk, so they all agree.
    shown = "localhost" if host in ("0.0.0.0", "::") else host  # noqa: S104
    typer.echo(
        f"Pockity {settings.environment} serving on http://{shown}:{port}  (API docs: http://{shown}:{port}/docs)"
    )
    sys.stdout.flush()
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting 0 tells supervisors it went as planned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    options: dict[str, Any] = dict(
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # httptools, except that SIGTERM gives a connection whose request is arriving the time to be served
        # instead of resetting it (pockity/serving.py): no failed request during a rolling restart.
        http="pockity.serving:DrainingHttpToolsProtocol",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        # uvicorn would otherwise trust X-Forwarded-* from 127.0.0.1 (or its own FORWARDED_ALLOW_IPS variable).
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips.strip() or None,
    )
    s3_port = settings.s3_api_port
    config = ServingConfig("pockity.app:create_served_app", listener_tls=tls, **options)
    # The REST listener and, if S3_API_PORT is set, the S3 API's: one app serves both (app.ListenerRouter).
    sockets = [config.bind_socket()]
    if s3_port:
        if s3_port == port:
            typer.secho(f"S3_API_PORT ({s3_port}) must differ from the API port", fg="red", err=True)
            raise typer.Exit(2)
        sockets.append(uvicorn.Config("pockity.app:create_served_app", **{**options, "port": s3_port}).bind_socket())
        scheme = "https" if tls else "http"
        typer.echo(f"S3 API on {scheme}://{shown}:{s3_port}  (bucket '{settings.s3_api_bucket}', path-style)")
        sys.stdout.flush()
    if workers > 1:  # uvicorn's own process manager: each worker drains its connections, but not the queue
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=sockets).run()
        return
    server = DrainingServer(config)
    server.run(sockets=sockets)
    if not server.started:
        raise typer.Exit(3)  # uvicorn's STARTUP_FAILURE


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Run the jobs that are due, then exit")] = False,
) -> None:
    """Run the periodic jobs without serving HTTP (`pockity serve` runs them too unless JOBS_ENABLED=false)."""
    settings = _settings()
    _migrate(settings)
    asyncio.run(_work(settings, once))


async def _work(settings: Settings, once: bool) -> None:
    from pockity.app import all_jobs, build_backend
    from pockity.db import create_database
    from pockity.kit.jobs import JobContext, JobRunner

    db = create_database(settings.async_database_url, pool_size=2)
    storage = build_backend(settings)
    await storage.start()
    runner = JobRunner(JobContext(db=db, storage=storage, settings=settings), all_jobs())
    try:
        if once:
            ran = await runner.run_due()
            typer.echo(f"ran: {', '.join(ran) or 'nothing due'}")
        else:
            typer.echo(f"worker {runner.worker_id} running {len(runner.jobs)} job(s)")
            await runner.run_forever()
    finally:
        await storage.close()
        await db.dispose()


@app.command("reconcile")
def reconcile_command(
    user: Annotated[str | None, typer.Option("--user", help="Only this user id")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count drift, change nothing")] = False,
) -> None:
    """Make the database agree with the bucket (adopt, remove, correct; recount usage) and print the report."""
    settings = _settings()
    _migrate(settings)
    report = asyncio.run(_reconcile(settings, user, dry_run))
    typer.echo(
        f"reconciliation {report.id} {report.status}: {report.objects_seen} objects seen, {report.adopted} adopted, "
        f"{report.removed} removed, {report.corrected} corrected{' (dry run)' if report.dry_run else ''}"
    )
    for user_id, drift in sorted(report.drift.items()):
        typer.echo(f"  {user_id}: {drift}")
    if report.status != "DONE":
        typer.secho(f"error: {report.error}", fg="red", err=True)
        raise typer.Exit(1)


async def _reconcile(settings: Settings, user: str | None, dry_run: bool) -> Any:
    from pockity.app import build_backend
    from pockity.audit.service import Actor
    from pockity.db import create_database
    from pockity.storage.reconcile import reconcile

    db = create_database(settings.async_database_url, pool_size=4)
    storage = build_backend(settings)
    await storage.start()
    try:
        return await reconcile(db, storage, user_id=user, dry_run=dry_run, trigger="cli", actor=Actor.system("cli"))
    finally:
        await storage.close()
        await db.dispose()


@app.command("rotate-encryption-key")
def rotate_encryption_key() -> None:
    """Re-seal every API key secret and two-factor secret under the current KEY_ENCRYPTION_KEY.

    With the embedded default (no KEY_ENCRYPTION_KEY in the environment) a new key is generated in the
    data folder first and the old one kept for reading. In production, set KEY_ENCRYPTION_KEY to the
    new key and KEY_ENCRYPTION_KEYS_OLD to the previous one(s), run this, then drop the old ones.
    """
    settings = _settings()
    _migrate(settings)
    if not os.environ.get("KEY_ENCRYPTION_KEY") and settings.is_development:
        settings = _rotate_generated_kek(settings)
    count = asyncio.run(_reseal(settings))
    typer.echo(f"re-sealed {count[0]} API key secret(s) and {count[1]} two-factor secret(s) under the current key")


def _rotate_generated_kek(settings: Settings) -> Settings:
    secrets_dir = settings.data_dir / "secrets"
    current = (secrets_dir / "key_encryption_key").read_text().strip()
    old_file = secrets_dir / "key_encryption_keys_old"
    old = [v for v in (old_file.read_text().split() if old_file.exists() else []) if v]
    new = base64.b64encode(secrets.token_bytes(32)).decode()
    old_file.write_text("\n".join([*old, current]) + "\n")
    os.chmod(old_file, 0o600)
    (secrets_dir / "key_encryption_key").write_text(new + "\n")
    return load_settings()


async def _reseal(settings: Settings) -> tuple[int, int]:
    from pockity.accounts import two_factor
    from pockity.apikeys.service import reseal_all
    from pockity.db import create_database
    from pockity.kit.crypto import Keyring

    keyring = Keyring.from_config(settings.key_encryption_key or "", settings.key_encryption_keys_old)
    db = create_database(settings.async_database_url, pool_size=1)
    try:
        async with db.sessions() as session, session.begin():
            return await reseal_all(session, keyring), await two_factor.reseal_all(session, keyring)
    finally:
        await db.dispose()


if __name__ == "__main__":
    app()
