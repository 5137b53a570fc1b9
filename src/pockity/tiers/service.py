"""The tier catalogue: what is for sale, and the admin's changes to it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.errors import Conflict, NotFound
from pockity.models import Tier
from pockity.tiers import repository
from pockity.tiers.schemas import TierAdminOut, TierCreateIn, TierOut, TierUpdateIn, gb_to_bytes, mb_to_bytes


class TierNotFound(NotFound):
    code, message = "tier_not_found", "Tier not found."


class TierNameTaken(Conflict):
    code, message = "tier_name_taken", "A tier with this name already exists."


def snapshot(tier: Tier) -> dict[str, Any]:
    """The audited view of a tier (before/after)."""
    fields = (
        "name",
        "storage_bytes",
        "max_objects",
        "max_object_size_bytes",
        "price_cents",
        "currency",
        "billing_period",
        "trial_days",
        "requests_per_second",
        "request_burst",
        "max_concurrent_uploads",
        "is_public",
        "is_default",
        "is_archived",
    )
    return {f: getattr(tier, f) for f in fields}


async def get_tier(session: AsyncSession, tier_id: str) -> Tier:
    """Any tier by id (admin view)."""
    tier = await repository.get(session, tier_id)
    if tier is None:
        raise TierNotFound()
    return tier


async def list_public(session: AsyncSession) -> Sequence[Tier]:
    """Public, non-archived tiers, cheapest first."""
    return await repository.list_public(session)


async def list_all(session: AsyncSession) -> list[TierAdminOut]:
    """Every tier with how many users are on it."""
    return [
        TierAdminOut(
            **TierOut.model_validate(tier).model_dump(exclude={"storage_gb", "max_object_size_mb"}), user_count=n
        )
        for tier, n in await repository.list_all_with_user_counts(session)
    ]


# Fields where an explicit null means something (no per-object limit; the server's default limits).
_NULLABLE = frozenset({"max_object_size_bytes", "requests_per_second", "request_burst", "max_concurrent_uploads"})


def _values(data: TierCreateIn | TierUpdateIn) -> dict[str, Any]:
    values = data.model_dump(exclude_unset=True)
    if "storage_gb" in values:
        gb = values.pop("storage_gb")
        if gb is not None:
            values["storage_bytes"] = gb_to_bytes(gb)
    if "max_object_size_mb" in values:
        mb = values.pop("max_object_size_mb")
        values["max_object_size_bytes"] = mb_to_bytes(mb) if mb is not None else None
    return {k: v for k, v in values.items() if v is not None or k in _NULLABLE}


async def _save(session: AsyncSession, tier: Tier) -> None:
    make_default = tier.is_default
    # Take the flag from the previous default first: the unique index allows one at a time (and
    # begin_nested() flushes pending rows, so the flag is lowered before it).
    tier.is_default = False
    try:
        async with session.begin_nested():
            await session.flush()
            if make_default:
                await repository.clear_default(session, except_id=tier.id)
                tier.is_default = True
                await session.flush()
    except IntegrityError:
        raise TierNameTaken() from None


async def create_tier(session: AsyncSession, data: TierCreateIn, actor: Actor) -> Tier:
    """Add a tier; making it the default takes the flag from the previous default."""
    tier = Tier(**_values(data))
    repository.add(session, tier)
    await _save(session, tier)
    record(session, actor, "tier.created", target_type="tier", target_id=tier.id, details={"after": snapshot(tier)})
    return tier


async def update_tier(session: AsyncSession, tier_id: str, data: TierUpdateIn, actor: Actor) -> Tier:
    """Change a tier; users on it get the new limits at once (their quota reads the tier)."""
    tier = await get_tier(session, tier_id)
    before = snapshot(tier)
    values = _values(data)
    if values.get("is_archived") and (values.get("is_default") or (tier.is_default and "is_default" not in values)):
        values["is_default"] = False  # an archived tier cannot be the one new users start on
    for key, value in values.items():
        setattr(tier, key, value)
    await _save(session, tier)
    record(
        session,
        actor,
        "tier.updated",
        target_type="tier",
        target_id=tier.id,
        details={"before": before, "after": snapshot(tier)},
    )
    return tier


async def archive_tier(session: AsyncSession, tier_id: str, actor: Actor) -> Tier:
    """Archive (never delete): invoices and history keep pointing at it; its users keep it until they change."""
    tier = await get_tier(session, tier_id)
    before = snapshot(tier)
    tier.is_archived, tier.is_default = True, False
    await session.flush()
    record(
        session,
        actor,
        "tier.archived",
        target_type="tier",
        target_id=tier.id,
        details={"before": before, "after": snapshot(tier)},
    )
    return tier
