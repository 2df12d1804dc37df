"""scripts, server side: RPort's ``POST /clients/{id}/scripts`` and ``POST /scripts``. A script
runs as a job of the commands plugin with ``is_script`` (its service, ``server.state
["commands"]``): the same job records, results, live output, cancellation and multi-client
runs; the jobs are read with the commands routes (``/clients/{id}/commands/{jid}``,
``/commands/{jid}``), as in RPort. Hook implementations only; see :mod:`.body`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    Audit,
    ConfigError,
    check_client_access,
    data_response,
    hookimpl,
    read_json,
    visible_clients,
)

from .body import MULTI_KEYS, SINGLE_KEYS, command_body

NAME = "scripts"
COMMANDS = "commands"

_OPTIONS = {
    "interpreter": {"type": "string", "description": "interpreter: /bin/sh by default, an "
                    "alias of the agent's [interpreter-aliases], a name on its PATH "
                    "(bash, python3, ...) or an absolute path; a #! first line runs the script "
                    "itself"},
    "cwd": {"type": "string", "description": "working directory of the script"},
    "is_sudo": {"type": "boolean", "description": "run it with sudo -n"},
    "timeout_sec": {"type": "integer", "description": "seconds to observe it (default "
                    "[server] run_remote_cmd_timeout_sec)"},
}
SCRIPT_BODY = {
    "type": "object", "required": ["script"], "additionalProperties": False,
    "properties": {"script": {"type": "string", "contentEncoding": "base64",
                              "description": "the script, base64-encoded"}, **_OPTIONS},
}
MULTI_SCRIPT_BODY = {
    "type": "object", "required": ["script"], "additionalProperties": False,
    "properties": {
        **SCRIPT_BODY["properties"],
        "client_ids": {"type": "array", "items": {"type": "string"}},
        "group_ids": {"type": "array", "items": {"type": "string"}},
        "tags": {"type": "object", "description": '{"tags": [...], "operator": "OR"|"AND"}'},
        "labels": {"type": "object", "description": '{"labels": ["key: value", ...], '
                   '"operator": "OR"|"AND"}'},
        "execute_concurrently": {"type": "boolean"},
        "abort_on_error": {"type": "boolean"},
    },
}


@hookimpl(trylast=True)  # after the commands plugin's start-up, whose service it uses
def rport_server_startup(server: Any) -> None:
    if COMMANDS not in server.state:
        raise ConfigError(["plugins: the scripts plugin runs scripts as jobs of the commands "
                           "plugin, which is disabled (disable scripts too, or enable commands)"])


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    max_body = server.config.api.max_request_bytes

    async def run(request: Request) -> Response:
        """Run a script on one client; returns the job id once the client started it."""
        body = command_body(await read_json(request, max_body), SINGLE_KEYS)
        job = await server.state[COMMANDS].run_single(
            request.path_params["client_id"], body, request.state.user.username, is_script=True)
        return data_response({"jid": job["jid"]})

    async def run_multi(request: Request) -> Response:
        """Run a script on many clients (client_ids, group_ids, tags or labels)."""
        body = command_body(await read_json(request, max_body + server.clients.ids_json_size()),
                            MULTI_KEYS)
        user = request.state.user
        multi = await server.state[COMMANDS].run_multi(
            body, user.username, check=lambda clients: check_client_access(server, user, clients),
            matchable=None if user.is_admin else visible_clients(server, user), is_script=True)
        request.state.audit.client_ids = multi["target_client_ids"]  # an audit entry per client
        return data_response({"jid": multi["jid"]})

    # The agent's node runs it in a cluster (its job's live output is there); RPort's audit
    # log names. The job's end is recorded by the commands plugin (client.script execute.done).
    register("/clients/{client_id}/scripts", run, ["POST"], name="run", permission="scripts",
             body=SCRIPT_BODY, agent=True,
             audit=Audit("client.script", "execute.start", affected="response:jid", response=True),
             responses={200: '{"jid": ...}: the job, read at /clients/{client_id}/commands/{jid}',
                        400: "missing or invalid body: no script, not base64, a bad option",
                        404: "no connected client with this id",
                        409: "the client refused: scripts or commands disabled there, no such "
                             "interpreter, sudo missing",
                        413: "body too large ([api] max_request_bytes)",
                        500: "the client did not answer"})
    register("/scripts", run_multi, ["POST"], name="run_multi", permission="scripts",
             body=MULTI_SCRIPT_BODY,
             audit=Audit("client.script", "execute.start", affected="response:jid", response=True),
             responses={200: '{"jid": ...}: the multi-client job, read at /commands/{jid}',
                        400: "missing or invalid body or targets",
                        403: "a target client the caller may not use",
                        404: "a client or group of the targets does not exist",
                        413: "body too large"})
