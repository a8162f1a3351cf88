"""The database under the store: the SQLite file (the default) or a shared PostgreSQL server.

The store writes its SQL once, with ``?`` placeholders and what both engines understand
(``ON CONFLICT``, ``RETURNING``, ``CAST``); ``PgConn`` numbers the placeholders for PostgreSQL
and fits each value to the type the server expects. A write transaction is ordered against
every other writer of the database: SQLite's ``BEGIN IMMEDIATE`` takes the file's write lock,
PostgreSQL's takes one transaction-level advisory lock, so admission (sum the charges, then
add the job) is as atomic across instances as it is across processes on one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiosqlite
import asyncpg

from bot.errors import ConfigError

# A pooled connection or a plain one: the same methods.
PgConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Row = Any  # sqlite3.Row or asyncpg.Record: both read by position and by column name
Kind = Literal["sqlite", "postgresql"]

# Everything either engine raises for a failed statement or a lost connection.
ERRORS: tuple[type[Exception], ...] = (
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
)
_CLOSE_ERRORS: tuple[type[Exception], ...] = (*ERRORS, asyncio.TimeoutError)
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    asyncpg.IntegrityConstraintViolationError,
)

# Advisory lock keys (two int4 keys: this namespace, then the purpose or the owner).
LOCK_NAMESPACE = 0x494D47  # "IMG"
WRITE_LOCK = 1
MIGRATE_LOCK = 2
# Each open store on PostgreSQL holds a session lock (this namespace, its owner's key) on a
# connection of its own: the server drops it the moment that connection ends, kill -9 included.
OWNER_NAMESPACE = LOCK_NAMESPACE + 1


class Conn(ABC):
    """One connection, inside a transaction or not: statements with ``?`` placeholders."""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed (or returned)."""

    @abstractmethod
    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement and return its rows."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters."""


