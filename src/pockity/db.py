"""Engine and session factory; one session per request, committed or rolled back once at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import TextClause, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session


def dialect_insert(session: AsyncSession) -> Any:
    """`insert` of the session's dialect: the one with `on_conflict_do_*` (PostgreSQL and SQLite spell it alike)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


class ReadOnlyViolation(RuntimeError):
    """A write through a read-only session (a programming error: the route should use SessionDep)."""


class _ReadOnlySyncSession(Session):
    pass


@event.listens_for(_ReadOnlySyncSession, "before_flush")
def _refuse_flush(*_: Any) -> None:
    raise ReadOnlyViolation("This session is read-only (AUTOCOMMIT); use the request's unit of work to write.")


@event.listens_for(_ReadOnlySyncSession, "do_orm_execute")
def _refuse_dml(state: Any) -> None:
    statement = state.statement
    if isinstance(statement, TextClause):
        writes = statement.text.lstrip().split(None, 1)[0].upper() not in ("SELECT", "WITH", "SHOW", "VALUES")
    else:
        writes = not state.is_select
    if writes:
        raise ReadOnlyViolation("This session is read-only (AUTOCOMMIT); use the request's unit of work to write.")


class ReadOnlySession(AsyncSession):
    """Every statement autocommits on its own, so a write here would be committed at once, alone: refused
    (flushes and non-SELECT statements raise ReadOnlyViolation)."""

    sync_session_class = _ReadOnlySyncSession


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Same pool, AUTOCOMMIT: a one-statement read costs one round trip instead of BEGIN/SELECT/ROLLBACK.
    reader: AsyncEngine
    # ORM sessions on `reader`, for read-only requests: no BEGIN/COMMIT round trips; flushing is refused.
    read_sessions: async_sessionmaker[ReadOnlySession]

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front (waiting on busy_timeout), so a transaction
        # that reads and then writes can never fail halfway with "database is locked".
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # (the reader engine autocommits: no BEGIN at all)


def create_database(url: str, *, pool_size: int = 25, max_overflow: int = 0, echo: bool = False) -> Database:
    """Build the engine for a PostgreSQL (asyncpg) or SQLite (aiosqlite) URL."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 10}
    else:
        # Overflow connections are closed when returned; under steady load a large overflow means opening
        # a PostgreSQL connection per burst, so the pool itself is sized for the concurrency instead.
        kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    read_sessions = async_sessionmaker(reader, expire_on_commit=False, autoflush=False, class_=ReadOnlySession)
    return Database(engine=engine, sessions=sessions, reader=reader, read_sessions=read_sessions)


async def ping(db: Database) -> None:
    async with db.reader.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


@asynccontextmanager
async def unit_of_work(db: Database) -> AsyncIterator[AsyncSession]:
    """A unit of work outside a request's own (jobs, and uploads that commit before streaming)."""
    async with db.sessions() as session, session.begin():
        yield session


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commit once after the handler, roll back on any error."""
    db: Database = request.app.state.db
    async with db.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only request's session: each statement is one AUTOCOMMIT round trip (no BEGIN, no COMMIT) and
    sees the latest committed data; there is nothing to commit, and writes are refused."""
    db: Database = request.app.state.db
    async with db.read_sessions() as session:
        yield session


DatabaseDep = Annotated[Database, Depends(get_db)]
# scope="function": the commit happens before the response is sent, so a 2xx means it is stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
