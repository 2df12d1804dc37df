"""commands, server side: RPort's command routes, the agents' result and output messages, and a
live stream of a job's output (server-sent events). Hook implementations only; see
:mod:`.service`."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import attrs

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from rport.core.plugin import (
    ApiError,
    Audit,
    ClientConnected,
    ListQuery,
    RemoteError,
    ResourceSpec,
    apply_list_query,
    check_client_access,
    data_response,
    StoreSchema,
    hookimpl,
    parse_list_query,
    parse_time,
    read_json,
    visible_clients,
)

from . import declarations as d
from .config import CommandsConfig
from .jobs import JOB_FIELDS, SCHEMA
from .service import CommandService, JobFinished, MultiJobCancelled

NAME = "commands"
JOBS = ResourceSpec(name="jobs", sort_fields={"jid", "status", "finished_at", "started_at"},
                    default_sort="-finished_at", filter_fields={"jid", "status", "command"},
                    fields=JOB_FIELDS, default_fields=("jid", "status", "finished_at"),
                    page_default=100, page_max=1000, resource_aliases={"commands", "scripts"})
MULTI_JOBS = ResourceSpec(
    name="jobs", sort_fields={"jid", "status", "finished_at", "started_at", "client_id",
                              "created_by", "schedule_id"},
    default_sort="-finished_at",
    filter_fields={"jid", "status", "command", "client_id", "created_by", "schedule_id"},
    fields=JOB_FIELDS, default_fields=("jid", "status", "finished_at"),
    page_default=100, page_max=1000, resource_aliases={"commands", "scripts"})
"""The jobs of a multi-client job, as RPort lists them (its ``JobSupportedSorts``, ``...Filters``
and ``JobListDefaultFields``, 100 a page by default, 1000 at most): e.g. how many are still
running, ``filter[status]=queued,running&sort=jid&page[limit]=1``, in ``meta.count``."""
MULTI_FIELDS = ("jid", "started_at", "created_by", "schedule_id")
MULTI = ResourceSpec(name="commands", sort_fields=MULTI_FIELDS, default_sort="-started_at",
                     filter_fields={"jid", "created_by", "schedule_id"}, fields=MULTI_FIELDS,
                     page_default=100, page_max=1000,
                     time_filters={"started_at": frozenset(("since", "until"))})
"""``GET /commands``, as RPort lists multi-client jobs (its ``MultiJobSupportedSorts`` and
``...Filters``, ``started_at`` as ``[since]``/``[until]``; 100 a page by default, 1000 at most),
newest first."""
HEARTBEAT = 15.0
MAX_RESULT = 256 * 1024 * 1024  # two outputs of up to send_back_limit each, JSON-escaped


def _statuses(query: ListQuery) -> set[str] | None:
    """The statuses that a list's filters allow, if they filter on the status alone (plain
    values: statuses are lower-case words), for the database to choose the rows; else None."""
    allowed: set[str] | None = None
    for f in query.filters:
        if f.columns != ("status",) or f.match_all or any("*" in v for v in f.values):
            return None
        values = {v.lower() for v in f.values}
        allowed = values if allowed is None else allowed & values
    return allowed


def _started_within(row: dict[str, Any], query: ListQuery) -> bool:
    try:
        started = parse_time(str(row.get("started_at") or ""))
    except ValueError:
        return False
    return all(any(started >= t if op == "since" else started <= t for t in times)
               for _, op, times in query.times)


def service(server: Any) -> CommandService:
    return server.state[NAME]


@hookimpl
def rport_config_class() -> type:
    return CommandsConfig


@hookimpl
async def rport_server_startup(server: Any) -> None:
    cfg = server.plugin_config(NAME)
    service = server.state[NAME] = CommandService(server, resume_wait=cfg.resume_wait)
    server.bus.share(JobFinished)
    server.bus.share(MultiJobCancelled)
    await service.resume()  # multi-client jobs that rportd stopped before sending them all


@hookimpl
def rport_store_schema() -> StoreSchema:
    return SCHEMA


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    if NAME in server.state:
        await service(server).close()


@hookimpl
def rport_register_subscribers(server: Any, register: Any) -> None:
    async def connected(event: ClientConnected) -> None:
        client = event.live_client(server)
        if client is not None:
            await service(server).reconcile(client)

    async def finished(event: JobFinished) -> None:
        await service(server).finished_elsewhere(event.jid)

    async def multi_cancelled(event: MultiJobCancelled) -> None:
        await service(server).cancel_multi_here(event.jid, event.user)

    register(ClientConnected, connected)
    register(JobFinished, finished)
    register(MultiJobCancelled, multi_cancelled)


@hookimpl
def rport_register_handlers(server: Any, register: Any) -> None:
    async def cmd_result(session: Any, body: Any) -> Any:
        await service(server).on_result(session.context["client_id"], body)
        return {"ok": True}

    async def cmd_output(session: Any, body: Any) -> Any:
        if server.cluster is not None:  # a job another node started on this node's agent
            await service(server).adopt(session.context["client_id"], body)
        service(server).on_output(session.context["client_id"], body)
        return None

    async def cmd_result_stream(session: Any, stream: Any) -> None:
        await stream.accept()
        data = bytearray()
        while chunk := await stream.read():
            data += chunk
            if len(data) > MAX_RESULT:
                stream.reset(f"result larger than {MAX_RESULT} bytes")
                return
        try:
            await service(server).on_result(session.context["client_id"], json.loads(data))
            answer = b"ok"
        except ValueError as exc:
            answer = f"invalid result: {exc}".encode()
        except RemoteError as exc:
            answer = str(exc).encode()
        await stream.write(answer)
        await stream.write_eof()

    register.request("cmd_result", cmd_result)
    register.stream("cmd_result", cmd_result_stream)
    register.request("cmd_output", cmd_output)


async def _job(server: Any, client_id: str, jid: str) -> dict[str, Any]:
    job = await service(server).jobs.get(jid)
    if job is None or job["client_id"] != client_id:
        raise ApiError(404, f'Job[id="{jid}"] not found.', code="ERR_CODE_JOB_NOT_FOUND")
    return job


async def _events(server: Any, client_id: str, jid: str) -> AsyncIterator[bytes]:
    svc = service(server)
    queue, earlier = svc.live.follow(jid)  # follow first, so the final status cannot slip past
    try:
        job = await _job(server, client_id, jid)
        yield _sse("job", job)
        if job["status"] != "running":
            return
        for event in earlier:  # what it wrote before we attached (its last REPLAY_CHARS)
            yield _sse(event["event"], event["data"])
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            yield _sse(event["event"], event["data"])
            if event["event"] == "status":
                return
    finally:
        svc.live.unfollow(jid, queue)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    max_body = server.config.api.max_request_bytes

    async def run(request: Request) -> Response:
        """Run a command on one client; returns the job id once the client started it."""
        body = await read_json(request, max_body)
        job = await service(server).run_single(request.path_params["client_id"], body,
                                               request.state.user.username)
        return data_response({"jid": job["jid"]})

    async def list_jobs(request: Request) -> Response:
        """The jobs of one client (fields[jobs], sort, filter, page)."""
        query = parse_list_query(request.query_params, JOBS)
        jobs = await service(server).jobs.of_client(request.path_params["client_id"])
        rows, count = apply_list_query(jobs, query, JOBS)
        return data_response(rows, count=count)

    async def get_job(request: Request) -> Response:
        """One job with its status and result."""
        return data_response(await _job(server, request.path_params["client_id"],
                                         request.path_params["jid"]))

    async def cancel(request: Request) -> Response:
        """Cancel a running job: its process group is terminated."""
        job = await service(server).cancel(request.path_params["client_id"], request.path_params["jid"])
        return data_response({"jid": job["jid"], "cancelled": True})

    async def stream(request: Request) -> Response:
        """Follow a job live: server-sent events job, stdout, stderr and finally status."""
        client_id, jid = request.path_params["client_id"], request.path_params["jid"]
        await _job(server, client_id, jid)
        return StreamingResponse(_events(server, client_id, jid), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def run_multi(request: Request) -> Response:
        """Run a command on many clients (client_ids, group_ids, tags or labels)."""
        # max_request_bytes, plus room to name every known client: a fleet of 1,000 does not
        # fit in the 10 KiB default (RPort's), and the ids are the body's point here
        body = await read_json(request, max_body + server.clients.ids_json_size())
        user = request.state.user
        multi = await service(server).run_multi(
            body, user.username, check=lambda clients: check_client_access(server, user, clients),
            matchable=None if user.is_admin else visible_clients(server, user))
        request.state.audit.client_ids = multi["target_client_ids"]  # an audit entry per client
        return data_response({"jid": multi["jid"]})

    async def list_multi(request: Request) -> Response:
        """Multi-client jobs, newest first (sort, filter, page; see :data:`MULTI`)."""
        query = parse_list_query(request.query_params, MULTI)
        rows = [{k: m.get(k) for k in MULTI_FIELDS} for m in await service(server).jobs.all_multi()]
        if query.times:
            rows = [row for row in rows if _started_within(row, query)]
        rows, count = apply_list_query(rows, query, MULTI)
        return data_response(rows, count=count)

    async def _multi(request: Request) -> dict[str, Any]:
        jid = request.path_params["jid"]
        multi = await service(server).jobs.get_multi(jid)
        if multi is None:
            raise ApiError(404, f'Multi-client Job[id="{jid}"] not found.', code="ERR_CODE_JOB_NOT_FOUND")
        user = request.state.user
        if not user.is_admin and user.username != multi["created_by"]:
            raise ApiError(403, "forbidden", code="ERR_CODE_FORBIDDEN")
        return multi

    async def get_multi(request: Request) -> Response:
        """A multi-client job with its jobs (clients skipped by an abort included)."""
        multi = await _multi(request)
        jobs = await service(server).jobs.of_multi_json(multi["jid"])
        # The jobs as stored (JSON texts), spliced in: polled while a thousand jobs run, this
        # answer would otherwise decode and encode every job each time.
        doc = {**{k: v for k, v in multi.items() if k != "jobs" and not k.startswith("_")},
               "jobs": []}  # "jobs" last; "_" keys are the service's own (the running node)
        head = json.dumps({"data": doc}, ensure_ascii=False, separators=(",", ":"))
        body = "".join((head[:-len("]}}")], ",".join(jobs), "]}}"))
        return Response(body.encode(), media_type="application/json")

    async def cancel_multi(request: Request) -> Response:
        """Cancel a multi-client job: no further client is started, running jobs are cancelled."""
        multi = await _multi(request)
        await service(server).cancel_multi(multi, request.state.user.username)
        return data_response({"jid": multi["jid"], "cancelled": True})

    async def multi_jobs(request: Request) -> Response:
        """The jobs of a multi-client job (fields[jobs], sort, filter, page)."""
        query = parse_list_query(request.query_params, MULTI_JOBS)
        multi = await _multi(request)
        statuses = _statuses(query)
        if statuses is not None and query.sort == "jid":  # the database pages too
            jobs, count = await service(server).jobs.page_of_multi(
                multi["jid"], statuses, descending=query.descending, limit=query.limit,
                offset=query.offset)
            rows, _ = apply_list_query(jobs, attrs.evolve(query, filters=(), limit=None, offset=0),
                                       MULTI_JOBS)
            return data_response(rows, count=count)
        jobs = await service(server).jobs.of_multi(multi["jid"], statuses)
        rows, count = apply_list_query(jobs, query, MULTI_JOBS)
        return data_response(rows, count=count)

    plain = register

    def register(*args: Any, **kwargs: Any) -> None:  # every route here needs RPort's "commands"
        plain(*args, permission="commands", **kwargs)

    register("/clients/{client_id}/commands", run, ["POST"], name="run", body=d.RUN_BODY,
             responses=d.RUN, agent=True,
             audit=Audit("client.command", "execute.start", affected="response:jid", response=True))
    register("/clients/{client_id}/commands", list_jobs, name="list", list_params=True,
             responses=d.LIST)
    register("/clients/{client_id}/commands/{jid}", get_job, name="get", responses=d.GET)
    register("/clients/{client_id}/commands/{jid}/cancel", cancel, ["POST"], name="cancel",
             body=False, responses=d.CANCEL, agent=True,
             audit=Audit("client.command", "cancel", affected="path:jid"))
    register("/clients/{client_id}/commands/{jid}/stream", stream, name="stream",
             responses=d.STREAM, agent=True)
    register("/commands", run_multi, ["POST"], name="run_multi", body=d.RUN_MULTI_BODY,
             responses=d.RUN_MULTI,
             audit=Audit("client.command", "execute.start", affected="response:jid", response=True))
    register("/commands", list_multi, name="list_multi", list_params=True,
             responses=d.LIST_MULTI)
    register("/commands/{jid}", get_multi, name="get_multi", responses=d.GET_MULTI)
    register("/commands/{jid}/jobs", multi_jobs, name="multi_jobs", list_params=True,
             responses=d.MULTI_JOBS)
    register("/commands/{jid}/cancel", cancel_multi, ["POST"], name="cancel_multi",
             body=False, responses=d.CANCEL_MULTI,
             audit=Audit("client.command", "cancel", affected="path:jid"))


@hookimpl(optionalhook=True)
def rport_register_metrics(server: Any, registry: Any) -> None:
    """The metrics plugin's hook: jobs finished by status, jobs running (see metrics.py)."""
    from .metrics import CommandsCollector  # prometheus_client only when metrics are on

    registry.register(CommandsCollector(lambda: server.state.get(NAME)))
