"""The tunnels kept for reconnects (table ``tunnels``): each client's tunnel specs, in the order
they are restored. Plain functions for ``server.store.run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rport.core.plugin import StoreSchema

METADATA = sa.MetaData()

tunnels = sa.Table(
    "tunnels", METADATA,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")


def load(conn: sa.Connection) -> list[tuple[str, dict[str, Any]]]:
    """Every kept spec, with its client id, each client's in order."""
    rows = conn.execute(sa.select(tunnels.c.client_id, tunnels.c.spec)
                        .order_by(tunnels.c.client_id, tunnels.c.position, tunnels.c.id))
    return [(client_id, json.loads(spec)) for client_id, spec in rows]


def replace(conn: sa.Connection, client_id: str, specs: list[dict[str, Any]]) -> None:
    """The client's kept tunnels become ``specs``, in this order."""
    conn.execute(tunnels.delete().where(tunnels.c.client_id == client_id))
    if specs:
        conn.execute(tunnels.insert(), [
            {"client_id": client_id, "id": str(spec["id"]), "spec": json.dumps(spec),
             "position": position} for position, spec in enumerate(specs)])


def load_of(conn: sa.Connection, client_id: str) -> list[dict[str, Any]]:
    """One client's kept specs, in order."""
    rows = conn.execute(sa.select(tunnels.c.spec).where(tunnels.c.client_id == client_id)
                        .order_by(tunnels.c.position, tunnels.c.id))
    return [json.loads(spec) for (spec,) in rows]
