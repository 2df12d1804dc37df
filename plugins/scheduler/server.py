"""scheduler, server side: RPort's ``/schedules`` (list with sort/filter/page, create, read,
replace, delete), kept in the server's store (table ``schedules``; committed before the API
answers, so schedules survive restarts), and the loop that starts each run as a multi-client
job of the commands plugin with ``schedule_id`` (read with ``/commands``). Hook implementations
only; see :mod:`.runner`, :mod:`.model` and :mod:`.cron`."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    ApiError,
    Audit,
    ConfigError,
    ResourceSpec,
    StoreSchema,
    apply_list_query,
    check_client_access,
    data_response,
    hookimpl,
    parse_list_query,
    read_json,
    visible_clients,
)
from rport.plugins.commands.service import MULTI_KEYS, validate_command

from . import model, store
from .runner import Scheduler

NAME = "scheduler"
COMMANDS = "commands"

SCHEDULES = ResourceSpec(
    name="schedules", sort_fields={"id", "created_at", "created_by", "name", "type"},
    default_sort="created_at",
    filter_fields={"id", "created_at", "created_by", "name", "type", "client_ids", "group_ids"},
    fields={"id", "created_at", "created_by", "name", "schedule", "type", "client_ids",
            "group_ids", "tags", "labels", "command", "script", "interpreter", "cwd", "is_sudo",
            "timeout_sec", "execute_concurrently", "abort_on_error", "overlaps", "next_run_at",
            "last_execution"},
    page_default=20, page_max=100)


def scheduler(server: Any) -> Scheduler:
    return server.state[NAME]


@hookimpl
def rport_store_schema() -> StoreSchema:
    return store.SCHEMA


@hookimpl(trylast=True)  # after the commands plugin's start-up, whose service runs the jobs
def rport_server_startup(server: Any) -> None:
    if COMMANDS not in server.state:
        raise ConfigError(["plugins: the scheduler plugin runs schedules as jobs of the "
                           "commands plugin, which is disabled (disable scheduler too, or "
                           "enable commands)"])
    server.state[NAME] = Scheduler(server)
    server.state[NAME].start()


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    if NAME in server.state:
        await scheduler(server).close()


def _not_found(schedule_id: str) -> ApiError:
    return ApiError(404, f"Cannot find a schedule by the provided id: {schedule_id}",
                    code="ERR_CODE_NOT_FOUND")


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    max_body = server.config.api.max_request_bytes

    async def _document(record: dict[str, Any]) -> dict[str, Any]:
        last = None
        if record["last_jid"]:
            jobs = server.state[COMMANDS].jobs
            last = model.last_execution(await jobs.get_multi(record["last_jid"]),
                                        await jobs.of_multi(record["last_jid"]))
        return model.document(record, last)

    async def _checked(request: Request) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """The body's schedule, its command checked as the commands plugin checks a
        multi-client job's, and its targets resolved and allowed for the caller (RPort)."""
        body = await read_json(request, max_body + server.clients.ids_json_size())
        base, details, spec = model.parse_body(body)
        commands = server.state[COMMANDS]
        validate_command(model.command_body(base["type"], details), MULTI_KEYS,
                         commands.default_timeout)
        user = request.state.user
        clients = await commands.resolve_targets(
            details, None if user.is_admin else visible_clients(server, user))
        check_client_access(server, user, clients)
        request.state.audit.client_ids = [c.id for c in clients]  # an entry per client (RPort)
        return base, details, spec

    async def list_schedules(request: Request) -> Response:
        """The schedules with their last execution (sort, filter[...], page)."""
        query = parse_list_query(request.query_params, SCHEDULES)
        docs = [await _document(r) for r in await server.store.run(store.all_schedules)]
        rows, count = apply_list_query(docs, query, SCHEDULES)
        return data_response(rows, count=count)

    async def create(request: Request) -> Response:
        """Create a schedule: a command or a script run on clients at the given times."""
        base, details, spec = await _checked(request)
        now = time.time()
        record = {"id": str(uuid.uuid4()), "created_at": now,
                  "created_by": request.state.user.username, **base, "details": details,
                  "next_run_at": spec.next_after(now), "last_jid": None}
        await server.store.run(store.insert, record)
        scheduler(server).changed()
        return data_response(await _document(record), status=201)

    async def get_one(request: Request) -> Response:
        """One schedule with its last execution."""
        record = await server.store.run(store.get, request.path_params["id"])
        if record is None:
            raise _not_found(request.path_params["id"])
        return data_response(await _document(record))

    async def replace(request: Request) -> Response:
        """Replace a schedule (all fields, as when creating it); its next run is recomputed."""
        schedule_id = request.path_params["id"]
        if await server.store.run(store.get, schedule_id) is None:
            raise _not_found(schedule_id)  # before checking the body, as for other routes
        base, details, spec = await _checked(request)
        record = await server.store.run(store.update, schedule_id, {
            **base, "details": details, "next_run_at": spec.next_after(time.time())})
        if record is None:
            raise _not_found(schedule_id)
        scheduler(server).changed()
        return data_response(await _document(record))

    async def delete(request: Request) -> Response:
        """Delete a schedule: it runs no more (the jobs it ran are kept)."""
        if not await server.store.run(store.delete, request.path_params["id"]):
            raise _not_found(request.path_params["id"])
        scheduler(server).changed()
        return Response(status_code=204)

    perm = "scheduler"
    register("/schedules", list_schedules, name="list", list_params=True, permission=perm,
             responses={200: "the schedules, with meta.count",
                        400: "a bad sort, filter, fields or page parameter"})
    register("/schedules", create, ["POST"], name="create", permission=perm,
             body=model.BODY_SCHEMA,
             responses={201: "the schedule", 400: "an invalid schedule, type, command, script "
                        "or targets", 403: "a target client the caller may not use",
                        404: "a client or group of the targets does not exist",
                        413: "body too large"},
             audit=Audit("schedule", "create", affected="response:id", response=True))
    register("/schedules/{id}", get_one, name="get", permission=perm,
             responses={200: "the schedule", 404: "no such schedule"})
    register("/schedules/{id}", replace, ["PUT"], name="replace", permission=perm,
             body=model.BODY_SCHEMA,
             responses={200: "the schedule as stored now", 400: "an invalid schedule, type, "
                        "command, script or targets", 403: "a target client the caller may not use",
                        404: "no such schedule, or a client or group of the targets does not exist",
                        413: "body too large"},
             audit=Audit("schedule", "update", response=True))
    register("/schedules/{id}", delete, ["DELETE"], name="delete", permission=perm,
             responses={204: "deleted", 404: "no such schedule"},
             audit=Audit("schedule", "delete"))
