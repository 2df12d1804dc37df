"""Jobs (one command on one client) and multi-jobs (one command on many), RPort's fields, kept
in the server's store (tables ``jobs`` and ``multi_jobs``); a write is committed before the API
reports it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rport.core.plugin import KeyedLocks, StoreSchema, upsert

JOB_FIELDS = ("jid", "status", "finished_at", "client_id", "client_name", "command", "cwd",
              "interpreter", "pid", "started_at", "created_by", "timeout_sec", "multi_job_id",
              "schedule_id", "error", "result", "is_sudo", "is_script", "stream_result")
FINAL = ("successful", "failed", "unknown", "cancelled", "skipped")

METADATA = sa.MetaData()

jobs = sa.Table(
    "jobs", METADATA,
    sa.Column("jid", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("multi_job_id", sa.Text),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("status", sa.Text),
    sa.Index("jobs_client", "client_id", "created"),
    sa.Index("jobs_multi", "multi_job_id", "created"),
)
"""One row per job: its RPort document (JSON) and, to query by, its ids and status."""

multi_jobs = sa.Table(
    "multi_jobs", METADATA,
    sa.Column("jid", sa.Text, primary_key=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")


def new_job(**fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {name: None for name in JOB_FIELDS}
    job.update({"result": {"stdout": "", "stderr": "", "summary": ""}, "error": "",
                "is_sudo": False, "is_script": False, "stream_result": True, "cwd": "",
                "interpreter": "/bin/sh"})
    job.update(fields)
    return job


class JobStore:
    """Jobs and multi-jobs in the server's store; every call is one transaction, committed
    before it returns."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._order = KeyedLocks()

    async def save(self, job: dict[str, Any]) -> None:
        """Store the job as it is when its turn comes: the saves of one job are made in the
        order they were asked for (one after the other, whatever the database), each of the
        job's latest state, so an older state never lands last."""
        async with self._order(job["jid"]):
            await self.store.run(_save_jobs, [_job_row(job, time.time())])

    async def save_many(self, jobs: list[dict[str, Any]]) -> None:
        # One ``created`` per job, 1 µs apart: the list's order is the order they are listed in.
        now = time.time()
        await self.store.run(_save_jobs, [_job_row(j, now + i * 1e-6) for i, j in enumerate(jobs)])

    async def delete(self, jid: str) -> None:
        await self.store.run(_execute, _DELETE, {"jid": jid})

    async def get(self, jid: str) -> dict[str, Any] | None:
        docs = await self.store.run(_docs, _GET, {"jid": jid})
        return docs[0] if docs else None

    async def of_client(self, client_id: str) -> list[dict[str, Any]]:
        return await self.store.run(_docs, _OF_CLIENT, {"client_id": client_id})

    async def running_of(self, client_id: str) -> list[dict[str, Any]]:
        """The client's jobs still ``running``, without reading its whole history."""
        return await self.store.run(_docs, _RUNNING_OF, {"client_id": client_id})

    async def of_multi(self, multi_jid: str) -> list[dict[str, Any]]:
        return await self.store.run(_docs, _OF_MULTI, {"multi_job_id": multi_jid})

    async def save_multi(self, multi: dict[str, Any]) -> None:
        await self.store.run(_save_multi, {"jid": multi["jid"], "created": time.time(),
                                           "doc": json.dumps(multi)})

    async def get_multi(self, jid: str) -> dict[str, Any] | None:
        docs = await self.store.run(_docs, _GET_MULTI, {"jid": jid})
        return docs[0] if docs else None

    async def all_multi(self) -> list[dict[str, Any]]:
        return await self.store.run(_docs, _ALL_MULTI, {})


# Built once: SQLAlchemy then finds their compiled form in its cache without rebuilding them.
_GET = sa.select(jobs.c.doc).where(jobs.c.jid == sa.bindparam("jid"))
_DELETE = jobs.delete().where(jobs.c.jid == sa.bindparam("jid"))
_OF_CLIENT = (sa.select(jobs.c.doc).where(jobs.c.client_id == sa.bindparam("client_id"))
              .order_by(jobs.c.created.desc(), jobs.c.jid))
_RUNNING_OF = sa.select(jobs.c.doc).where(jobs.c.client_id == sa.bindparam("client_id"),
                                          jobs.c.status == "running")
_OF_MULTI = (sa.select(jobs.c.doc).where(jobs.c.multi_job_id == sa.bindparam("multi_job_id"))
             .order_by(jobs.c.created, jobs.c.jid))
_GET_MULTI = sa.select(multi_jobs.c.doc).where(multi_jobs.c.jid == sa.bindparam("jid"))
_ALL_MULTI = sa.select(multi_jobs.c.doc).order_by(multi_jobs.c.created.desc(), multi_jobs.c.jid)


# -- in the store's transaction ---------------------------------------------------------------------

def _job_row(job: dict[str, Any], created: float) -> dict[str, Any]:
    return {"jid": job["jid"], "client_id": job["client_id"], "multi_job_id": job.get("multi_job_id"),
            "created": created, "status": job.get("status"), "doc": json.dumps(job)}


_NOT_BACKWARDS = sa.or_(jobs.c.status.is_(None), jobs.c.status == "running",
                       sa.literal_column("excluded.status") != "running")
"""A final job (every status but ``running`` is) is never made ``running`` again, whichever
node or connection writes last. (Equalities, not ``IN``: an expanding ``IN`` is re-rendered at
every execution.)"""


def _save_jobs(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    # A job is inserted once, then only its document (and status) change. One row is executed
    # as such: a list of parameters is an executemany, whose statement is built per call.
    conn.execute(upsert(conn, jobs, ["jid"], ["doc", "status"], where=_NOT_BACKWARDS),
                 rows[0] if len(rows) == 1 else rows)


def _save_multi(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(upsert(conn, multi_jobs, ["jid"], ["doc"]), row)


def _execute(conn: sa.Connection, stmt: sa.Executable, params: dict[str, Any]) -> None:
    conn.execute(stmt, params)


def _docs(conn: sa.Connection, stmt: sa.Select[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(doc) for (doc,) in conn.execute(stmt, params)]
