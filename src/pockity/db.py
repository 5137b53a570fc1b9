"""Engine and session factory; one session per request, committed or rolled back once at the edge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from sqlalchemy import TextClause, event, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
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


class _Record:
    """An asyncpg record read by attribute, like a SQLAlchemy Row (`row.email`)."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"_Record({dict(self._record.items())!r})"


async def _nothing_to_reset(_conn: Any) -> None:
    """These connections only ever run single AUTOCOMMIT SELECTs (no session state, locks, cursors or LISTEN):
    asyncpg's default reset would cost one more round trip on every release."""


async def _json_codecs(conn: Any) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _as_dbapi_error(exc: Exception, sql: str) -> Exception:
    """asyncpg's own errors as SQLAlchemy's, so a hot read that fails is answered like any other statement
    (a connection that went away or was refused: 503 with Retry-After; a refused value: 400)."""
    import asyncpg

    if isinstance(exc, DBAPIError):
        return exc
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        # Refused or dropped connections, a connection closed under the query (SQLSTATE class 08), connect
        # timeouts, a pool closed at shutdown.
        return OperationalError(sql, None, exc, connection_invalidated=True)
    if isinstance(exc, asyncpg.PostgresError):  # carries its SQLSTATE, read by the error handlers
        return DBAPIError(sql, None, exc)
    return exc


