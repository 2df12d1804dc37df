"""The core's own table: the known clients (table ``clients``), one JSON record each and the
time it disconnected (None while connected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .schema import StoreSchema, upsert

METADATA = sa.MetaData()

clients = sa.Table(
    "clients", METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("disconnected_at", sa.Double),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent.parent / "migrations")


_KEY, _UPDATE = ("id",), ("record", "disconnected_at")


def save(conn: sa.Connection, client_id: str, record: dict[str, Any],
         disconnected_at: float | None) -> None:
    conn.execute(upsert(conn, clients, _KEY, _UPDATE), {
        "id": client_id, "record": json.dumps(record, separators=(",", ":")),
        "disconnected_at": disconnected_at})


def prepare(write: tuple[str, str, Any, float | None]) -> dict[str, Any] | str:
    """A write of :class:`~.batch.WriteBatcher`, on the event loop: a row to save (the
    record as JSON now), or the id of a client to delete."""
    op, client_id, record, disconnected_at = write
    if op == "delete":
        return client_id
    return {"id": client_id, "record": json.dumps(record, separators=(",", ":")),
            "disconnected_at": disconnected_at}


def write(conn: sa.Connection, rows: list[dict[str, Any] | str]) -> None:
    """Saves and deletes of clients, each client at most once (its last write)."""
    saves = [row for row in rows if isinstance(row, dict)]
    if saves:
        conn.execute(upsert(conn, clients, _KEY, _UPDATE), saves[0] if len(saves) == 1 else saves)
    deletes = [{"id": row} for row in rows if isinstance(row, str)]
    if deletes:
        conn.execute(_DELETE, deletes[0] if len(deletes) == 1 else deletes)


_DELETE = clients.delete().where(clients.c.id == sa.bindparam("id"))


def mark_all_disconnected(conn: sa.Connection, at: float) -> None:
    conn.execute(clients.update().where(clients.c.disconnected_at.is_(None))
                 .values(disconnected_at=at))


def delete(conn: sa.Connection, client_id: str) -> None:
    conn.execute(clients.delete().where(clients.c.id == client_id))


def load(conn: sa.Connection) -> list[tuple[dict[str, Any], float | None]]:
    rows = conn.execute(sa.select(clients.c.record, clients.c.disconnected_at)).all()
    return [(json.loads(record), at) for record, at in rows]
