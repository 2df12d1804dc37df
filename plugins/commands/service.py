"""Running commands from the server: one client (RPort §1.4), many clients sequentially or
concurrently with abort_on_error, results from agents (also late ones, after a reconnect or a
server restart), live output and cancellation.

A multi-client job is answered only once it and a ``queued`` job for each of its clients are
committed, and each job is committed ``running`` before its command is sent. After a restart
(even a kill), the multi-jobs with queued jobs go on (:meth:`CommandService.resume`): queued jobs
are sent once their clients have reconnected (or fail saying they did not within
``[plugins.commands] resume_wait``); a sequence first waits for the outcome of its job that
was running."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
import uuid
from collections import Counter
from typing import Any, Callable, Mapping

import attrs

from rport.core.plugin import ApiError, AuditEvent, Client, RemoteError, SessionClosed

from .jobs import FINAL, QUEUED, JobStore, new_job
from .live import LiveHub

log = logging.getLogger("rport.plugins.commands")

_INTERPRETER = re.compile(r"^[A-Za-z0-9_./+-]{1,255}$")
SINGLE_KEYS = {"command", "interpreter", "cwd", "is_sudo", "timeout_sec"}
MULTI_KEYS = SINGLE_KEYS | {"client_ids", "group_ids", "tags", "labels", "execute_concurrently",
                            "abort_on_error"}
NOT_CONNECTED = "client is not connected"


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def validate_command(body: Any, allowed: set[str], default_timeout: int) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON",
                       detail="the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON",
                       detail=f'json: unknown field "{unknown[0]}"')
    command = body.get("command")
    if command is not None and not isinstance(command, str):
        raise _invalid_json("command must be a string")
    if not command or not command.strip():
        raise ApiError(400, "Command cannot be empty.", code="ERR_CODE_EMPTY_COMMAND")
    interpreter = body.get("interpreter") or ""
    if not isinstance(interpreter, str) or (interpreter and not _INTERPRETER.match(interpreter)):
        raise ApiError(400, "Invalid interpreter.", code="ERR_CODE_INVALID_INTERPRETER",
                       detail="an interpreter name (bash, python3, ...) or an absolute path")
    cwd = body.get("cwd") or ""
    timeout = body.get("timeout_sec") or 0
    is_sudo = _flag(body, "is_sudo", False)
    if not isinstance(cwd, str):
        raise _invalid_json("cwd must be a string")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not -INT64 <= timeout < INT64:
        raise _invalid_json("timeout_sec must be a whole number of seconds (64-bit)")
    for name, text in (("command", command), ("cwd", cwd), ("interpreter", interpreter)):
        if "\0" in text:  # the OS would cut the text there: not what was asked to run
            raise _invalid_json(f"{name} must not contain a NUL character")
    return {"command": command, "interpreter": interpreter or "/bin/sh", "cwd": cwd,
            "is_sudo": is_sudo, "timeout_sec": timeout if timeout > 0 else default_timeout}


INT64 = 1 << 63

RUN_REQUEST = {False: "run_cmd", True: "run_script"}
"""The agent's request that starts a job: a command, or a script (the scripts plugin's, which
applies ``[remote-scripts]``; an agent without it refuses the script)."""


def _invalid_json(detail: str) -> ApiError:
    return ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=detail)


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    """A boolean field: true or false, or null/absent for the default (as Go decodes it); a
    string such as "false" is refused rather than read as true."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid_json(f"{name} must be true or false")
    return value


@attrs.frozen
class JobFinished:
    """A job got its final status (in a cluster: on the node whose agent sent the result;
    shared, so that the node that started the job, and waits on it, learns it)."""

    jid: str


@attrs.frozen
class MultiJobCancelled:
    """In a cluster: a multi-client job was cancelled through a node that does not run it."""

    jid: str
    user: str


NODE = "_node"
"""In a cluster, the multi-job's key naming the node that runs it (not shown by the API)."""
TAKE_OVER_EVERY = 2.0
"""Seconds between two looks for multi-jobs of gone nodes (a cluster)."""

ADOPTED = 4096
"""Jobs of other nodes whose output this node's agents send, remembered (bounded)."""


