from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from pockity.models import Tier

_FIELDS = (
    "name",
    "storage_bytes",
    "max_objects",
    "price_cents",
    "trial_days",
    "is_public",
    "is_default",
    "is_archived",
)


@pytest.fixture(autouse=True)
async def restore_tiers(app: FastAPI) -> AsyncIterator[None]:
    """Tiers are seed data that outlive a test: put the seeded ones back, retire the ones a test made."""
    async with app.state.db.sessions() as s:
        saved: dict[str, dict[str, Any]] = {
            t.id: {f: getattr(t, f) for f in _FIELDS} for t in (await s.scalars(select(Tier))).all()
        }
    yield
    async with app.state.db.sessions() as s, s.begin():
        await s.execute(update(Tier).where(Tier.id.not_in(list(saved))).values(is_default=False, is_archived=True))
        for tier_id, values in sorted(saved.items(), key=lambda kv: kv[1]["is_default"]):
            await s.execute(update(Tier).where(Tier.id == tier_id).values(**values))