class CompiledStatements:
    """Core statements compiled once for asyncpg (keyed by the statement object, which is kept alive), bound by
    parameter name. A statement must name every value it writes: one that relies on a Python-side column default
    (an INSERT without `id`, an UPDATE of a row with `onupdate`) is refused, as asyncpg would never see it."""

    def __init__(self, dialect: Any) -> None:
        self._dialect = dialect
        # id(statement) -> (the statement, kept alive; SQL; parameter names in order; default values)
        self._compiled: dict[int, tuple[Any, str, tuple[str, ...], dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._compiled)

    def bind(self, statement: Any, params: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        found = self._compiled.get(id(statement))
        if found is None or found[0] is not statement:
            compiled = statement.compile(dialect=self._dialect)
            if any(bind.expanding for bind in compiled.binds.values()):
                raise TypeError("Compiled statements cannot have expanding (IN) parameters.")
            if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
                raise TypeError("Compiled statements must name every value they write (no Python-side defaults).")
            names = tuple(compiled.positiontup or ())
            defaults = {name: compiled.binds[name].value for name in names}
            found = (statement, str(compiled), names, defaults)
            self._compiled[id(statement)] = found
        _, sql, names, defaults = found
        params = params or {}
        return sql, [params[name] if name in params else defaults[name] for name in names]


class HotReads:
    """One-statement reads on the per-request path (authentication, a file's metadata, usage, listings).

    On PostgreSQL they run on a small asyncpg pool of their own, outside SQLAlchemy's execution machinery: the
    statement is still written with SQLAlchemy Core and compiled once for asyncpg, but each execution is one
    `fetch` on a pooled connection (about a third of the CPU of `AsyncConnection.execute` on this machine; see
    ../shared/PERFORMANCE.md). Each statement autocommits on its own, exactly like `Database.reader`: it sees
    the latest committed data, so nothing read here can be stale. On SQLite (the embedded default) the same
    statements run on `Database.reader`.

    Statements bind plain values (str, int, bool, aware datetimes); the rows come back read by attribute name
    (the statement's column labels), with `timestamptz` as aware UTC datetimes and JSON decoded, as from the
    ORM. Expanding (`IN`) parameters are not supported here.
    """

    def __init__(self, reader: AsyncEngine, url: str, pool_size: int) -> None:
        self._reader = reader
        self._postgres = reader.dialect.name == "postgresql"
        self._url = url
        self._pool_size = pool_size
        self._pool: Any = None
        self._starting = asyncio.Lock() if self._postgres else None
        self.compiled = CompiledStatements(reader.dialect)

    async def _connection_pool(self) -> Any:
        if self._pool is None:
            assert self._starting is not None
            async with self._starting:
                if self._pool is None:
                    import asyncpg

                    dsn = make_url(self._url).set(drivername="postgresql").render_as_string(hide_password=False)
                    # min_size=0: no background reconnect loop while PostgreSQL is away; the next read connects.
                    self._pool = await asyncpg.create_pool(
                        dsn, min_size=0, max_size=self._pool_size, init=_json_codecs, reset=_nothing_to_reset
                    )
        return self._pool

    async def all(self, statement: Any, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """Every row of one statement, in one AUTOCOMMIT round trip."""
        if not self._postgres:
            async with self._reader.connect() as conn:
                return (await conn.execute(statement, dict(params or {}))).all()
        sql, args = self.compiled.bind(statement, params)
        try:
            pool = self._pool or await self._connection_pool()
            records = await pool.fetch(sql, *args)
        except Exception as exc:
            raise _as_dbapi_error(exc, sql) from exc
        return [_Record(record) for record in records]

    async def first(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any | None:
        """The first row of one statement (None when there is none), in one AUTOCOMMIT round trip."""
        if not self._postgres:
            async with self._reader.connect() as conn:
                return (await conn.execute(statement, dict(params or {}))).first()
        rows = await self.all(statement, params)
        return rows[0] if rows else None

    def compiled_count(self) -> int:
        """How many statements have been compiled (each is compiled once; tests check none is built per call)."""
        return len(self.compiled)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class Statements(Protocol):
    """Core statements run in one transaction (`Database.transaction`, or an ORM session's own via
    `statements_of`): rows read by attribute name, or the number of rows a DML statement matched."""

    dialect_name: str  # "postgresql" or "sqlite": which spelling of a dialect-specific statement to run

    async def rows(self, statement: Any, params: Mapping[str, Any] | None = None) -> Sequence[Any]: ...

    async def count(self, statement: Any, params: Mapping[str, Any] | None = None) -> int: ...


class _ConnectionStatements:
    """On a SQLAlchemy connection (a session's, or SQLite's for `Database.transaction`)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.dialect_name = conn.dialect.name

    async def rows(self, statement: Any, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        return (await self._conn.execute(statement, dict(params or {}))).all()

    async def count(self, statement: Any, params: Mapping[str, Any] | None = None) -> int:
        result = await self._conn.execute(statement, dict(params or {}))
        return int(result.rowcount)


async def statements_of(session: AsyncSession) -> Statements:
    """The session's own transaction as Statements (Core, no ORM identity map: returns rows, not entities)."""
    return _ConnectionStatements(await session.connection())


class _AsyncpgStatements:
    """Straight on the asyncpg connection of a pooled SQLAlchemy connection, inside our own transaction: the
    statement compiled once, one `fetch`/`execute` each (about a fifth of the CPU of a session's `execute`).
    SQLAlchemy's codecs on these connections take JSON as text and give it back decoded."""

    dialect_name = "postgresql"

    def __init__(self, driver: Any, compiled: CompiledStatements) -> None:
        self._driver = driver
        self._compiled = compiled

    def _bind(self, statement: Any, params: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        sql, args = self._compiled.bind(statement, params)
        return sql, [json.dumps(a) if isinstance(a, dict | list) else a for a in args]

    async def rows(self, statement: Any, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        sql, args = self._bind(statement, params)
        try:
            records = await self._driver.fetch(sql, *args)
        except Exception as exc:
            raise _as_dbapi_error(exc, sql) from exc
        return [_Record(record) for record in records]

    async def count(self, statement: Any, params: Mapping[str, Any] | None = None) -> int:
        sql, args = self._bind(statement, params)
        try:
            status: str = await self._driver.execute(sql, *args)  # "UPDATE 1", "INSERT 0 1", "DELETE 0"
        except Exception as exc:
            raise _as_dbapi_error(exc, sql) from exc
        return int(status.rsplit(" ", 1)[-1])


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Same pool, AUTOCOMMIT: a one-statement read costs one round trip instead of BEGIN/SELECT/ROLLBACK.
    reader: AsyncEngine
    # ORM sessions on `reader`, for read-only requests: no BEGIN/COMMIT round trips; flushing is refused.
    read_sessions: async_sessionmaker[ReadOnlySession]
    # The per-request path's one-statement reads (a small asyncpg pool of their own on PostgreSQL).
    hot: HotReads
    # The statements `transaction()` has compiled for asyncpg (each once).
    compiled: CompiledStatements

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Statements]:
        """One transaction of Core statements, committed when the block ends, rolled back if it raises.

        For the per-request write path (an upload's reserve and record steps). On PostgreSQL it runs on a
        connection of the same pool as the sessions, but straight on its asyncpg connection; on SQLite (BEGIN
        IMMEDIATE, as every unit of work there) through SQLAlchemy.
        """
        if self.engine.dialect.name != "postgresql":
            async with self.engine.begin() as conn:
                yield _ConnectionStatements(conn)
            return
        async with self.engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            transaction = driver.transaction()
            try:
                await transaction.start()
            except Exception as exc:
                await conn.invalidate()
                raise _as_dbapi_error(exc, "BEGIN") from exc
            try:
                yield _AsyncpgStatements(driver, self.compiled)
            except Exception:
                try:
                    await transaction.rollback()
                except Exception:
                    await conn.invalidate()  # closing it rolls back; the pool opens a fresh one
                raise
            except BaseException:  # cancelled, perhaps mid-statement: the connection's state is unknown
                await conn.invalidate()
                raise
            try:
                await transaction.commit()
            except Exception as exc:
                await conn.invalidate()
                raise _as_dbapi_error(exc, "COMMIT") from exc

    async def dispose(self) -> None:
        await self.hot.close()
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


def split_pool(pool_size: int) -> tuple[int, int]:
    """`pool_size` is the process's whole PostgreSQL budget: (SQLAlchemy's share, the hot reads' share).

    The hot reads are one short statement each, so a third of the budget (at most 10) serves them. A budget of
    one still gives each a connection (the CLI's one-shot commands, which never open the hot pool).
    """
    hot = min(10, max(1, pool_size // 3))
    return max(1, pool_size - hot), hot


def create_database(url: str, *, pool_size: int = 25, max_overflow: int = 0, echo: bool = False) -> Database:
    """Build the engine for a PostgreSQL (asyncpg) or SQLite (aiosqlite) URL.

    At most `pool_size + max_overflow` PostgreSQL connections are open in the process, both pools together
    (for a `pool_size` of 2 or more).
    """
    pool_size, hot_pool_size = split_pool(pool_size)
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
    hot = HotReads(reader, url, hot_pool_size)
    return Database(
        engine=engine,
        sessions=sessions,
        reader=reader,
        read_sessions=read_sessions,
        hot=hot,
        compiled=CompiledStatements(engine.dialect),
    )


_PING = select(literal(1))


async def ping(db: Database) -> None:
    """One round trip to the database (the health check's): a hot read, no session."""
    await db.hot.first(_PING)


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
