from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base, UTCDateTime, created_at_column, id_column


class OutboxStatus:
    PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
    SENDING = "sending"  # claimed by a runner until claimed_until; a lapsed claim is taken again
    SENT = "sent"
    FAILED = "failed"  # refused for good (5xx) or out of attempts; last_error says why
    LOGGED = "logged"  # no SMTP server configured: written to the log, kept here (an admin can resend)
    UNSUBSCRIBED = "unsubscribed"  # not sent: the user unsubscribed from its kind


class OutboxMessage(Base):
    """One email, written in the transaction of the event that causes it and sent afterwards by the mail job.

    The subject, bodies and Message-ID are rendered once, when the message is first claimed (rendering needs
    the settings: product name, console link), and kept so that every retry and resend sends the same message.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        Index("ix_outbox_messages_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_outbox_messages_user_id", "user_id"),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    subject: Mapped[str | None] = mapped_column(String(300))
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class MailPreference(Base):
    """A user who asked (through an unsubscribe link) not to be emailed notices of one kind."""

    __tablename__ = "mail_preferences"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    unsubscribed_at: Mapped[datetime] = created_at_column()