class CommandService:
    def __init__(self, server: Any, *, resume_wait: float = 60.0) -> None:
        self.server = server
        self.resume_wait = resume_wait
        """After a restart, how long queued jobs wait for their clients to reconnect."""
        self.jobs = JobStore(server.store)
        self.live = LiveHub()
        self.default_timeout = server.config.server.run_remote_cmd_timeout_sec
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._active: dict[str, dict[str, Any]] = {}
        """Jobs not final yet: the one record that the API call and the agent's result update."""
        self._sent_on: dict[str, Any] = {}
        """The session each active job's run_cmd went out on (see :meth:`reconcile`)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._multi_tasks: dict[str, asyncio.Task[Any]] = {}
        """The running multi-client jobs (their sequence or fan-out), by jid."""
        self._cancelled: dict[str, str] = {}
        """Multi-client jobs being cancelled, with who cancelled them."""
        self._resume_until = 0.0
        """Until when (loop time) resumed jobs wait for their clients to reconnect."""
        self._connect_waiters: dict[str, list[asyncio.Future[None]]] = {}
        """Resumed jobs waiting for their client to connect, by client id."""
        self._unsettled: set[str] = set()
        """Clients that may have ``running`` jobs (loaded at start-up, added as jobs are sent,
        dropped when :meth:`reconcile` finds none): only their connections are reconciled, so
        that ten thousand agents connecting cost no query or request each. (In a cluster, jobs
        are sent by other nodes too: there the store says, see :meth:`reconcile`.)"""
        self.finished: Counter[str] = Counter()
        """Jobs that became final since start-up, by status (metrics)."""
        self._not_adopted: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- one client -----------------------------------------------------------------------------

    async def run_single(self, client_id: str, body: Any, user: str, *,
                         is_script: bool = False) -> dict[str, Any]:
        """``is_script``: the job of a script (the scripts plugin: ``command`` holds the decoded
        script, and the agent runs it with ``run_script``, within ``[remote-scripts]``)."""
        spec = validate_command(body, SINGLE_KEYS, self.default_timeout)
        client = self.server.clients.get(client_id)
        if client is None or not client.connected:
            raise ApiError(404, f'Active client with id="{client_id}" not found.',
                           code="ERR_CODE_CLIENT_NOT_FOUND")
        job = new_job(jid=str(uuid.uuid4()), status="running", client_id=client.id,
                      client_name=client.name, created_by=user, is_script=is_script, **spec)
        await self._start(client.id, job, raise_errors=True)
        return job

    async def _start(self, client_id: str, job: dict[str, Any], *, raise_errors: bool) -> None:
        """Send ``run_cmd`` and record the job. With ``raise_errors`` (single-client API) a
        refusal is an ApiError and no job is kept; otherwise the job records the failure. A
        job is committed ``running`` with the agent process it goes to before its command is
        sent, so that a restart does not send it blindly again; a command that went out without
        an answer (the connection broke, or the agent did not answer in time) may have started:
        its job stays ``running`` until the agent's result, or its next connection, says
        (:meth:`reconcile`)."""
        session = self.server.clients.session(client_id)
        client = self.server.clients.get(client_id)
        sent_to = client.session_id if client is not None else None
        error = ""
        if session is None:
            error = NOT_CONNECTED
        else:
            job["status"] = "running"
            self._unsettled.add(client_id)
            self._waiters.setdefault(job["jid"], asyncio.get_running_loop().create_future())
            self._active[job["jid"]] = job
            self._sent_on[job["jid"]] = session
            await self.jobs.save(job, sent_to)  # before it is sent, and before any answer
            try:
                answer = await session.request(RUN_REQUEST[bool(job["is_script"])], {
                    k: job[k] for k in ("jid", "command", "interpreter", "cwd", "is_sudo", "timeout_sec")})
                job["pid"] = job["pid"] or (answer or {}).get("pid")
                job["started_at"] = (answer or {}).get("started_at") or _now()
                error = (answer or {}).get("error") or ""
            except RemoteError as exc:
                if raise_errors:
                    await self._discard(job["jid"])
                    raise ApiError(409, f"client error: {exc}", code="ERR_CODE_CLIENT_ERROR") from None
                error = f"client error: {exc}"
            except (SessionClosed, TimeoutError) as exc:
                if raise_errors:
                    await self._discard(job["jid"])
                    raise ApiError(500, "Failed to execute remote command.", code="ERR_CODE_EXEC_FAILED",
                                   detail=str(exc) or "no answer from the client") from None
                # It went out: the agent may be running it (a "failed" here was a lie when its
                # process then finished). Its result, or its next connection, will tell.
                log.warning("job %s on %s: no answer to the command (%s); its outcome is known "
                            "once the agent sends the result or reconnects", job["jid"], client_id,
                            exc or "timeout")
        if error and job["status"] in ("running", QUEUED):
            job.update(status="failed", error=error, finished_at=_now())
            self._resolve(job)
        await self.jobs.save(job, sent_to if job["status"] == "running" else None)
        # A multi-job's jobs at debug (as RPort logs every job): its own line says it began, and
        # a fan-out to thousands of clients does not add a line per client.
        log.log(logging.DEBUG if job.get("multi_job_id") and not error else logging.INFO,
                "job %s on %s by %s: %s%s", job["jid"], client_id, job["created_by"],
                job["command"], f" ({error})" if error else "")

    async def _discard(self, jid: str) -> None:
        """A refused single-client command leaves no job (as RPort)."""
        self._waiters.pop(jid, None)
        self._active.pop(jid, None)
        self._sent_on.pop(jid, None)
        await self.jobs.delete(jid)

    # -- results from agents ----------------------------------------------------------------------

    async def on_result(self, client_id: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("jid"), str):
            raise RemoteError("invalid cmd_result")
        job = self._active.get(body["jid"]) or await self.jobs.get(body["jid"])
        if job is None or job["client_id"] != client_id:
            raise RemoteError(f"unknown job {body['jid']}")
        if job["status"] in FINAL and job["status"] != "unknown":
            return  # already final (e.g. a result delivered twice after a reconnect)
        if job["status"] == QUEUED:
            raise RemoteError(f"job {body['jid']} was not sent to this client")
        result = body.get("result") if isinstance(body.get("result"), dict) else {}
        job.update(
            status=body.get("status") if body.get("status") in FINAL else "failed",
            finished_at=body.get("finished_at"), error=str(body.get("error") or ""),
            pid=body.get("pid", job["pid"]),
            result={k: str(result.get(k) or "") for k in ("stdout", "stderr", "summary")})
        await self.jobs.save(job)
        self._resolve(job)

    def on_output(self, client_id: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("jid"), str):
            return
        job = self._active.get(body["jid"])
        if job is None or job["client_id"] != client_id:
            return  # not a running job of this agent: nobody may follow it, nothing is kept
        stream = "stderr" if body.get("stream") == "stderr" else "stdout"
        self.live.publish(body["jid"], {"event": stream, "data": str(body.get("data", ""))})

    def _resolve(self, job: dict[str, Any], *, announce: bool = True) -> None:
        if announce:  # (a job another node finished was counted and audited there)
            self._finished(job)
        self._active.pop(job["jid"], None)
        self._sent_on.pop(job["jid"], None)
        self.live.publish(job["jid"], {"event": "status", "data": job}, final=True)
        fut = self._waiters.pop(job["jid"], None)
        if fut is not None and not fut.done():
            fut.set_result(job)
        if announce and self.server.cluster is not None:
            self.server.bus.publish(JobFinished(job["jid"]))

    # -- in a cluster -------------------------------------------------------------------------------

    async def finished_elsewhere(self, jid: str) -> None:
        """Another node stored a job's final status: if it was started here, it is done here."""
        if jid not in self._active and jid not in self._waiters:
            return
        job = await self.jobs.get(jid)
        if job is not None and job["status"] != "running":
            self._resolve(job, announce=False)

    async def adopt(self, client_id: str, body: Any) -> None:
        """Output of a job this node did not start (another node started it on the agent this
        node holds): the job is followed here, as if started here, once the store says it is
        the agent's and running."""
        jid = body.get("jid") if isinstance(body, dict) else None
        if not isinstance(jid, str) or jid in self._active or jid in self._not_adopted:
            return
        job = await self.jobs.get(jid)
        if job is not None and job["client_id"] == client_id and job["status"] == "running":
            self._active.setdefault(jid, job)
            return
        self._not_adopted[jid] = None
        while len(self._not_adopted) > ADOPTED:
            self._not_adopted.popitem(last=False)

    async def cancel_multi_here(self, jid: str, user: str) -> None:
        if jid in self._multi_tasks:
            with contextlib.suppress(ApiError):
                await self.cancel_multi({"jid": jid}, user)

    async def _running_elsewhere(self, multi: dict[str, Any]) -> bool:
        """Whether a multi-client job is still running, from the store (another node runs it)."""
        jobs = await self.jobs.of_multi(multi["jid"])
        return any(j["status"] in ("running", QUEUED) for j in jobs)

    def _finished(self, job: dict[str, Any]) -> None:
        """A job ran and became final: counted (metrics), and its result recorded in the audit
        log as RPort does (``execute.done``, the multi-client job's id for its jobs)."""
        self.finished[job["status"]] += 1
        self.server.bus.publish(AuditEvent(
            "client.script" if job.get("is_script") else "client.command", "execute.done",
            username=job.get("created_by") or "",
            affected_id=job.get("multi_job_id") or job["jid"], client_ids=(job["client_id"],),
            response=job))

    @property
    def running(self) -> int:
        """Jobs started and not final yet (metrics)."""
        return len(self._active)

    async def wait(self, jid: str, timeout: float) -> dict[str, Any] | None:
        fut = self._waiters.get(jid)
        if fut is None:
            return await self.jobs.get(jid)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None

    async def reconcile(self, client: Client) -> None:
        """After an agent connected: the jobs still ``running`` here that the agent does not
        know. One sent to this very agent process that it never confirmed did not reach it (an
        agent knows every job it received until the server has its result): it is sent now.
        The others (the agent was restarted, or killed, while they ran) can never get a result:
        they fail, saying so, instead of staying ``running`` for ever (and a sequential job
        waiting on one goes on at once)."""
        session = client.session
        if session is None:
            return
        if client.id not in self._unsettled:
            # In a cluster other nodes send jobs too (through this node, or before the agent
            # moved here): the store says whether the client has any running.
            if self.server.cluster is None or not await self.jobs.running_of(client.id):
                self._wake_connected(client.id)
                return
            self._unsettled.add(client.id)
        try:
            answer = await session.request("cmd_jobs", None)
        except RemoteError:
            self._wake_connected(client.id)
            return  # an agent without the request (or commands disabled): nothing to compare
        except (SessionClosed, TimeoutError):
            return
        known = set((answer or {}).get("jids") or [])
        running = await self.jobs.running_of(client.id)
        if not running and not any(j.get("client_id") == client.id for j in self._active.values()):
            self._unsettled.discard(client.id)
        for job, sent_to in running:
            if job["jid"] in known:
                continue
            if self._sent_on.get(job["jid"]) is session:
                continue  # started on this very connection: its run_cmd may still be on its way
            job = self._active.get(job["jid"], job)
            if job["status"] != "running":
                continue  # its result came meanwhile
            confirmed = job.get("pid") is not None
            if not confirmed and sent_to is not None and sent_to == client.session_id:
                log.info("job %s on %s: the command did not reach the agent; sending it again",
                         job["jid"], client.id)
                task = asyncio.create_task(self._start(client.id, job, raise_errors=False))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                continue
            job.update(status="failed", finished_at=_now(), error=(
                "the agent was restarted while the command ran: its result is lost" if confirmed
                else "the agent did not confirm the command and, reconnected, does not know it: "
                     "it did not receive it, or it was restarted"))
            await self.jobs.save(job)
            self._resolve(job)
            log.warning("job %s on %s failed: the agent no longer knows it (%s)", job["jid"],
                        client.id, "restarted while the command ran" if confirmed
                        else "never confirmed it")
        self._wake_connected(client.id)

    async def cancel(self, client_id: str, jid: str) -> dict[str, Any]:
        job = await self.jobs.get(jid)
        if job is None or job["client_id"] != client_id:
            raise ApiError(404, f'Job[id="{jid}"] not found.', code="ERR_CODE_JOB_NOT_FOUND")
        session = self.server.clients.session(client_id)
        if job["status"] not in ("running", "unknown") or session is None:
            raise ApiError(409, "job is not running", code="ERR_CODE_JOB_NOT_RUNNING",
                           detail=f"status {job['status']}")
        try:
            answer = await session.request("cancel_cmd", {"jid": jid})
        except RemoteError as exc:  # the agent refused (e.g. one without the request)
            raise ApiError(409, f"client error: {exc}", code="ERR_CODE_CLIENT_ERROR") from None
        except (SessionClosed, TimeoutError) as exc:
            raise ApiError(500, "Failed to cancel the job.", code="ERR_CODE_CANCEL_FAILED",
                           detail=str(exc) or "no answer from the client") from None
        if not isinstance(answer, dict) or not answer.get("cancelled"):
            raise ApiError(409, "job is not running", code="ERR_CODE_JOB_NOT_RUNNING",
                           detail="the process has already ended")
        return job

    # -- many clients -----------------------------------------------------------------------------

    async def run_multi(self, body: Any, user: str,
                        check: Callable[[list[Client]], None] | None = None,
                        matchable: list[Client] | None = None, *, is_script: bool = False,
                        schedule_id: str | None = None) -> dict[str, Any]:
        """Start a multi-client job; ``check`` may refuse the resolved clients (it raises
        :class:`ApiError`, e.g. the caller's 403 for clients it may not use) before anything runs.
        Tags, labels and groups select among ``matchable`` (default: every client).
        ``is_script``: a script's (see :meth:`run_single`); ``schedule_id``: started by that
        schedule (the scheduler plugin), in the multi-job and each of its jobs. Returns once the
        multi-job and a ``queued`` job per client are committed."""
        spec = validate_command(body, MULTI_KEYS, self.default_timeout)
        clients = await self._targets(body, matchable)
        if check is not None:
            check(clients)
        concurrent = _flag(body, "execute_concurrently", False)
        abort_on_error = _flag(body, "abort_on_error", True)
        multi = {
            "jid": str(uuid.uuid4()), "started_at": _now(), "created_by": user,
            "schedule_id": schedule_id, "client_ids": body.get("client_ids"),
            "group_ids": body.get("group_ids"), "tags": body.get("tags"),
            "labels": body.get("labels"), "concurrent": concurrent,
            "abort_on_err": abort_on_error and not concurrent,
            "is_script": is_script, **spec,
            "target_client_ids": [c.id for c in clients],
        }
        if self.server.cluster is not None:
            multi[NODE] = self.server.cluster.node_id  # the node that runs it (see resume)
        jobs = [self._child(multi, c) for c in clients]
        await self.jobs.create_multi(multi, jobs)
        log.info("multi-job %s on %d client(s) by %s, %s: %s", multi["jid"], len(jobs), user,
                 "concurrently" if concurrent else "one after the other", multi["command"])
        self._launch(multi, jobs, resumed=False)
        return multi

    def _launch(self, multi: dict[str, Any], jobs: list[dict[str, Any]], *, resumed: bool) -> None:
        jid = multi["jid"]
        task = asyncio.create_task(self._execute(multi, jobs, resumed))
        self._tasks.add(task)
        self._multi_tasks[jid] = task

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            self._multi_tasks.pop(jid, None)
            self._cancelled.pop(jid, None)
            if not task.cancelled() and task.exception() is not None:
                log.error("multi-job %s stopped: %r", jid, task.exception())
        task.add_done_callback(done)

    async def resume(self) -> None:
        """At start-up: go on with the multi-jobs that still have ``queued`` jobs (rportd
        stopped, or was killed, before it sent them all). Their clients reconnect in the next
        seconds: a queued job waits up to ``resume_wait`` for its client. A sequence whose job
        was running first waits for that job's outcome (its result, or the agent's
        reconnection saying it does not know it). In a cluster a node goes on with the
        multi-jobs it ran (same ``node_id``); those of a node that is gone for good are taken
        over by another (:meth:`_take_over_loop`)."""
        self._unsettled.update(await self.jobs.clients_running())
        unfinished = await self.jobs.unfinished_multi()
        cluster = self.server.cluster
        if cluster is not None:  # each node goes on with its own (the others' still run them)
            unfinished = [(m, j) for m, j in unfinished if m.get(NODE) == cluster.node_id]
            task = asyncio.create_task(self._take_over_loop(TAKE_OVER_EVERY))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for multi, jobs in unfinished:
            self._go_on(multi, jobs, "after the restart")

    def _go_on(self, multi: dict[str, Any], jobs: list[dict[str, Any]], why: str) -> None:
        """Launch a multi-job again, from its stored jobs (see :meth:`resume`)."""
        loop = asyncio.get_running_loop()
        self._resume_until = max(self._resume_until, loop.time() + self.resume_wait)
        if not multi["concurrent"]:
            for job in jobs:
                if job["status"] == "running":
                    self._waiters.setdefault(job["jid"], loop.create_future())
        queued = sum(1 for job in jobs if job["status"] == QUEUED)
        log.info("multi-job %s goes on %s: %d of its %d jobs not sent yet",
                 multi["jid"], why, queued, len(jobs))
        self._launch(multi, jobs, resumed=True)

    async def _take_over_loop(self, every: float) -> None:
        """In a cluster, every ``every`` seconds: the multi-jobs with jobs not sent yet whose
        node has no heartbeat in the database any more (killed, or its machine gone) go on
        here. Every node looks; the store lets one claim each (:meth:`JobStore.claim_multi`),
        and a node that comes back later does not take it again (its id is no longer the
        multi-job's)."""
        cluster = self.server.cluster
        while True:
            await asyncio.sleep(every)
            try:
                orphans = [m for m in await self.jobs.unfinished_multi_docs()
                           if m.get(NODE) != cluster.node_id and m["jid"] not in self._multi_tasks]
                if not orphans:
                    continue
                live = await cluster.live_node_ids()
                for multi in orphans:
                    holder = multi.get(NODE)
                    if holder in live:
                        continue
                    claimed = await self.jobs.claim_multi(multi["jid"], NODE, holder, cluster.node_id)
                    if claimed is not None:  # (its jobs as they are now: some may have ended)
                        self._go_on(claimed, await self.jobs.of_multi(multi["jid"]),
                                    f"here: its node {holder} is gone")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database unreachable a while: the next round
                log.warning("multi-jobs of gone nodes not looked at: %s", exc)

    def _wake_connected(self, client_id: str) -> None:
        for fut in self._connect_waiters.pop(client_id, []):
            if not fut.done():
                fut.set_result(None)

    async def _until_connected(self, client_id: str) -> bool:
        """For a resumed job: until its client is connected (False if not by the deadline).
        Woken by the client's connection here; checked every second too (in a cluster it may
        connect to another node, which this one learns without an event)."""
        loop = asyncio.get_running_loop()
        while self.server.clients.session(client_id) is None:
            remaining = self._resume_until - loop.time()
            if remaining <= 0:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._connect_waiters.setdefault(client_id, []).append(fut)
            try:
                await asyncio.wait_for(fut, min(remaining, 1.0))
            except TimeoutError:
                continue
            finally:
                waiters = self._connect_waiters.get(client_id)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._connect_waiters[client_id]
        return True

    async def cancel_multi(self, multi: dict[str, Any], user: str) -> None:
        """Stop a multi-client job: no client is started any more (each gets a ``skipped`` job)
        and the running jobs are cancelled as :meth:`cancel` does."""
        jid = multi["jid"]
        if jid not in self._multi_tasks and self.server.cluster is not None \
                and await self._running_elsewhere(multi):
            self.server.bus.publish(MultiJobCancelled(jid, user))  # to the node that runs it
            return
        running = [j for j in await self.jobs.of_multi(jid) if j["status"] == "running"]
        if jid not in self._multi_tasks and not running:
            raise ApiError(409, "job is not running", code="ERR_CODE_JOB_NOT_RUNNING",
                           detail="every client of this multi-client job has finished")
        if jid in self._multi_tasks:  # the clients not started yet are not
            self._cancelled.setdefault(jid, user)
        log.info("multi-job %s cancelled by %s", jid, user)
        for job in running:
            try:
                await self.cancel(job["client_id"], job["jid"])
            except ApiError:
                pass  # ended meanwhile, or its client is gone: nothing left to stop

    async def resolve_targets(self, body: Mapping[str, Any],
                              matchable: list[Client] | None = None) -> list[Client]:
        """The clients that ``client_ids``/``group_ids``/``tags``/``labels`` of ``body`` name, as a
        multi-client job resolves them (for the scheduler plugin), or ApiError."""
        return await self._targets(body, matchable)

    async def _targets(self, body: Mapping[str, Any],
                       matchable: list[Client] | None = None) -> list[Client]:
        targeting = self.server.state.get("targeting")
        if targeting is not None:
            return await targeting.resolve(body, matchable)
        if any(body.get(k) for k in ("group_ids", "tags", "labels")):
            raise ApiError(400, "Targeting by group_ids, tags or labels is not available.",
                           code="ERR_CODE_TARGETING_DISABLED",
                           detail="group_ids, tags and labels need the targeting plugin, which is disabled")
        ids = body.get("client_ids")
        if not isinstance(ids, list) or not ids:
            raise ApiError(400, "Missing targeting parameters.", code="ERR_CODE_MISSING_TARGETS")
        clients = []
        for cid in ids:
            client = self.server.clients.get(str(cid))
            if client is None:
                raise ApiError(404, f'Client with id="{cid}" not found.', code="ERR_CODE_CLIENT_NOT_FOUND")
            clients.append(client)
        return clients

    def _child(self, multi: dict[str, Any], client: Client) -> dict[str, Any]:
        return new_job(jid=str(uuid.uuid4()), status=QUEUED, client_id=client.id,
                       client_name=client.name, created_by=multi["created_by"],
                       multi_job_id=multi["jid"], **{k: multi[k] for k in (
                           "command", "interpreter", "cwd", "is_sudo", "timeout_sec",
                           "is_script", "schedule_id")})

    async def _not_run(self, jobs: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
        """The queued ones of ``jobs`` become ``skipped`` with ``reason``."""
        skipped = [job for job in jobs if job["status"] == QUEUED]
        for job in skipped:
            job.update(status="skipped", finished_at=_now(), error=reason)
        if skipped:
            self.finished["skipped"] += len(skipped)
            await self.jobs.save_many(skipped)
        return skipped

    async def _dispatch(self, multi: dict[str, Any], job: dict[str, Any], resumed: bool) -> None:
        """Send one queued job of ``multi`` (skipped if the multi-job is being cancelled)."""
        if multi["jid"] not in self._cancelled and resumed:
            if not await self._until_connected(job["client_id"]):
                job.update(status="failed", finished_at=_now(), error=(
                    f"{NOT_CONNECTED} (rportd restarted before it sent the command, and the "
                    f"client did not reconnect within {self.resume_wait:g}s)"))
                await self.jobs.save(job)
                return
        if multi["jid"] in self._cancelled:
            await self._not_run([job], self._cancel_reason(multi))
            return
        await self._start(job["client_id"], job, raise_errors=False)
        if multi["jid"] in self._cancelled and job["status"] == "running":
            # cancelled while run_cmd was on its way: the agent did not know the job yet
            with contextlib.suppress(ApiError):
                await self.cancel(job["client_id"], job["jid"])

    def _cancel_reason(self, multi: dict[str, Any]) -> str:
        return f"not run: the multi-client job was cancelled by {self._cancelled[multi['jid']]}"

    async def _execute(self, multi: dict[str, Any], jobs: list[dict[str, Any]],
                       resumed: bool) -> None:
        if multi["concurrent"]:
            await asyncio.gather(*(self._dispatch(multi, job, resumed) for job in jobs
                                   if job["status"] == QUEUED))
            return
        for index, job in enumerate(jobs):
            if job["status"] == QUEUED:
                await self._dispatch(multi, job, resumed)
            if job["status"] == "running":
                done = await self.wait(job["jid"], job["timeout_sec"] + 60)
                job = done or job
            rest = jobs[index + 1:]
            if multi["jid"] in self._cancelled:
                await self._not_run(rest, self._cancel_reason(multi))
                return
            failed = job["status"] == "failed" and not str(job.get("error")).startswith(NOT_CONNECTED)
            if multi["abort_on_err"] and failed:
                skipped = await self._not_run(
                    rest, f"not run: the sequence was aborted after job {job['jid']} failed on "
                          f"{job['client_id']}")
                log.info("multi-job %s aborted after a failure on %s; %d client(s) skipped",
                         multi["jid"], job["client_id"], len(skipped))
                return

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.jobs.drain()
