"""The audit log's table in the server's store, and the statements on it. Every function takes
a SQLAlchemy Connection: they run through ``server.store.run`` (one transaction each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from rport.core.plugin import StoreSchema

METADATA = sa.MetaData()

auditlog = sa.Table(
    "auditlog", METADATA,
    # SQLite's INTEGER PRIMARY KEY (the rowid): the order entries were written in
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("timestamp", sa.Double, nullable=False),
    sa.Column("username", sa.Text, nullable=False, server_default=""),
    sa.Column("remote_ip", sa.Text, nullable=False, server_default=""),
    sa.Column("application", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("affected_id", sa.Text, nullable=False, server_default=""),
    sa.Column("client_id", sa.Text, nullable=False, server_default=""),
    sa.Column("client_hostname", sa.Text, nullable=False, server_default=""),
    sa.Column("request", sa.Text, nullable=False, server_default=""),
    sa.Column("response", sa.Text, nullable=False, server_default=""),
    sa.Index("auditlog_timestamp", "timestamp"),
    sa.Index("auditlog_client_id", "client_id"),
    sa.Index("auditlog_username", "username"),
    sa.Index("auditlog_affected_id", "affected_id"),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")
COLUMNS = [c for c in auditlog.columns if c.name != "id"]
_INSERT = auditlog.insert()


def insert(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(_INSERT, rows)


def select_page(conn: sa.Connection, where: sa.ColumnElement[bool] | None,
                order: Iterable[sa.ColumnElement[Any]], limit: int, offset: int
                ) -> tuple[list[dict[str, Any]], int]:
    """One page of entries and the count of all that match."""
    count = sa.select(sa.func.count()).select_from(auditlog)
    page = sa.select(*COLUMNS).order_by(*order).limit(limit).offset(offset)
    if where is not None:
        count, page = count.where(where), page.where(where)
    total = conn.execute(count).scalar_one()
    return [dict(row._mapping) for row in conn.execute(page)], total


def count(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(auditlog)).scalar_one()


def outdated(conn: sa.Connection, cutoff: float, max_entries: int, limit: int
             ) -> list[dict[str, Any]]:
    """The oldest entries (by id) to rotate out: older than ``cutoff``, or beyond the newest
    ``max_entries``; at most ``limit``."""
    keep_from = conn.execute(sa.select(auditlog.c.id).order_by(auditlog.c.id.desc())
                             .limit(1).offset(max_entries - 1)).scalar()
    condition = auditlog.c.timestamp < cutoff
    if keep_from is not None:
        condition = sa.or_(condition, auditlog.c.id < keep_from)
    stmt = sa.select(auditlog).where(condition).order_by(auditlog.c.id).limit(limit)
    return [dict(row._mapping) for row in conn.execute(stmt)]


def delete(conn: sa.Connection, ids: list[int]) -> int:
    deleted = 0
    for start in range(0, len(ids), 500):  # well below any dialect's limit of bound parameters
        chunk = ids[start:start + 500]
        deleted += conn.execute(auditlog.delete().where(auditlog.c.id.in_(chunk))).rowcount
    return deleted
