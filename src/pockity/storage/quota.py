"""Which limits apply to a writer: the user's tier, and the tier an API key is linked to."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.auth.schemas import Principal
from pockity.db import Statements
from pockity.errors import PockityError
from pockity.models import Tier
from pockity.tiers import repository as tiers
from pockity.tiers.repository import TierLimits

NO_LIMIT = 2**62


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_objects: int
    max_uploads: int = NO_LIMIT  # uploads open at once (fair sharing)


@dataclass(frozen=True)
class WriterLimits:
    user: Limits
    key: Limits | None
    max_object_size: int
    tier: TierLimits | None


@dataclass
class QuotaScope:
    """One quota an upload is charged to, and what the upload holds of it."""

    scope: str
    limits: Limits
    credit: int  # bytes of the object being replaced that this scope already counts
    new_object: bool
    reserved: int = 0
    objects_reserved: int = 0
    uploads_reserved: int = 0

    @property
    def kind(self) -> str:
        return self.scope.split(":", 1)[0]

    def needed(self, total: int) -> int:
        """Bytes to hold for an object of `total` bytes: replacing counts only the growth."""
        return max(0, total - self.credit)


def _limits(tier: TierLimits | None, default_uploads: int | None) -> Limits:
    # No tier: no storage at all until an admin grants one.
    if tier is None:
        return Limits(0, 0)
    if default_uploads is None:  # fair sharing is off
        return Limits(tier.storage_bytes, tier.max_objects)
    return Limits(tier.storage_bytes, tier.max_objects, tier.max_concurrent_uploads or default_uploads)


async def user_tier(session: AsyncSession, user_id: str) -> Tier | None:
    found = await tiers.for_writer(session, user_id)
    return found.tier if found else None


class SubscriptionPastDue(PockityError):
    status, code, message = (
        402,
        "subscription_past_due",
        ("Uploads are paused until the open invoice is paid; existing files can still be read and deleted."),
    )


async def limits_for(
    session: AsyncSession | Statements, principal: Principal, default_uploads: int | None = None
) -> WriterLimits:
    """The user's tier limits, plus the key's tier when the request came with a tier-linked key (one query).
    A user whose subscription is past due may not write (reads are never blocked by billing).

    Concurrent uploads: the tier's own limit, else `default_uploads`; None turns that limit off (fair sharing
    disabled). A key without a tier is limited only by its user's."""
    key_tier_id = principal.key.tier_id if principal.key is not None else None
    found = await tiers.writer_limits(session, principal.user_id, key_tier_id or None)
    if found is not None and found.billing_hold:
        raise SubscriptionPastDue(details={"hold": found.billing_hold})
    tier = found.tier if found else None
    sizes = [tier.max_object_size_bytes if tier and tier.max_object_size_bytes else NO_LIMIT]
    key_limits = None
    if key_tier_id:
        key_tier = found.key_tier if found else None
        key_limits = _limits(key_tier, default_uploads)
        if key_tier and key_tier.max_object_size_bytes:
            sizes.append(key_tier.max_object_size_bytes)
    return WriterLimits(user=_limits(tier, default_uploads), key=key_limits, max_object_size=min(sizes), tier=tier)
