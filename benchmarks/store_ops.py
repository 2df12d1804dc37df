#!/usr/bin/env python3
"""The store's hot operations, per transaction, against the 0.1 store in the same run.

    .venv/bin/python benchmarks/store_ops.py                 # SQLite (both drivers)
    .venv/bin/python benchmarks/store_ops.py --postgresql    # and a throw-away PostgreSQL

What a job costs the store (the commands plugin saves each job three times, and reads it back
when a result arrives after a restart) and what a client's connection costs (its record saved):
``JobStore.save``, ``JobStore.get`` and ``Store.save_client`` of the current code, called one
after the other (latency: each is awaited before the next) and 200 at once (throughput: many
agents answering together), on

* ``0.1``: the baseline, the store of rportd 0.1 (one sqlite3 connection in one worker thread,
  the same SQL), re-created here as it was;
* ``sqlite``: the current store's default (SQLAlchemy Core, sqlite3 in the store's thread);
* ``aiosqlite``: the current store with ``sqlite+aiosqlite://`` (SQLAlchemy's async engine);
* ``postgresql`` (``--postgresql``): a PostgreSQL started for the run (tests/services.py) on
  loopback, durability on (unlike the tests' server).

Each figure is microseconds per operation (median of ``--rounds`` rounds), wall clock and CPU
time of the process (loop and store threads), then its ratio to 0.1's. A benchmark, not a test: it asserts nothing. Runs on uvloop, as rportd does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rport.core.store import Store  # noqa: E402
from rport.plugins.commands.jobs import SCHEMA as JOBS_SCHEMA, JobStore, new_job  # noqa: E402


class Store01:
    """rportd 0.1's store (core/store.py and plugins/commands/jobs.py at 6da8eda), unchanged."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS clients (id TEXT PRIMARY KEY, record TEXT NOT NULL, disconnected_at REAL);
    CREATE TABLE IF NOT EXISTS jobs (
        jid TEXT PRIMARY KEY, client_id TEXT NOT NULL, multi_job_id TEXT, created REAL NOT NULL,
        doc TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS jobs_client ON jobs (client_id, created);
    CREATE INDEX IF NOT EXISTS jobs_multi ON jobs (multi_job_id, created);
    """

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rport-store")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(self.SCHEMA)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def save_client(self, client_id: str, record: dict[str, Any], at: float | None) -> None:
        text = json.dumps(record, separators=(",", ":"))

        def write() -> None:
            with self._db:
                self._db.execute(
                    "INSERT INTO clients (id, record, disconnected_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET record=excluded.record, "
                    "disconnected_at=excluded.disconnected_at", (client_id, text, at))
        await self._call(write)

    async def save(self, job: dict[str, Any]) -> None:
        text = json.dumps(job)

        def write() -> None:
            with self._db:
                self._db.execute(
                    "INSERT INTO jobs (jid, client_id, multi_job_id, created, doc) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(jid) DO UPDATE SET doc=excluded.doc",
                    (job["jid"], job["client_id"], job.get("multi_job_id"), time.time(), text))
        await self._call(write)

    async def get(self, jid: str) -> dict[str, Any] | None:
        row = await self._call(lambda: self._db.execute("SELECT doc FROM jobs WHERE jid=?", (jid,)).fetchone())
        return json.loads(row[0]) if row else None

    async def close(self) -> None:
        await self._call(self._db.close)
        self._executor.shutdown()


class Current:
    """The current store and the commands plugin's JobStore on it."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)
        self.jobs = JobStore(self.store)

    async def open(self) -> "Current":
        await self.store.open({"commands": JOBS_SCHEMA})
        return self

    async def save_client(self, client_id: str, record: dict[str, Any], at: float | None) -> None:
        await self.store.save_client(client_id, record, at)

    async def save(self, job: dict[str, Any]) -> None:
        await self.jobs.save(job)

    async def get(self, jid: str) -> dict[str, Any] | None:
        return await self.jobs.get(jid)

    async def close(self) -> None:
        await self.store.close()


RECORD = {"id": "bench", "name": "bench", "os": "Linux", "tags": ["a", "b"], "labels": {"k": "v"},
          "ipv4": ["10.0.0.1"], "cpu_model_name": "x" * 40, "mem_total": 8 << 30}


def jobs(n: int) -> list[dict[str, Any]]:
    return [new_job(jid=str(uuid.uuid4()), status="running", client_id=f"c{i % 50}",
                    client_name="bench", command="/usr/bin/date", created_by="admin",
                    result={"stdout": "x" * 200, "stderr": "", "summary": ""})
            for i in range(n)]


async def timed(ops: list[Callable[[], Awaitable[Any]]], concurrent: bool) -> tuple[float, float]:
    """Microseconds per operation: wall clock, and CPU time of this process (every thread)."""
    start, cpu = time.perf_counter(), time.process_time()
    if concurrent:
        await asyncio.gather(*(op() for op in ops))
    else:
        for op in ops:
            await op()
    return ((time.perf_counter() - start) / len(ops) * 1e6,
            (time.process_time() - cpu) / len(ops) * 1e6)


async def measure(store: Any, n: int) -> dict[str, tuple[float, float]]:
    batch = jobs(n)
    out = {}
    out["job save, one at a time"] = await timed([lambda j=j: store.save(j) for j in batch], False)
    out["job save, 200 at once"] = await timed([lambda j=j: store.save(j) for j in jobs(200)], True)
    out["job get, one at a time"] = await timed([lambda j=j: store.get(j["jid"]) for j in batch], False)
    out["client save, one at a time"] = await timed(
        [lambda i=i: store.save_client(f"c{i}", RECORD, None) for i in range(n)], False)
    return out


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rport-store-bench-"))
    pg = None
    async def old(r: int) -> Store01:
        return Store01(tmp / f"old-{r}.db")

    backends: dict[str, Callable[[int], Awaitable[Any]]] = {
        "0.1": old,
        "sqlite": lambda r: Current(f"sqlite:///{tmp / f'new-{r}.db'}").open(),
        "aiosqlite": lambda r: Current(f"sqlite+aiosqlite:///{tmp / f'aio-{r}.db'}").open(),
    }
    if args.postgresql:
        from tests.services import PostgreSQL

        pg = PostgreSQL()
        pg.start()
        with __import__("psycopg").connect(pg.url("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = on")
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
            conn.execute("SELECT pg_reload_conf()")
        backends["postgresql"] = lambda r: Current(pg.create_database("bench")).open()
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name in backends}
    try:
        for r in range(args.rounds):  # interleaved, so that load from others hits every backend
            for name, make in backends.items():
                store = await make(r)
                try:
                    for op, value in (await measure(store, args.ops)).items():
                        figures[name].setdefault(op, []).append(value)
                finally:
                    await store.close()
    finally:
        if pg is not None:
            pg.stop()
    print(f"{args.ops} operations per figure, median of {args.rounds} rounds; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    names = list(backends)
    for index, what in ((0, "wall clock"), (1, "CPU (all threads)")):
        print(f"\n{'µs per operation, ' + what:34}" + "".join(f"{n:>20}" for n in names))
        for op in figures["0.1"]:
            base = statistics.median(f[index] for f in figures["0.1"][op])
            cells = []
            for name in names:
                value = statistics.median(f[index] for f in figures[name][op])
                cells.append(f"{value:9.0f} ({value / base:4.2f}x)")
            print(f"{op:34}" + "".join(f"{c:>20}" for c in cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=1000, help="operations per figure (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--postgresql", action="store_true", help="also a throw-away PostgreSQL")
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
