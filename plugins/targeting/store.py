"""Client groups in the server's store (table ``client_groups`` of ``rportd.db``), through
``server.store.run``: every call runs in the store's thread and is committed before it returns."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

_SCHEMA = """CREATE TABLE IF NOT EXISTS client_groups (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    allowed_user_groups TEXT NOT NULL DEFAULT '[]'
)"""


class GroupExists(Exception):
    """An insert found a group with the same id."""


def _row(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return (record["id"], record["description"], json.dumps(record["params"]),
            json.dumps(record["allowed_user_groups"]))


class GroupStore:
    """The records of :meth:`ClientGroup.to_record`, by id."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def load(self) -> list[dict[str, Any]]:
        """Create the table if needed; every stored record, in creation order."""
        def read(db: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
            with db:
                db.execute(_SCHEMA)
            return db.execute("SELECT id, description, params, allowed_user_groups "
                              "FROM client_groups ORDER BY rowid").fetchall()
        rows = await self._store.run(read)
        return [{"id": gid, "description": description, "params": json.loads(params),
                 "allowed_user_groups": json.loads(allowed)}
                for gid, description, params, allowed in rows]

    async def insert(self, record: dict[str, Any]) -> None:
        """Add a new group; :class:`GroupExists` if the id is taken."""
        def write(db: sqlite3.Connection) -> None:
            try:
                with db:
                    db.execute("INSERT INTO client_groups (id, description, params, "
                               "allowed_user_groups) VALUES (?, ?, ?, ?)", _row(record))
            except sqlite3.IntegrityError:
                raise GroupExists(record["id"]) from None
        await self._store.run(write)

    async def upsert(self, record: dict[str, Any]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT INTO client_groups (id, description, params, allowed_user_groups) "
                           "VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                           "description=excluded.description, params=excluded.params, "
                           "allowed_user_groups=excluded.allowed_user_groups", _row(record))
        await self._store.run(write)

    async def delete(self, group_id: str) -> bool:
        """Remove a group; whether it existed."""
        def write(db: sqlite3.Connection) -> bool:
            with db:
                return db.execute("DELETE FROM client_groups WHERE id=?", (group_id,)).rowcount > 0
        return await self._store.run(write)
