"""The server side's own table: every measurement a client answered, kept in the server's store
(SQLite or PostgreSQL, whichever rportd uses) as plain SQLAlchemy Core.

``SCHEMA`` is what ``rport_store_schema`` returns: the table, and the directory of its Alembic
migrations (``migrations/0001_samples.py``, ``0002_...``), which rportd runs at start-up. The
functions below run inside ``await server.store.run(fn, ...)``: one transaction each, committed
before the awaited call returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rport.core.plugin import StoreSchema

METADATA = sa.MetaData()

samples = sa.Table(
    "diskusage_samples", METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("used", sa.BigInteger, nullable=False),
    sa.Column("free", sa.BigInteger, nullable=False),
    sa.Column("measured_at", sa.Double, nullable=False),
    sa.Index("diskusage_samples_client", "client_id", "measured_at"),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")

KEPT = 100
"""Samples kept per client (the oldest go first)."""


def add(conn: sa.Connection, client_id: str, usage: dict[str, Any], at: float) -> None:
    conn.execute(samples.insert().values(
        client_id=client_id, path=usage["path"], total=usage["total"], used=usage["used"],
        free=usage["free"], measured_at=at))
    old = (sa.select(samples.c.id).where(samples.c.client_id == client_id)
           .order_by(samples.c.measured_at.desc(), samples.c.id.desc()).offset(KEPT))
    conn.execute(samples.delete().where(samples.c.id.in_(old.scalar_subquery())))


def of_client(conn: sa.Connection, client_id: str) -> list[dict[str, Any]]:
    """The client's samples, newest first."""
    rows = conn.execute(
        sa.select(samples.c.path, samples.c.total, samples.c.used, samples.c.free,
                  samples.c.measured_at)
        .where(samples.c.client_id == client_id)
        .order_by(samples.c.measured_at.desc(), samples.c.id.desc()))
    return [dict(row._mapping) for row in rows]
