"""The audit log of one server: a writer that records AuditEvents in batches, a rotation task,
and the listing of ``GET /auditlog``.

Durability: the API answers before its entry is written. Events reach the writer through the
event bus and a bounded queue, and the writer commits them in batches (one transaction for
up to ``BATCH`` entries, gathered for ``LINGER``) within a tenth of a second. A clean stop writes everything queued; what a
crash (SIGKILL, power loss) catches in the queue is lost, and a queue that overflows (a
database far slower than the API for a long while) drops entries, logged and counted in the
metric ``rport_auditlog_entries_dropped_total``. RPort writes each entry before answering and
ignores a failed write (logged): a slow or failed audit write never fails an action here
either, and the actions themselves are not slowed down by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import record, rotation, store
from .config import AuditlogConfig
from .query import AuditQuery

log = logging.getLogger("rport.plugins.auditlog")

QUEUE = 10_000
BATCH = 500
LINGER = 0.05
"""Seconds the writer waits after an entry for more to come, so that a steady stream of
actions costs one transaction per batch, not one per entry (benchmarks/api_observation.py)."""


class AuditLog:
    def __init__(self, server: Any, cfg: AuditlogConfig) -> None:
        self.server = server
        self.cfg = cfg
        api = server.config.api
        self.rotation = api.audit_log_rotation
        self.period = rotation.PERIODS[self.rotation]
        self.obfuscate = api.use_ip_obfuscation
        self.archive_dir = server.data_dir / "auditlog"
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.archived = 0
        self.deleted = 0
        self._queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE)
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = False
        self._dropping_since = 0.0

    # -- writing ------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write_loop(), name="auditlog-writer"),
                       asyncio.create_task(self._rotate_loop(), name="auditlog-rotation")]

    async def submit(self, event: Any) -> None:
        """An AuditEvent from the bus (the subscriber): queued for the writer, or written at
        once when the writer has stopped (events the bus delivers while the server stops)."""
        if self._closed:
            await self._write([event])
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += len(event.client_ids) or 1
            now = time.monotonic()
            if now - self._dropping_since > 10:  # one line per 10 s of overflow, not per entry
                self._dropping_since = now
                log.error("audit log: %d entries queued, the database does not keep up: "
                          "entries are being dropped (%d so far)", QUEUE, self.dropped)

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.empty():
                await asyncio.sleep(LINGER)
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _hostname(self, client_id: str) -> str:
        client = self.server.clients.get(client_id)
        hostname = client.facts.get("hostname", "") if client is not None else ""
        return hostname if isinstance(hostname, str) and hostname != "unknown" else ""

    async def _write(self, events: list[Any]) -> None:
        rows: list[dict[str, Any]] = []
        for event in events:
            try:
                rows += record.rows(event, self._hostname, obfuscate_ip=self.obfuscate,
                                    max_chars=self.cfg.max_value_chars,
                                    max_items=self.cfg.max_value_items)
            except Exception:
                self.failed += 1
                log.exception("audit log: cannot record %r", event)
        if not rows:
            return
        try:
            await self.server.store.run(store.insert, rows)
        except Exception:
            self.failed += len(rows)
            log.exception("audit log: %d entries could not be written", len(rows))
        else:
            self.written += len(rows)

    async def flush(self) -> None:
        """Until everything queued so far is written."""
        await self._queue.join()

    async def close(self) -> None:
        """Write what is queued, then stop; later events are written one by one."""
        try:
            await asyncio.wait_for(self.flush(), 10)
        except TimeoutError:
            log.error("audit log: %d entries not written in time at shutdown", self._queue.qsize())
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- reading -------------------------------------------------------------------------------

    async def list(self, query: AuditQuery) -> tuple[list[dict[str, Any]], int]:
        rows, count = await self.server.store.run(store.select_page, query.where, query.order,
                                                  query.limit, query.offset)
        for row in rows:
            row["timestamp"] = record.timestamp_text(row["timestamp"])
        if query.fields is not None:
            rows = [{k: v for k, v in row.items() if k in query.fields} for row in rows]
        return rows, count

    # -- rotation ------------------------------------------------------------------------------

    async def _rotate_loop(self) -> None:
        while True:
            try:
                more = await self.rotate()
            except Exception:
                log.exception("audit log: rotation failed; next try in %gs",
                              self.cfg.check_interval)
                more = False
            await asyncio.sleep(1.0 if more else max(1.0, float(self.cfg.check_interval)))

    async def rotate(self, now: float | None = None) -> bool:
        """Rotate out what is older than a period or beyond max_entries; returns True if there
        may be more (the bounded run stopped early)."""
        cutoff = (time.time() if now is None else now) - self.period
        run = self.server.store.run
        for _ in range(rotation.MAX_BATCHES):
            rows = await run(store.outdated, cutoff, self.cfg.max_entries, rotation.BATCH)
            if not rows:
                break
            if self.cfg.archive:
                await asyncio.to_thread(rotation.write_archives, self.archive_dir, rows,
                                        self.rotation)
            deleted = await run(store.delete, [row["id"] for row in rows])
            if self.cfg.archive:
                self.archived += deleted
            else:
                self.deleted += deleted
            log.info("audit log: %d entries %s (older than %s or beyond %d entries)", deleted,
                     f"archived to {self.archive_dir}" if self.cfg.archive else "deleted",
                     record.timestamp_text(cutoff), self.cfg.max_entries)
            if len(rows) < rotation.BATCH:
                break
        else:
            return True
        if self.cfg.archive:
            for path in await asyncio.to_thread(rotation.prune_archives, self.archive_dir,
                                                self.cfg.keep_archives):
                log.info("audit log: archive %s deleted (keep_archives = %d)", path.name,
                         self.cfg.keep_archives)
        return False
