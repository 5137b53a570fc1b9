from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from pockity.models.base import Base, UTCDateTime, created_at_column, id_column, updated_at_column


class Role(enum.StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = id_column()
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(100), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default=Role.USER.value)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # The tier whose limits are the user's quota (None: no storage until an admin grants a tier).
    tier_id: Mapped[str | None] = mapped_column(ForeignKey("tiers.id", ondelete="RESTRICT"))
    # Set while a subscription is unpaid past its period ("past_due"): uploads are refused, reads allowed.
    billing_hold: Mapped[str | None] = mapped_column(String(20))
    # Proven by following the link of a verification email (None: not yet).
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Two-factor sign-in (TOTP): the secret sealed with the keyring (set at setup, used once enabled).
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_kek_id: Mapped[str | None] = mapped_column(String(16))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last time step whose code was accepted: a code is good once (RFC 6238 section 5.2).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Email me when my account is signed in from a device it has not been signed in from before.
    notify_new_sign_in: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def two_factor_enabled(self) -> bool:
        return self.totp_enabled_at is not None
