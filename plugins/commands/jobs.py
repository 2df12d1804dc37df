"""Jobs (one command on one client) and multi-jobs (one command on many), RPort's fields, kept
in the server's store (tables ``jobs`` and ``multi_jobs``); a write is committed before the API
reports it.

A job's life: ``queued`` (a multi-client job's job not sent yet: committed with its multi-job
before the API answers) -> ``running`` (committed before the command is sent: a job that may
have reached the agent is never sent twice) -> a final status. Saves of jobs are batched
(:class:`~rport.core.plugin.WriteBatcher`): saves made together share one transaction."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Collection

import sqlalchemy as sa

from rport.core.plugin import StoreSchema, WriteBatcher, upsert

JOB_FIELDS = ("jid", "status", "finished_at", "client_id", "client_name", "command", "cwd",
              "interpreter", "pid", "started_at", "created_by", "timeout_sec", "multi_job_id",
              "schedule_id", "error", "result", "is_sudo", "is_script", "stream_result")
FINAL = ("successful", "failed", "unknown", "cancelled", "skipped")
QUEUED = "queued"
"""A multi-client job's job that has not been sent to its client yet."""

METADATA = sa.MetaData()

jobs = sa.Table(
    "jobs", METADATA,
    sa.Column("jid", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("multi_job_id", sa.Text),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("status", sa.Text),
    sa.Column("sent_to", sa.Text),
    sa.Index("jobs_client", "client_id", "created"),
    sa.Index("jobs_multi", "multi_job_id", "created"),
    sa.Index("jobs_unfinished", "status", "client_id",
             sqlite_where=sa.text("status IN ('queued', 'running')"),
             postgresql_where=sa.text("status IN ('queued', 'running')")),
)
"""One row per job: its RPort document (JSON) and, to query by, its ids and status; for a job
sent and not confirmed yet, the agent process (its session id) it was sent to."""

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
    """Jobs and multi-jobs in the server's store; every write is committed before it returns."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._writes: WriteBatcher[tuple[str, Any, float, str | None]] = WriteBatcher(
            store, _write_jobs, prepare=_prepare)
        self._last_created = 0.0

    def _created(self) -> float:
        """A time for a new row, after every earlier one: rows list in the order they were made."""
        self._last_created = max(time.time(), self._last_created + 1e-6)
        return self._last_created

    async def save(self, job: dict[str, Any], sent_to: str | None = None) -> None:
        """Store the job as it is when its turn comes: the saves of one job are made in the
        order they were asked for, each of the job's latest state, so an older state never
        lands last; saves asked for together share a transaction. ``sent_to``: the agent
        process a running job was sent to (its session id)."""
        await self._writes.write(job["jid"], ("save", job, self._created(), sent_to))

    async def save_many(self, jobs: list[dict[str, Any]]) -> None:
        """Save ``jobs`` (listed in this order among themselves)."""
        await asyncio.gather(*(self.save(job) for job in jobs))

    async def delete(self, jid: str) -> None:
        await self._writes.write(jid, ("delete", jid, 0.0, None))

    async def drain(self) -> None:
        await self._writes.drain()

    async def get(self, jid: str) -> dict[str, Any] | None:
        docs = await self.store.run(_docs, _GET, {"jid": jid})
        return docs[0] if docs else None

    async def of_client(self, client_id: str) -> list[dict[str, Any]]:
        return await self.store.run(_docs, _OF_CLIENT, {"client_id": client_id})

    async def running_of(self, client_id: str) -> list[tuple[dict[str, Any], str | None]]:
        """The client's jobs still ``running``, each with the agent process it was sent to,
        without reading its whole history."""
        return await self.store.run(_running, client_id)

    async def clients_running(self) -> list[str]:
        """The clients with ``running`` jobs."""
        return await self.store.run(_texts, _CLIENTS_RUNNING, {})

    async def of_multi(self, multi_jid: str,
                       statuses: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The jobs of a multi-job, in the order of its clients; only those in ``statuses`` if
        given (chosen by the database: "how many are left" does not decode a thousand jobs)."""
        if statuses is not None:
            return await self.store.run(_docs, _OF_MULTI_STATUS, {
                "multi_job_id": multi_jid, "statuses": sorted(statuses)})
        return await self.store.run(_docs, _OF_MULTI, {"multi_job_id": multi_jid})

    async def page_of_multi(self, multi_jid: str, statuses: Collection[str], *,
                            descending: bool, limit: int | None,
                            offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the multi-job's jobs in ``statuses`` by job id, and how many there are, all
        chosen by the database (only the page's jobs are read)."""
        return await self.store.run(_page_of_multi, {
            "multi_job_id": multi_jid, "statuses": sorted(statuses)}, descending, limit, offset)

    async def of_multi_json(self, multi_jid: str) -> list[str]:
        """:meth:`of_multi` as the stored JSON texts: a multi-job of a thousand clients polled
        for its progress is answered without decoding and encoding every job again."""
        return await self.store.run(_texts, _OF_MULTI, {"multi_job_id": multi_jid})

    async def create_multi(self, multi: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        """The multi-job and all its jobs in one transaction."""
        created = self._created()
        rows = [_job_row(job, self._created()) for job in jobs]
        await self.store.run(_create_multi, {"jid": multi["jid"], "created": created,
                                             "doc": json.dumps(multi)}, rows)

    async def save_multi(self, multi: dict[str, Any]) -> None:
        await self.store.run(_save_multi, {"jid": multi["jid"], "created": self._created(),
                                           "doc": json.dumps(multi)})

    async def get_multi(self, jid: str) -> dict[str, Any] | None:
        docs = await self.store.run(_docs, _GET_MULTI, {"jid": jid})
        return docs[0] if docs else None

    async def all_multi(self) -> list[dict[str, Any]]:
        return await self.store.run(_docs, _ALL_MULTI, {})

    async def claim_multi(self, jid: str, key: str, holder: str, claimant: str) -> dict[str, Any] | None:
        """The multi-job ``jid`` made ``claimant``'s (its document's ``key``) if ``holder`` still
        has it: a compare-and-set on the stored document, so that of two nodes claiming it one
        gets it. Its document, or None (another took it first, or it changed)."""
        return await self.store.run(_claim_multi, jid, key, holder, claimant)

    async def unfinished_multi(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """The multi-jobs with a job not sent yet (``queued``), each with all its jobs: after a
        restart they go on."""
        return await self.store.run(_unfinished_multi)

    async def unfinished_multi_docs(self) -> list[dict[str, Any]]:
        """The multi-jobs with a job not sent yet, without their jobs (looked at every few
        seconds in a cluster: a long sequence's thousand jobs are not read each time)."""
        return await self.store.run(_unfinished_multi_docs)


# Built once: SQLAlchemy then finds their compiled form in its cache without rebuilding them.
_GET = sa.select(jobs.c.doc).where(jobs.c.jid == sa.bindparam("jid"))
_DELETE = jobs.delete().where(jobs.c.jid == sa.bindparam("jid"))
_OF_CLIENT = (sa.select(jobs.c.doc).where(jobs.c.client_id == sa.bindparam("client_id"))
              .order_by(jobs.c.created.desc(), jobs.c.jid))
_RUNNING_OF = sa.select(jobs.c.doc, jobs.c.sent_to).where(
    jobs.c.client_id == sa.bindparam("client_id"), jobs.c.status == "running")
_OF_MULTI = (sa.select(jobs.c.doc).where(jobs.c.multi_job_id == sa.bindparam("multi_job_id"))
             .order_by(jobs.c.created, jobs.c.jid))
_MULTI_STATUS = (jobs.c.multi_job_id == sa.bindparam("multi_job_id"),
                 jobs.c.status.in_(sa.bindparam("statuses", expanding=True)))
_OF_MULTI_STATUS = sa.select(jobs.c.doc).where(*_MULTI_STATUS).order_by(jobs.c.created, jobs.c.jid)
_COUNT_OF_MULTI_STATUS = sa.select(sa.func.count()).select_from(jobs).where(*_MULTI_STATUS)
_PAGE_OF_MULTI_STATUS = {
    descending: (sa.select(jobs.c.doc).where(*_MULTI_STATUS)
                 .order_by(jobs.c.jid.desc() if descending else jobs.c.jid)
                 .limit(sa.bindparam("limit")).offset(sa.bindparam("offset")))
    for descending in (False, True)}
_QUEUED_MULTI = sa.select(jobs.c.multi_job_id).where(jobs.c.status == QUEUED).distinct()
_CLIENTS_RUNNING = sa.select(jobs.c.client_id).where(jobs.c.status == "running").distinct()
_GET_MULTI = sa.select(multi_jobs.c.doc).where(multi_jobs.c.jid == sa.bindparam("jid"))
_ALL_MULTI = sa.select(multi_jobs.c.doc).order_by(multi_jobs.c.created.desc(), multi_jobs.c.jid)


# -- in the store's transaction ---------------------------------------------------------------------

def _job_row(job: dict[str, Any], created: float, sent_to: str | None = None) -> dict[str, Any]:
    return {"jid": job["jid"], "client_id": job["client_id"], "multi_job_id": job.get("multi_job_id"),
            "created": created, "status": job.get("status"), "doc": json.dumps(job),
            "sent_to": sent_to}


_EXCLUDED = sa.literal_column("excluded.status")
_NOT_BACKWARDS = sa.or_(jobs.c.status.is_(None), jobs.c.status == QUEUED,
                        sa.and_(jobs.c.status == "running", _EXCLUDED != QUEUED),
                        sa.and_(_EXCLUDED != "running", _EXCLUDED != QUEUED))
"""A job never goes back: a final job (every status but ``queued`` and ``running`` is) is never
made ``running`` or ``queued`` again, a running one never ``queued``, whichever node or
connection writes last. (Equalities, not ``IN``: an expanding ``IN`` is re-rendered at every
execution.)"""


def _prepare(write: tuple[str, Any, float, str | None]) -> tuple[str, Any]:
    """On the event loop, when the write's turn comes: the row as the job is now."""
    op, value, created, sent_to = write
    return (op, _job_row(value, created, sent_to) if op == "save" else value)


def _write_jobs(conn: sa.Connection, writes: list[tuple[str, Any]]) -> None:
    saves = [row for op, row in writes if op == "save"]
    if saves:
        _save_jobs(conn, saves)
    deletes = [{"jid": jid} for op, jid in writes if op == "delete"]
    if deletes:
        conn.execute(_DELETE, deletes[0] if len(deletes) == 1 else deletes)


def _save_jobs(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    # A job is inserted once, then only its document (and status) change. One row is executed
    # as such: a list of parameters is an executemany, whose statement is built per call.
    conn.execute(upsert(conn, jobs, ["jid"], ["doc", "status", "sent_to"], where=_NOT_BACKWARDS),
                 rows[0] if len(rows) == 1 else rows)


def _running(conn: sa.Connection, client_id: str) -> list[tuple[dict[str, Any], str | None]]:
    return [(json.loads(doc), sent_to)
            for doc, sent_to in conn.execute(_RUNNING_OF, {"client_id": client_id})]


def _create_multi(conn: sa.Connection, multi: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    _save_multi(conn, multi)
    if rows:
        _save_jobs(conn, rows)


def _page_of_multi(conn: sa.Connection, params: dict[str, Any], descending: bool,
                   limit: int | None, offset: int) -> tuple[list[dict[str, Any]], int]:
    count = conn.execute(_COUNT_OF_MULTI_STATUS, params).scalar_one()
    page = _PAGE_OF_MULTI_STATUS[descending]
    rows = conn.execute(page, {**params, "limit": 1 << 62 if limit is None else limit,
                               "offset": offset})
    return [json.loads(doc) for (doc,) in rows], count


def _unfinished_multi(conn: sa.Connection) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    return [(multi, _docs(conn, _OF_MULTI, {"multi_job_id": multi["jid"]}))
            for multi in _unfinished_multi_docs(conn)]


def _unfinished_multi_docs(conn: sa.Connection) -> list[dict[str, Any]]:
    found = []
    for (multi_jid,) in conn.execute(_QUEUED_MULTI).all():
        if multi_jid is not None:
            found += _docs(conn, _GET_MULTI, {"jid": multi_jid})
    return found


def _claim_multi(conn: sa.Connection, jid: str, key: str, holder: str,
                 claimant: str) -> dict[str, Any] | None:
    row = conn.execute(_GET_MULTI, {"jid": jid}).first()
    if row is None:
        return None
    doc = json.loads(row[0])
    if doc.get(key) != holder:
        return None
    doc[key] = claimant
    claimed = conn.execute(multi_jobs.update()
                           .where(multi_jobs.c.jid == jid, multi_jobs.c.doc == row[0])
                           .values(doc=json.dumps(doc)))
    return doc if claimed.rowcount == 1 else None


def _save_multi(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(upsert(conn, multi_jobs, ["jid"], ["doc"]), row)


def _execute(conn: sa.Connection, stmt: sa.Executable, params: dict[str, Any]) -> None:
    conn.execute(stmt, params)


def _docs(conn: sa.Connection, stmt: sa.Select[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(doc) for (doc,) in conn.execute(stmt, params)]


def _texts(conn: sa.Connection, stmt: sa.Select[Any], params: dict[str, Any]) -> list[str]:
    return list(conn.execute(stmt, params).scalars())
