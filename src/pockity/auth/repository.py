"""SQL for authentication: one-statement principal lookups and the shared login throttle."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, Table, bindparam, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased

from pockity.db import HotReads, dialect_insert
from pockity.models import AuthSession, LoginThrottle, Tier, User

USER_COLUMNS = (
    User.id,
    User.email,
    User.name,
    User.role,
    User.is_active,
    User.created_at,
    User.email_verified_at.is_not(None).label("email_verified"),
    User.totp_enabled_at.is_not(None).label("two_factor"),
)
UserRow = Row[str, str, str, str, bool, datetime, bool, bool, int | None, int | None]
# + the password hash, and the session's revocation time and last sighting
TokenUserRow = Row[
    str, str, str, str, bool, datetime, bool, bool, int | None, int | None, str, datetime | None, datetime
]

# The user's tier's request-rate limits come with the user, in the same query (a primary-key join).
USER_TIER = aliased(Tier, name="user_tier")
USER_RATE_COLUMNS = (USER_TIER.requests_per_second.label("tier_rps"), USER_TIER.request_burst.label("tier_burst"))

# Built once: constructing a statement per request (and its cache key) costs more than running it.
# The session must be the user's own: a token naming another user's session id finds no row.
_USER_BY_SESSION = (
    select(
        *USER_COLUMNS,
        *USER_RATE_COLUMNS,
        User.password_hash,
        AuthSession.revoked_at.label("session_revoked_at"),
        AuthSession.last_seen_at.label("session_last_seen_at"),
    )
    .join(AuthSession, (AuthSession.user_id == User.id) & (AuthSession.id == bindparam("session_id")))
    .outerjoin(USER_TIER, USER_TIER.id == User.tier_id)
    .where(User.id == bindparam("user_id"))
)


async def user_row(hot: HotReads, user_id: str, session_id: str) -> TokenUserRow | None:
    """The fields a principal needs, the password hash its token is checked against and its session's state,
    in one AUTOCOMMIT round trip."""
    row: TokenUserRow | None = await hot.first(_USER_BY_SESSION, {"user_id": user_id, "session_id": session_id})
    return row


def add_session(session: AsyncSession, row: AuthSession) -> None:
    session.add(row)


async def touch_session(
    session: AsyncSession, session_id: str, now: datetime, ip: str | None, before: datetime
) -> None:
    """Move a session's last sighting forward (only when it is older than `before`: one write per interval)."""
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.last_seen_at < before)
        .values(last_seen_at=now, ip=ip)
    )


async def list_sessions(session: AsyncSession, user_id: str, now: datetime) -> list[AuthSession]:
    """The user's sessions still open (not signed out, not expired), most recently seen first."""
    stmt = (
        select(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None), AuthSession.expires_at > now)
        .order_by(AuthSession.last_seen_at.desc(), AuthSession.id.desc())
    )
    return list((await session.execute(stmt)).scalars())


async def revoke_sessions(
    session: AsyncSession, user_id: str, now: datetime, *, only: str | None = None, keep: str | None = None
) -> int:
    """Sign out the user's open sessions (just `only`, or all but `keep`); how many were open."""
    stmt = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if only is not None:
        stmt = stmt.where(AuthSession.id == only)
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    result = await session.execute(stmt.values(revoked_at=now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def known_device(session: AsyncSession, user_id: str, user_agent: str | None, except_id: str) -> bool:
    """Has this user signed in before from a browser or client with this User-Agent?"""
    stmt = select(AuthSession.id).where(
        AuthSession.user_id == user_id, AuthSession.user_agent == user_agent, AuthSession.id != except_id
    )
    return (await session.execute(stmt.limit(1))).first() is not None


async def delete_sessions_ended_before(session: AsyncSession, before: datetime) -> int:
    """Forget sessions that expired or were signed out before `before` (their tokens cannot work anyway)."""
    stmt = delete(AuthSession).where((AuthSession.expires_at < before) | (AuthSession.revoked_at < before))
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def blocked_until(reader: AsyncEngine, keys: list[str]) -> datetime | None:
    async with reader.connect() as conn:
        result = await conn.execute(select(func.max(LoginThrottle.blocked_until)).where(LoginThrottle.key.in_(keys)))
        return result.scalar()


async def count_failure(session: AsyncSession, key: str, now: datetime, window_start: datetime) -> int:
    """Add one failure to `key` (restarting a window that has passed) in one atomic upsert."""
    table = LoginThrottle.__table__
    assert isinstance(table, Table)
    insert = dialect_insert(session)
    stale = table.c.window_started_at < window_start
    stmt = (
        insert(table)
        .values(key=key, failures=1, window_started_at=now, blocked_until=None)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "failures": case((stale, 1), else_=table.c.failures + 1),
                "window_started_at": case((stale, now), else_=table.c.window_started_at),
            },
        )
        .returning(table.c.failures)
    )
    result = await session.execute(stmt)
    return int(result.scalar_one())


async def block(session: AsyncSession, key: str, until: datetime) -> None:
    await session.execute(update(LoginThrottle).where(LoginThrottle.key == key).values(blocked_until=until))


async def clear(session: AsyncSession, key: str) -> None:
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
