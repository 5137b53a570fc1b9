"""Sending over SMTP with aiosmtplib — the only module that imports it. Its failures are translated here into
`TemporaryFailure` (4xx answers, connection and timeout errors: try again later) and `PermanentFailure` (5xx
answers: this message will never be accepted)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Literal

import aiosmtplib


class DeliveryFailure(Exception):
    """An attempt that did not deliver; the message is safe to show an admin (no credentials)."""


class TemporaryFailure(DeliveryFailure):
    pass


class PermanentFailure(DeliveryFailure):
    pass


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: Literal["starttls", "tls", "none"]
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    timeout: float = 30.0


def _translate(exc: Exception) -> DeliveryFailure:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return (PermanentFailure if codes and all(c >= 500 for c in codes) else TemporaryFailure)(text)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{exc.code} {exc.message}"
        # A refused login is the relay's configuration, not the message's fault: retried until fixed.
        permanent = exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPAuthenticationError)
        return (PermanentFailure if permanent else TemporaryFailure)(text)
    return TemporaryFailure(f"{type(exc).__name__}: {exc}")


class SmtpConnection:
    """One connection to the relay for a batch of messages, reopened after a failed attempt."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.security == "none":
            return None
        return ssl.create_default_context(cafile=str(self.config.ca_file) if self.config.ca_file else None)

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            client = aiosmtplib.SMTP(
                hostname=self.config.host,
                port=self.config.port,
                username=self.config.username,
                password=self.config.password,
                use_tls=self.config.security == "tls",
                start_tls=self.config.security == "starttls",
                tls_context=self._tls_context(),
                timeout=self.config.timeout,
            )
            await client.connect()
            self._client = client
        return self._client

    async def send(self, message: EmailMessage) -> None:
        """Deliver one message to the relay, or raise a DeliveryFailure."""
        try:
            client = await self._connected()
            await client.send_message(message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self.close()  # after a refusal the session's state is unknown: start the next one afresh
            raise _translate(exc) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    async def __aenter__(self) -> SmtpConnection:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
