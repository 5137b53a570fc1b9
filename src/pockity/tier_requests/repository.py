"""SQL for tier requests; a user's own queries start from `_owned(user_id)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.models import TierRequest


def _owned(user_id: str) -> Select[TierRequest]:
    return select(TierRequest).where(TierRequest.user_id == user_id)


def add(session: AsyncSession, row: TierRequest) -> None:
    session.add(row)


async def list_own_requests(session: AsyncSession, user_id: str) -> Sequence[TierRequest]:
    return (await session.scalars(_owned(user_id).order_by(TierRequest.id.desc()))).all()


async def get_own_request(session: AsyncSession, user_id: str, request_id: str) -> TierRequest | None:
    return (await session.scalars(_owned(user_id).where(TierRequest.id == request_id))).first()


async def get_request(session: AsyncSession, request_id: str) -> TierRequest | None:
    return await session.get(TierRequest, request_id, populate_existing=True)


async def list_requests(
    session: AsyncSession, *, status: str | None, after_id: str | None, limit: int
) -> Sequence[TierRequest]:
    """Admin view, oldest first (a queue)."""
    stmt = select(TierRequest).order_by(TierRequest.id).limit(limit)
    if status:
        stmt = stmt.where(TierRequest.status == status)
    if after_id:
        stmt = stmt.where(TierRequest.id > after_id)
    return (await session.scalars(stmt)).all()


async def transition_request(session: AsyncSession, request_id: str, from_status: str, **values: Any) -> bool:
    """Move a request out of `from_status` exactly once: of two concurrent resolutions one wins."""
    stmt = (
        update(TierRequest)
        .where(TierRequest.id == request_id, TierRequest.status == from_status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def count_with_status(session: AsyncSession, status: str) -> int:
    stmt = select(func.count()).select_from(TierRequest).where(TierRequest.status == status)
    return int((await session.execute(stmt)).scalar_one())
