"""The mail job: send what the outbox holds (mail/delivery.py), with the SMTP settings read here."""

from __future__ import annotations

from datetime import timedelta

from pockity.config import Settings
from pockity.kit.jobs import Job, JobContext
from pockity.mail.delivery import DeliveryResult, send_due
from pockity.mail.links import action_key, unsubscribe_key
from pockity.mail.rendering import Identity
from pockity.mail.smtp import SmtpConfig


def smtp_config(settings: Settings) -> SmtpConfig | None:
    """The relay to send through; None (no SMTP_HOST) means messages are logged and kept."""
    if not settings.smtp_host:
        return None
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_effective_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password,
        ca_file=settings.smtp_ca_file,
        timeout=settings.smtp_timeout_seconds,
    )


def identity(settings: Settings) -> Identity:
    return Identity(
        product_name=settings.product_name,
        console_url=settings.console_base_url,
        email_from=settings.email_from,
        api_url=settings.base_url,
        unsubscribe_key=unsubscribe_key(settings.jwt_secret) if settings.jwt_secret else None,
        action_key=action_key(settings.jwt_secret) if settings.jwt_secret else None,
    )


async def send_mail(ctx: JobContext) -> DeliveryResult:
    """Send the due messages of the outbox (runs every 15 s)."""
    return await send_due(ctx.db, smtp_config(ctx.settings), identity(ctx.settings))


# The job runner claims a run every 15 s; within a run the outbox's own claims keep processes apart.
JOBS = [Job("mail.send", timedelta(seconds=15), send_mail, lease=timedelta(minutes=5))]
