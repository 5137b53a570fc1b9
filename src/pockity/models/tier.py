from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base, created_at_column, id_column, updated_at_column


class Tier(Base):
    """A storage plan: byte and object quotas, and its price (integer cents)."""

    __tablename__ = "tiers"
    __table_args__ = (
        Index(
            "uq_tiers_one_default",
            "is_default",
            unique=True,
            postgresql_where=text("is_default"),
            sqlite_where=text("is_default = 1"),
        ),
    )

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    storage_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    max_objects: Mapped[int] = mapped_column(BigInteger, nullable=False)
    max_object_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    price_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="USD")
    billing_period: Mapped[str] = mapped_column(String(16), nullable=False, default="monthly")
    trial_days: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Fair sharing (None: the server's defaults): requests per second on average, how many may come at once,
    # and uploads open at the same time; per user, and per API key for keys linked to this tier.
    requests_per_second: Mapped[int | None] = mapped_column(Integer)
    request_burst: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_uploads: Mapped[int | None] = mapped_column(Integer)
    is_public: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_archived: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
