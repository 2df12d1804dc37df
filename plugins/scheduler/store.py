"""Schedules in the server's store (table ``schedules``): RPort's columns (the details as one
JSON document), when each runs next, and its latest multi-client job. A run is claimed by moving
``next_run_at`` on with a conditional update, so when several servers share one database each
run starts exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rport.core.plugin import StoreSchema

METADATA = sa.MetaData()

schedules = sa.Table(
    "schedules", METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("schedule", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("next_run_at", sa.Double, nullable=False),
    sa.Column("last_jid", sa.Text),
    sa.Index("schedules_next_run", "next_run_at"),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")


def _record(row: Any) -> dict[str, Any]:
    record = dict(row._mapping)
    record["details"] = json.loads(record["details"])
    return record


def all_schedules(conn: sa.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(schedules).order_by(schedules.c.created_at, schedules.c.id))
    return [_record(r) for r in rows]


def get(conn: sa.Connection, schedule_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(schedules).where(schedules.c.id == schedule_id)).first()
    return None if row is None else _record(row)


def insert(conn: sa.Connection, record: dict[str, Any]) -> None:
    conn.execute(schedules.insert().values(**{**record, "details": json.dumps(record["details"])}))


def update(conn: sa.Connection, schedule_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
    if "details" in values:
        values = {**values, "details": json.dumps(values["details"])}
    done = conn.execute(schedules.update().where(schedules.c.id == schedule_id).values(**values))
    return get(conn, schedule_id) if done.rowcount else None


def delete(conn: sa.Connection, schedule_id: str) -> bool:
    return bool(conn.execute(schedules.delete().where(schedules.c.id == schedule_id)).rowcount)


def due(conn: sa.Connection, now: float) -> tuple[list[tuple[str, str, float]], float | None]:
    """The schedules due at ``now`` (id, schedule, next_run_at), and the earliest later run."""
    rows = conn.execute(sa.select(schedules.c.id, schedules.c.schedule, schedules.c.next_run_at)
                        .where(schedules.c.next_run_at <= now).order_by(schedules.c.next_run_at))
    later = conn.execute(sa.select(sa.func.min(schedules.c.next_run_at))
                         .where(schedules.c.next_run_at > now)).scalar()
    return [tuple(r) for r in rows], later  # type: ignore[misc]


def claim(conn: sa.Connection, schedule_id: str, expected: float, following: float) -> bool:
    """Move a due run on to ``following``; True if this call did (no other server did first)."""
    done = conn.execute(schedules.update().where(schedules.c.id == schedule_id,
                                                 schedules.c.next_run_at == expected)
                        .values(next_run_at=following))
    return bool(done.rowcount)


def set_last_jid(conn: sa.Connection, schedule_id: str, jid: str) -> None:
    conn.execute(schedules.update().where(schedules.c.id == schedule_id).values(last_jid=jid))
