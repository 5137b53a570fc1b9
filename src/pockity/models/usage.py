from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base, UTCDateTime, created_at_column, id_column


class UsageDay(Base):
    """One user's usage on one UTC day: the last sample's bytes and objects, and the day's byte-seconds.

    Written only by the sampling job, with one upsert per user and day (see usage/repository.py).
    BigInteger byte-seconds hold a whole day of up to ~97 TiB per user (2**63 / 86400 bytes).
    """

    __tablename__ = "usage_days"
    __table_args__ = (Index("ix_usage_days_day", "day"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    bytes_used: Mapped[int] = mapped_column(BigInteger, nullable=False)
    object_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    byte_seconds: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class UsageState(Base):
    """Per user: where sampling got to, and the alert level of each metric (0, 80 or 100 percent).

    The sampler advances `last_sampled_at` with a conditional UPDATE (`WHERE last_sampled_at = <read>`), so
    an interval is integrated by one process only, and the levels change with it (an alert fires once).
    """

    __tablename__ = "usage_states"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_sampled_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    bytes_level: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    objects_level: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Notification(Base):
    """A message to one user (usage alerts for now); read by the API, delivered by email later."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id_id", "user_id", "id"),)

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = created_at_column()
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
