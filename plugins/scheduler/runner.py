"""The scheduler's loop: sleeps until the earliest due run (or a change), claims each due run
in the store (so that with several servers on one database only one starts it) and starts it as
a multi-client job of the commands plugin. A run missed by more than ``MISSED_GRACE`` (the
server was down) is skipped, not caught up, as RPort's scheduler does after a restart; a
schedule without ``overlaps`` skips a run while its previous one is in progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from rport.core.plugin import ApiError, AuditEvent

from . import store
from .cron import CronError, parse
from .model import command_body

log = logging.getLogger("rport.plugins.scheduler")

MAX_SLEEP = 30.0
"""The loop looks at the store at least this often (schedules another server changed)."""
MISSED_GRACE = 60.0
"""A run more than this late is a missed run: skipped, and the next one scheduled."""


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Scheduler:
    def __init__(self, server: Any) -> None:
        self.server = server
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()

    @property
    def commands(self) -> Any:
        return self.server.state["commands"]

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    def changed(self) -> None:
        """A schedule was created, replaced or deleted: look at the store again now."""
        self._wake.set()

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # before reading: a change made meanwhile wakes the next wait
            try:
                later = await self._tick()
            except Exception:
                log.exception("scheduler: reading the schedules failed; trying again shortly")
                later = None
            timeout = MAX_SLEEP if later is None else min(MAX_SLEEP, max(0.0, later - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _tick(self) -> float | None:
        now = time.time()
        due, later = await self.server.store.run(store.due, now)
        for schedule_id, text, expected in due:
            try:
                spec = parse(text)
            except CronError as exc:  # stored by an older version, or edited in the database
                log.error("schedule %s: %s; it is not run", schedule_id, exc)
                following = now + 86400.0
            else:
                following = spec.next_after(now)
            if not await self.server.store.run(store.claim, schedule_id, expected, following):
                continue  # another server claimed this run
            later = following if later is None else min(later, following)
            if now - expected > MISSED_GRACE:
                log.warning("schedule %s missed its run at %s (the server was not running); "
                            "next run at %s", schedule_id, _iso(expected), _iso(following))
                continue
            task = asyncio.create_task(self._run(schedule_id))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)
        return later

    async def _run(self, schedule_id: str) -> None:
        record = await self.server.store.run(store.get, schedule_id)
        if record is None:
            return  # deleted meanwhile
        details = record["details"]
        timeout = int(details.get("timeout_sec") or 0) or self.commands.default_timeout
        if not details.get("overlaps") and record["last_jid"] and \
                await self.in_progress(record["last_jid"], timeout):
            log.info("Skipping non-overlapping schedule %s, because it has jobs in progress.",
                     schedule_id)
            return
        log.info("Running schedule: %s (%s)", schedule_id, record["name"] or record["schedule"])
        body = command_body(record["type"], details)
        try:
            multi = await self.commands.run_multi(
                body, record["created_by"], is_script=record["type"] == "script",
                schedule_id=schedule_id)
        except ApiError as exc:
            log.error("Error running schedule %s: %s", schedule_id,
                      "; ".join(f"{i.title} {i.detail}".strip() for i in exc.items))
            return
        except Exception:
            log.exception("Error running schedule %s", schedule_id)
            return
        await self.server.store.run(store.set_last_jid, schedule_id, multi["jid"])
        self.server.bus.publish(run_started(record, body, multi))

    async def in_progress(self, jid: str, timeout: float) -> bool:
        """Whether the multi-client job ``jid`` is still running: one of its jobs runs (and has
        not passed its timeout), or a sequential run has clients left to start (within the time
        they may take). Read from the store, so it holds across restarts and servers."""
        jobs_store = self.commands.jobs
        multi = await jobs_store.get_multi(jid)
        if multi is None:
            return False
        jobs = await jobs_store.of_multi(jid)
        now = time.time()
        started = _epoch(multi.get("started_at")) or now
        for job in jobs:
            if job.get("status") == "running" and \
                    now - (_epoch(job.get("started_at")) or started) <= timeout:
                return True
        targets = len(multi.get("target_client_ids") or ())
        # (clients not started yet have a "queued" job, or none in a store of older versions)
        left = targets - len(jobs) + sum(1 for job in jobs if job.get("status") == "queued")
        return left > 0 and now - started <= targets * (timeout + 60)


def run_started(record: dict[str, Any], body: dict[str, Any],
                multi: dict[str, Any]) -> AuditEvent:
    """A scheduled run in the audit log, as the API records a multi-client job it starts
    (``client.command``/``client.script`` ``execute.start``, the multi-client job's id, an
    entry per client), for the schedule's creator; the request names the schedule. Each job's
    end follows as ``execute.done`` (the commands plugin), with the same id."""
    return AuditEvent(
        "client.script" if record["type"] == "script" else "client.command", "execute.start",
        username=record["created_by"], affected_id=multi["jid"],
        client_ids=tuple(multi["target_client_ids"]),
        request={"schedule_id": record["id"], "schedule": record["schedule"],
                 "name": record["name"], **body},
        response={"jid": multi["jid"]})


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")
