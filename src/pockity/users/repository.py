"""SQL for users."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.models import User


async def get(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.scalars(select(User).where(User.email == email))
    return result.first()


def add(session: AsyncSession, user: User) -> None:
    session.add(user)


async def list_page(
    session: AsyncSession,
    *,
    after_id: str | None,
    limit: int,
    query: str | None = None,
    email_query: str | None = None,
) -> Sequence[User]:
    """`query` matches names (case-insensitively); `email_query`, already normalised, matches stored emails."""
    stmt = select(User).order_by(User.id).limit(limit)
    if after_id:
        stmt = stmt.where(User.id > after_id)
    if query:
        stmt = stmt.where(matching(query, email_query))
    return (await session.scalars(stmt)).all()


def matching(query: str, email_query: str | None) -> ColumnElement[bool]:
    """The admin search: part of the (normalised) email or, case-insensitively, of the name. Also used by
    storage's user list with usage, so both lists find the same people."""
    return or_(
        User.email.contains(email_query or query.lower(), autoescape=True),
        func.lower(User.name).contains(query.lower(), autoescape=True),
    )


async def count_all(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(User))).scalar_one())
