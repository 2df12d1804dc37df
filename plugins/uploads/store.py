"""Uploads in the server's store: each upload (table ``uploads``: what was sent, where, by whom)
and each target client's result (table ``upload_results``: RPort's ``ClientUploadResponse``,
``pending`` until the client has answered). RPort reports results only to the websocket
listeners of the moment; here they are kept, and read with ``GET /files/{uuid}``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rport.core.plugin import StoreSchema

METADATA = sa.MetaData()

uploads = sa.Table(
    "uploads", METADATA,
    sa.Column("uuid", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Index("uploads_created", "created_at"),
)

results = sa.Table(
    "upload_results", METADATA,
    sa.Column("uuid", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")


def insert(conn: sa.Connection, upload: dict[str, Any], pending: list[dict[str, Any]]) -> bool:
    """Store an upload and its clients' results; False if its uuid is taken."""
    taken = conn.execute(sa.select(uploads.c.uuid).where(uploads.c.uuid == upload["uuid"])).first()
    if taken is not None:
        return False
    conn.execute(uploads.insert().values(uuid=upload["uuid"], created_at=upload["created"],
                                         created_by=upload["created_by"], doc=json.dumps(upload)))
    if pending:
        conn.execute(results.insert(), [
            {"uuid": upload["uuid"], "client_id": r["client_id"], "position": i,
             "status": r["status"], "doc": json.dumps(r)} for i, r in enumerate(pending)])
    return True


def set_result(conn: sa.Connection, uuid: str, result: dict[str, Any]) -> None:
    conn.execute(results.update().where(results.c.uuid == uuid,
                                        results.c.client_id == result["client_id"])
                 .values(status=result["status"], doc=json.dumps(result)))


def fail_pending(conn: sa.Connection, uuid: str, message: str) -> int:
    """The results still pending of ``uuid`` become errors with ``message``."""
    rows = conn.execute(sa.select(results.c.client_id, results.c.doc)
                        .where(results.c.uuid == uuid, results.c.status == "pending")).all()
    for client_id, doc in rows:
        result = {**json.loads(doc), "status": "error", "message": message}
        conn.execute(results.update().where(results.c.uuid == uuid, results.c.client_id == client_id)
                     .values(status="error", doc=json.dumps(result)))
    return len(rows)


def get(conn: sa.Connection, uuid: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    row = conn.execute(sa.select(uploads.c.doc).where(uploads.c.uuid == uuid)).first()
    if row is None:
        return None
    docs = conn.execute(sa.select(results.c.doc).where(results.c.uuid == uuid)
                        .order_by(results.c.position)).scalars()
    return json.loads(row[0]), [json.loads(d) for d in docs]


def all_uploads(conn: sa.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(uploads.c.doc).order_by(uploads.c.created_at.desc(), uploads.c.uuid))
    return [json.loads(doc) for (doc,) in rows]
