from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base


class RateBucket(Base):
    """The shared token bucket of one subject (`user:{id}`, `key:{id}`), kept as a theoretical arrival time.

    `tat_us` (epoch microseconds) is when the bucket would be full again; a process leasing n requests moves it
    n intervals on, in one statement, and `granted` records how many of the n fitted (see ratelimit/limiter.py).
    A bucket whose `tat_us` is past is full, so such rows can be dropped at any time.
    """

    __tablename__ = "rate_buckets"
    __table_args__ = (Index("ix_rate_buckets_tat_us", "tat_us"),)

    subject: Mapped[str] = mapped_column(String(40), primary_key=True)
    tat_us: Mapped[int] = mapped_column(BigInteger, nullable=False)
    granted: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
