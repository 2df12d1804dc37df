"""The embedded store: SQLite in ``data_dir``, every call run in one worker thread.

A small interface (clients here; plugins get :meth:`Store.run` for their own tables) so that
another backend can be added later without touching plugins. Writes are committed before the
awaited call returns, so the API never reports something that is not on disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

R = TypeVar("R")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    disconnected_at REAL
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rport-store")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn(connection)`` in the store's thread (for plugins' own tables). Use
        ``with connection:`` in ``fn`` for a transaction."""
        return await self._call(lambda: fn(self._conn))

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def _call(self, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # -- clients ------------------------------------------------------------------------------

    async def save_client(self, client_id: str, record: dict[str, Any],
                          disconnected_at: float | None) -> None:
        text = json.dumps(record, separators=(",", ":"))

        def write() -> None:
            with self._conn:
                self._conn.execute(
                    "INSERT INTO clients (id, record, disconnected_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET record=excluded.record, "
                    "disconnected_at=excluded.disconnected_at",
                    (client_id, text, disconnected_at))
        await self._call(write)

    async def mark_all_disconnected(self, at: float) -> None:
        def write() -> None:
            with self._conn:
                self._conn.execute(
                    "UPDATE clients SET disconnected_at=? WHERE disconnected_at IS NULL", (at,))
        await self._call(write)

    async def delete_client(self, client_id: str) -> None:
        def write() -> None:
            with self._conn:
                self._conn.execute("DELETE FROM clients WHERE id=?", (client_id,))
        await self._call(write)

    async def load_clients(self) -> list[tuple[dict[str, Any], float | None]]:
        def read() -> list[tuple[dict[str, Any], float | None]]:
            rows = self._conn.execute("SELECT record, disconnected_at FROM clients").fetchall()
            return [(json.loads(record), at) for record, at in rows]
        return await self._call(read)
