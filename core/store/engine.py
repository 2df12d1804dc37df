"""The store: one database for the core and every plugin, through SQLAlchemy Core.

One interface for everything that stores data, built-in or third-party:
``await store.run(fn, *args)`` calls ``fn(conn, *args)`` with a SQLAlchemy ``Connection`` inside
one transaction, committed before the awaited call returns (rolled back if ``fn`` raises), and
returns what ``fn`` returned. ``fn`` is plain synchronous SQLAlchemy Core code, the same on every
database; it must only touch the database (no awaiting, no network) and return plain values.

Where ``fn`` runs depends on the database, never on the plugin:

- SQLite (the embedded default, ``rportd.db`` in ``data_dir``, WAL): SQLAlchemy's own sqlite3
  dialect on one connection in one store thread, as before: one thread hop per transaction.
  (aiosqlite, selectable with ``sqlite+aiosqlite://``, hops to its thread for every cursor call;
  several times slower per transaction, see benchmarks/store_ops.py.)
- PostgreSQL (``[database] url = "postgresql://..."``): SQLAlchemy's async engine with psycopg 3;
  ``fn`` runs through ``AsyncConnection.run_sync``, so the loop never blocks on the network.

Schemas are Alembic migrations per owner, run by :meth:`Store.open` (see :mod:`.migrate`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from . import clients as _clients
from . import migrate
from .batch import WriteBatcher
from .schema import StoreSchema, check_schemas
from .url import connect_args, describe, display, parse_url, sqlite_url

R = TypeVar("R")
P = ParamSpec("P")
log = logging.getLogger("rport.store")


class StoreError(Exception):
    """The database cannot be used: unreachable, refused, or a migration failed. The message is
    for the operator (no password in it); rportd stops with exit status 2."""


CLIENT_BATCH = 100
"""Client saves per transaction at most: each of their callers goes on in the same event-loop
iteration once it commits (an agent admitted: its session starts, plugins are told), so a
thousand at once would hold the loop (and the API) for tens of milliseconds."""


class Store:
    """The database of one server. ``url`` is ``[database] url`` (empty: SQLite at
    ``default_path``)."""

    def __init__(self, url: str | URL = "", default_path: Path | None = None) -> None:
        if isinstance(url, URL):
            self.url = url
        elif url:
            self.url = parse_url(url)
        elif default_path is not None:
            self.url = sqlite_url(default_path)
        else:
            raise ValueError("a database URL or a default SQLite path is needed")
        self.dialect = self.url.get_backend_name()
        """``"sqlite"`` or ``"postgresql"``."""
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._async: AsyncEngine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.schemas: dict[str, StoreSchema] = {}
        self._client_writes: WriteBatcher[tuple[str, str, Any, float | None]] = WriteBatcher(
            self, _clients.write, prepare=_clients.prepare, max_batch=CLIENT_BATCH)

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self, schemas: dict[str, StoreSchema] | None = None) -> None:
        """Connect, run every owner's pending migrations (``core`` is added), check that every
        declared table exists. Raises :class:`StoreError` (or ValueError for schemas that
        cannot be used, naming the plugin)."""
        schemas = {"core": _clients.SCHEMA, **(schemas or {})}
        problems = check_schemas(schemas)
        if problems:
            raise ValueError("; ".join(problems))
        self.schemas = schemas
        log.info("store: %s", describe(self.url))
        try:
            self._create_engine()  # imports the driver
            # Migrations are blocking work and Alembic is synchronous: a synchronous engine of
            # the same database, in a worker thread, keeps the loop free meanwhile.
            outcomes = await asyncio.to_thread(self._migrate_apart, schemas)
        except Exception as exc:
            await self.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(self._connect_failure(exc)) from exc
        for outcome in outcomes:
            if outcome.changed:
                log.info("store: tables of %s migrated from %s to %s",
                         "the core" if outcome.owner == "core" else f"plugin {outcome.owner!r}",
                         "+".join(outcome.before) or "nothing", "+".join(outcome.after))

    def _migrate_apart(self, schemas: dict[str, StoreSchema]) -> list[migrate.Outcome]:
        url = self.url
        if url.get_backend_name() == "sqlite":
            url = url.set(drivername="sqlite+pysqlite")
        engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args(url))
        if url.get_backend_name() == "sqlite":
            _sqlite_events(engine, transactional_ddl=True)
        try:
            with engine.connect() as conn:
                return self._migrate(conn, schemas)
        finally:
            engine.dispose()

    def _create_engine(self) -> None:
        url = self.url
        if url.get_driver_name() == "pysqlite":
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="rport-store")
            # One connection, opened and used only by the store's thread.
            self._engine = sa.create_engine(url, poolclass=StaticPool,
                                            connect_args={"check_same_thread": False})
            _sqlite_events(self._engine)
        elif url.get_backend_name() == "sqlite":  # sqlite+aiosqlite: one connection too
            self._async = create_async_engine(url, pool_size=1, max_overflow=0)
            _sqlite_events(self._async.sync_engine)
        else:
            self._async = create_async_engine(
                url, pool_size=5, max_overflow=10, pool_pre_ping=True, pool_recycle=1800,
                connect_args=connect_args(url))

    async def close(self) -> None:
        if self.is_open:
            await self._client_writes.drain()
        if self._async is not None:
            await self._async.dispose()
            self._async = None
        if self._engine is not None:
            engine, self._engine = self._engine, None
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._in_thread(conn.close)
            await self._in_thread(engine.dispose)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def is_open(self) -> bool:
        return self._engine is not None or self._async is not None

    # -- the interface ---------------------------------------------------------------------------

    async def run(self, fn: Callable[Concatenate[sa.Connection, P], R], /,
                  *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(conn, *args, **kwargs)`` in one transaction, committed before this returns;
        rolled back if ``fn`` raises (the exception propagates, e.g.
        ``sqlalchemy.exc.IntegrityError`` for a duplicate key)."""
        if self._engine is not None:
            return await self._in_thread(self._transaction, fn, args, kwargs)
        if self._async is None:
            raise RuntimeError("store is not open")
        async with self._async.begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    def _transaction(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """In the store's thread: ``fn`` on its one connection (kept open: no checkout per call)."""
        conn = self._conn
        if conn is None or conn.invalidated or conn.closed:
            if conn is not None:
                conn.close()
            assert self._engine is not None
            conn = self._conn = self._engine.connect()
        with conn.begin():
            return fn(conn, *args, **kwargs)

    async def _in_thread(self, fn: Callable[..., R], *args: Any) -> R:
        if self._executor is None:
            raise RuntimeError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args))

    # -- migrations -------------------------------------------------------------------------------

    def _migrate(self, conn: sa.Connection, schemas: dict[str, StoreSchema]) -> list[migrate.Outcome]:
        try:
            existing = set(sa.inspect(conn).get_table_names())
            conn.rollback()
            behind = migrate.pending(conn, schemas)
        except Exception as exc:
            raise StoreError(self._connect_failure(exc)) from exc
        if behind and existing and not any(t.startswith("alembic_version") for t in existing):
            log.info("store: a database of rportd 0.1 (tables %s, no migration history): "
                     "adopting its tables", ", ".join(sorted(existing)))
        if behind and existing and self.dialect == "sqlite" and self.url.database != ":memory:":
            self._backup(conn, sorted(behind))
        try:
            outcomes = migrate.upgrade_all(conn, schemas)
            missing = migrate.missing_tables(conn, schemas)
        except migrate.MigrationError as exc:
            raise StoreError(str(exc)) from exc
        if missing:
            raise StoreError("the migrations did not create every declared table: "
                             + "; ".join(missing))
        return outcomes

    def _backup(self, conn: sa.Connection, owners: list[str]) -> None:
        """Before migrating a SQLite database that has data: a consistent copy next to it."""
        path = Path(str(self.url.database))
        target = path.with_name(f"{path.name}.before-migration-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        cursor = conn.connection.dbapi_connection.cursor()  # outside any transaction
        try:
            cursor.execute("VACUUM INTO ?", (str(target),))
        finally:
            cursor.close()
        log.info("store: migrations pending for %s: copied the database to %s first",
                 ", ".join(owners), target)

    def _connect_failure(self, exc: BaseException) -> str:
        reason = getattr(exc, "orig", None) or exc
        text = str(reason).strip().splitlines()
        detail = text[0] if text else reason.__class__.__name__
        if isinstance(reason, ImportError) and self.dialect == "postgresql":
            detail = f"{detail} (pip install 'rport-py[postgresql]')"
        return f"cannot use the database {display(self.url)}: {detail}"

    # -- the core's clients ------------------------------------------------------------------------

    async def save_client(self, client_id: str, record: dict[str, Any],
                          disconnected_at: float | None) -> None:
        """Committed before it returns; the saves of clients connecting or disconnecting
        together share transactions (a thousand agents back after a restart), each client's
        writes landing in call order."""
        await self._client_writes.write(client_id, ("save", client_id, record, disconnected_at))

    async def flush(self) -> None:
        """Until the client saves and deletes asked for so far are committed (their callers
        may have gone: an agent's connection cancelled as rportd stops)."""
        await self._client_writes.drain()

    async def mark_all_disconnected(self, at: float) -> None:
        await self._client_writes.drain()
        await self.run(_clients.mark_all_disconnected, at)

    async def delete_client(self, client_id: str) -> None:
        await self._client_writes.write(client_id, ("delete", client_id, None, None))

    async def load_clients(self) -> list[tuple[dict[str, Any], float | None]]:
        return await self.run(_clients.load)


def _sqlite_events(engine: sa.Engine, *, transactional_ddl: bool = False) -> None:
    """WAL and the store's pragmas on every connection. With ``transactional_ddl`` (the
    migrations' engine), sqlite3's own transaction handling is switched off and SQLAlchemy's
    BEGIN is emitted (SQLAlchemy's documented recipe), so that a migration's DDL is rolled back
    with it. The store's own connection keeps sqlite3's handling (BEGIN before the first write
    of a transaction): every ``run`` goes through its one thread, one after the other, so a
    transaction that reads before it writes is not interleaved with another, and a read-only
    one costs no BEGIN and COMMIT."""

    @event.listens_for(engine, "connect")
    def connect(dbapi_conn: Any, record: Any) -> None:
        if transactional_ddl:
            dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000",
                       "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    if transactional_ddl:
        @event.listens_for(engine, "begin")
        def begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN")
