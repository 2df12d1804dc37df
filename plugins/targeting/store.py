"""Client groups in the server's store (table ``client_groups``), through ``server.store.run``:
every call is one transaction, committed before it returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rport.core.plugin import StoreSchema, upsert

METADATA = sa.MetaData()

client_groups = sa.Table(
    "client_groups", METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("params", sa.Text, nullable=False, server_default="{}"),
    sa.Column("allowed_user_groups", sa.Text, nullable=False, server_default="[]"),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")


class GroupExists(Exception):
    """An insert found a group with the same id."""


def _row(record: dict[str, Any]) -> dict[str, str]:
    return {"id": record["id"], "description": record["description"],
            "params": json.dumps(record["params"]),
            "allowed_user_groups": json.dumps(record["allowed_user_groups"])}


def _load(conn: sa.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(client_groups).order_by(client_groups.c.id))
    return [{"id": gid, "description": description, "params": json.loads(params),
             "allowed_user_groups": json.loads(allowed)}
            for gid, description, params, allowed in rows]


def _insert(conn: sa.Connection, row: dict[str, str]) -> bool:
    """Whether the row was inserted (not when the id exists: ON CONFLICT DO NOTHING)."""
    stmt = upsert(conn, client_groups, ["id"], update=()).returning(client_groups.c.id)
    return conn.execute(stmt, row).first() is not None


def _upsert(conn: sa.Connection, row: dict[str, str]) -> None:
    conn.execute(upsert(conn, client_groups, ["id"]), row)


def _delete(conn: sa.Connection, group_id: str) -> bool:
    return conn.execute(client_groups.delete().where(client_groups.c.id == group_id)).rowcount > 0


class GroupStore:
    """The records of :meth:`ClientGroup.to_record`, by id."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def load(self) -> list[dict[str, Any]]:
        """Every stored record, by id."""
        return await self._store.run(_load)

    async def insert(self, record: dict[str, Any]) -> None:
        """Add a new group; :class:`GroupExists` if the id is taken."""
        if not await self._store.run(_insert, _row(record)):
            raise GroupExists(record["id"])

    async def upsert(self, record: dict[str, Any]) -> None:
        await self._store.run(_upsert, _row(record))

    async def delete(self, group_id: str) -> bool:
        """Remove a group; whether it existed."""
        return await self._store.run(_delete, group_id)
