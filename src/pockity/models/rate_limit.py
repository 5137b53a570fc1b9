from __future__ import annotations

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base


class RateWindow(Base):
    """Requests handed out to server processes for one subject (`user:{id}`, `key:{id}`) in one fixed window.

    Processes take leases of several requests at once (`count = count + n`), so this row changes once per
    lease, not once per request; see pockity/ratelimit/limiter.py.
    """

    __tablename__ = "rate_windows"
    __table_args__ = (Index("ix_rate_windows_window_start", "window_start"),)

    subject: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)