class Database(ABC):
    """Where the store's tables live; every method is safe from many coroutines at once."""

    kind: Kind
    # True when other instances may use the same database at once (PostgreSQL): the provider
    # slots then are leases in the database, not only this process's own count.
    shared: bool

    @abstractmethod
    def write(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A transaction ordered against every other writer, committed on leaving."""

    @abstractmethod
    def read(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A transaction whose statements all see one snapshot."""

    @abstractmethod
    def connection(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        """A connection for single statements, each committed on its own."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """The rows of one statement."""
        async with self.connection() as conn:
            return await conn.execute_fetchall(sql, params)

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement on its own; the rows it changed."""
        async with self.connection() as conn:
            return await conn.execute(sql, params)


# --- SQLite ----------------------------------------------------------------------------------
class SqliteConn(Conn):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self.db.execute(sql, params)
        return cursor.rowcount

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self.db.execute_fetchall(sql, params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.db.executemany(sql, rows)


class SqliteDatabase(Database):
    """One aiosqlite connection to the file; a lock keeps each transaction to one coroutine."""

    kind: Kind = "sqlite"
    shared = False

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._conn = SqliteConn(db)
        # One connection carries every coroutine's statements, so a transaction must not let
        # another coroutine's statement slip into it; BEGIN IMMEDIATE orders processes.
        self.lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        async with self.lock:
            try:
                # Inside the try: if we are cancelled while BEGIN is queued, it still runs.
                await self.db.execute("BEGIN IMMEDIATE")
                yield self._conn
                await self.db.execute("COMMIT")
            except BaseException:
                # Also on cancellation: the connection's worker runs queued statements in
                # order, so this ROLLBACK lands before the next coroutine's BEGIN.
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self.db.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        async with self.lock:
            await self.db.execute("BEGIN")
            try:
                yield self._conn
            finally:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self.db.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        async with self.lock:
            yield self._conn

    async def close(self) -> None:
        async with self.lock:
            await self.db.close()


# --- PostgreSQL ------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?")
_INTS = frozenset({"int2", "int4", "int8"})
_FLOATS = frozenset({"float4", "float8", "numeric"})
_TEXTS = frozenset({"text", "varchar", "bpchar", "name"})


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """``sql`` with each ``?`` placeholder (outside string literals) as ``$1``, ``$2``, …"""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(0) != "?":
            return match.group(0)
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


def _fit(value: Any, type_name: str) -> Any:
    """``value`` as the Python type asyncpg encodes for a parameter of ``type_name``."""
    if value is None:
        return None
    if type_name in _INTS:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif type_name in _FLOATS:
        if isinstance(value, int):
            return float(value)
    elif type_name in _TEXTS and not isinstance(value, str):
        return str(value)
    return value


def _changed(status: str) -> int:
    # asyncpg answers with the command tag: "UPDATE 3", "INSERT 0 1", "DELETE 0".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PgConn(Conn):
    """An asyncpg connection speaking the store's ``?`` SQL."""

    def __init__(self, conn: PgConnection, types: dict[str, tuple[str, ...]]) -> None:
        self.conn = conn
        self._types = types  # parameter types per statement, shared by the pool

    async def _args(self, sql: str, params: Sequence[Any]) -> list[Any]:
        types = self._types.get(sql)
        if types is None:
            statement = await self.conn.prepare(sql)
            types = tuple(t.name for t in statement.get_parameters())
            self._types[sql] = types
        return [_fit(value, name) for value, name in zip(params, types, strict=False)]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        query = numbered(sql)
        args = await self._args(query, params)
        if "RETURNING" in query.upper():
            return len(await self.conn.fetch(query, *args))
        return _changed(await self.conn.execute(query, *args))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        query = numbered(sql)
        return list(await self.conn.fetch(query, *await self._args(query, params)))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        query = numbered(sql)
        batch = [list(row) for row in rows]
        if not batch:
            return
        types = await self._args(query, batch[0])  # learns the types
        del types
        names = self._types[query]
        fitted = [[_fit(v, t) for v, t in zip(row, names, strict=False)] for row in batch]
        await self.conn.executemany(query, fitted)


def describe(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL, never its password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "the server in IMAGINE_DATABASE_URL"
    database = parts.path.lstrip("/") or (parts.username or "")
    return f"{host}:{port}/{database}"


class PgDatabase(Database):
    """A pool of asyncpg connections to a PostgreSQL database that instances share."""

    kind: Kind = "postgresql"
    shared = True

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url
        self._types: dict[str, tuple[str, ...]] = {}
        self._owner_conn: asyncpg.Connection | None = None
        self._owner_key: int | None = None

    # Admissions take turns on one lock, so more sessions only wait more: four measured
    # faster than ten or twenty (benchmarks/engines_bench.py), and leave room for reads.
    POOL_SIZE = 4

    @classmethod
    async def open(cls, url: str, *, max_size: int = POOL_SIZE) -> PgDatabase:
        """Connect, or a ConfigError naming the server (never the password) and the reason."""
        dsn = "postgresql://" + url.split("://", 1)[1]
        # Like the SQLite file's synchronous=NORMAL: a commit doesn't wait for its WAL to
        # reach the disk, so a crash of the server (not of the bot) may forget the last
        # fraction of a second of writes, never corrupt them. "?synchronous_commit=on" in the
        # URL waits for every commit instead.
        settings = {} if "synchronous_commit=" in dsn else {"synchronous_commit": "off"}
        try:
            pool = await asyncpg.create_pool(
                dsn,
                server_settings=settings,
                min_size=1,
                max_size=max_size,
                command_timeout=60,
                timeout=10,
                reset=_keep_session,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            reason = str(exc).strip() or type(exc).__name__
            password = urlsplit(dsn).password
            if password:
                reason = reason.replace(password, "…")
            raise ConfigError(
                "IMAGINE_DATABASE_URL",
                f"can't connect to PostgreSQL at {describe(url)} ({reason}); "
                "check the server is running and the URL's user, password and database",
            ) from None
        return cls(pool, dsn)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn:
            yield PgConn(conn, self._types)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn:
            # Held until COMMIT: writers of every instance take turns, as on one SQLite file.
            # BEGIN and the lock go in one trip (a simple query of two statements).
            await conn.execute(_BEGIN_LOCKED)
            try:
                yield PgConn(conn, self._types)
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(*_CLOSE_ERRORS):
                        await asyncio.shield(conn.execute("ROLLBACK"))
                raise
            await conn.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield PgConn(conn, self._types)

    async def hold_owner_lock(self, owner_id: str) -> None:
        """Hold ``owner_id``'s session lock for as long as this process lives (again if lost)."""
        conn = self._owner_conn
        if conn is not None and not conn.is_closed():
            return
        key = owner_lock_key(owner_id)
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", OWNER_NAMESPACE, key)
        except BaseException:
            await conn.close()
            raise
        self._owner_conn, self._owner_key = conn, key

    async def release_owner_lock(self) -> None:
        """Give the session lock up (the store closed)."""
        conn, self._owner_conn = self._owner_conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), 10)
        except _CLOSE_ERRORS:
            conn.terminate()

    @staticmethod
    async def held_owners(conn: Conn, owner_ids: Iterable[str]) -> set[str]:
        """Those of ``owner_ids`` whose session lock some live connection holds."""
        rows = await conn.execute_fetchall(
            "SELECT objid::BIGINT FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = ? AND objsubid = 2 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (OWNER_NAMESPACE,),
        )
        keys = {int(row[0]) for row in rows}
        return {owner for owner in owner_ids if owner_lock_key(owner) in keys}

    async def close(self) -> None:
        await self.release_owner_lock()
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except _CLOSE_ERRORS:
            self.pool.terminate()


_BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({LOCK_NAMESPACE}, {WRITE_LOCK})"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Hand a connection back to the pool as it is.

    asyncpg's default reset costs a round trip per use; the store's pooled connections keep no
    session state (no session locks, LISTEN, cursors or SET), and a transaction left open is
    rolled back by the pool itself.
    """


def owner_lock_key(owner_id: str) -> int:
    """The int4 advisory lock key an owner holds for as long as its process lives."""
    return zlib.crc32(owner_id.encode()) & 0x7FFFFFFF
