"""Jobs (one command on one client) and multi-jobs (one command on many), RPort's fields, kept
in the server's SQLite store; a write is committed before the API reports it."""

from __future__ import annotations

import json
import time
from typing import Any

JOB_FIELDS = ("jid", "status", "finished_at", "client_id", "client_name", "command", "cwd",
              "interpreter", "pid", "started_at", "created_by", "timeout_sec", "multi_job_id",
              "schedule_id", "error", "result", "is_sudo", "is_script", "stream_result")
FINAL = ("successful", "failed", "unknown", "cancelled", "skipped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    jid TEXT PRIMARY KEY, client_id TEXT NOT NULL, multi_job_id TEXT, created REAL NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_client ON jobs (client_id, created);
CREATE INDEX IF NOT EXISTS jobs_multi ON jobs (multi_job_id, created);
CREATE TABLE IF NOT EXISTS multi_jobs (jid TEXT PRIMARY KEY, created REAL NOT NULL, doc TEXT NOT NULL);
"""


def new_job(**fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {name: None for name in JOB_FIELDS}
    job.update({"result": {"stdout": "", "stderr": "", "summary": ""}, "error": "",
                "is_sudo": False, "is_script": False, "stream_result": True, "cwd": "",
                "interpreter": "/bin/sh"})
    job.update(fields)
    return job


class JobStore:
    def __init__(self, store: Any) -> None:
        self.store = store

    async def open(self) -> None:
        await self.store.run(lambda db: db.executescript(_SCHEMA))

    async def save(self, job: dict[str, Any]) -> None:
        text = json.dumps(job)

        def write(db: Any) -> None:
            with db:
                db.execute(
                    "INSERT INTO jobs (jid, client_id, multi_job_id, created, doc) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(jid) DO UPDATE SET doc=excluded.doc",
                    (job["jid"], job["client_id"], job.get("multi_job_id"), time.time(), text))
        await self.store.run(write)

    async def save_many(self, jobs: list[dict[str, Any]]) -> None:
        rows = [(j["jid"], j["client_id"], j.get("multi_job_id"), time.time(), json.dumps(j)) for j in jobs]

        def write(db: Any) -> None:
            with db:
                db.executemany(
                    "INSERT INTO jobs (jid, client_id, multi_job_id, created, doc) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(jid) DO UPDATE SET doc=excluded.doc", rows)
        await self.store.run(write)

    async def delete(self, jid: str) -> None:
        def write(db: Any) -> None:
            with db:
                db.execute("DELETE FROM jobs WHERE jid=?", (jid,))
        await self.store.run(write)

    async def get(self, jid: str) -> dict[str, Any] | None:
        row = await self.store.run(
            lambda db: db.execute("SELECT doc FROM jobs WHERE jid=?", (jid,)).fetchone())
        return json.loads(row[0]) if row else None

    async def of_client(self, client_id: str) -> list[dict[str, Any]]:
        rows = await self.store.run(lambda db: db.execute(
            "SELECT doc FROM jobs WHERE client_id=? ORDER BY created DESC", (client_id,)).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def running_of(self, client_id: str) -> list[dict[str, Any]]:
        """The client's jobs still ``running``, without reading its whole history."""
        rows = await self.store.run(lambda db: db.execute(
            "SELECT doc FROM jobs WHERE client_id=? AND json_extract(doc, '$.status')='running'",
            (client_id,)).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def of_multi(self, multi_jid: str) -> list[dict[str, Any]]:
        rows = await self.store.run(lambda db: db.execute(
            "SELECT doc FROM jobs WHERE multi_job_id=? ORDER BY created, rowid", (multi_jid,)).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def save_multi(self, multi: dict[str, Any]) -> None:
        text = json.dumps(multi)

        def write(db: Any) -> None:
            with db:
                db.execute("INSERT INTO multi_jobs (jid, created, doc) VALUES (?,?,?) "
                           "ON CONFLICT(jid) DO UPDATE SET doc=excluded.doc",
                           (multi["jid"], time.time(), text))
        await self.store.run(write)

    async def get_multi(self, jid: str) -> dict[str, Any] | None:
        row = await self.store.run(
            lambda db: db.execute("SELECT doc FROM multi_jobs WHERE jid=?", (jid,)).fetchone())
        return json.loads(row[0]) if row else None

    async def all_multi(self) -> list[dict[str, Any]]:
        rows = await self.store.run(lambda db: db.execute(
            "SELECT doc FROM multi_jobs ORDER BY created DESC").fetchall())
        return [json.loads(r[0]) for r in rows]
