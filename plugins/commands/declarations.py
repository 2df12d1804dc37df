"""What the commands routes declare at registration (their OpenAPI description): the request
bodies (RPort's ``ExecuteCmdRequest`` and multi-client request) and every status code each
route answers, with RPort's meanings. Kept apart from the hook module, which stays thin."""

from __future__ import annotations

from typing import Any

_STRINGS = {"type": "array", "items": {"type": "string"}}
_OPTIONS: dict[str, Any] = {
    "command": {"type": "string", "description": "the command line"},
    "interpreter": {"type": "string", "description": "/bin/sh by default, a name on the "
                    "client's PATH (bash, python3, ...) or an absolute path"},
    "cwd": {"type": "string", "description": "working directory"},
    "is_sudo": {"type": ["boolean", "null"], "description": "run it with sudo -n"},
    "timeout_sec": {"type": "integer", "description": "seconds to observe it (0 or absent: "
                    "[server] run_remote_cmd_timeout_sec)"},
}
RUN_BODY = {"type": "object", "required": ["command"], "additionalProperties": False,
            "properties": _OPTIONS}
RUN_MULTI_BODY = {
    "type": "object", "required": ["command"], "additionalProperties": False,
    "properties": {
        **_OPTIONS,
        "client_ids": _STRINGS, "group_ids": _STRINGS,
        "tags": {"type": "object", "description": '{"tags": [...], "operator": "OR"|"AND"}'},
        "labels": {"type": "object", "description": '{"labels": ["key: value", ...], '
                   '"operator": "OR"|"AND"}'},
        "execute_concurrently": {"type": ["boolean", "null"], "description": "default false"},
        "abort_on_error": {"type": ["boolean", "null"], "description": "default true "
                           "(sequential runs only)"},
    },
}

_LIST_400 = "a bad sort, filter, fields or page parameter"
_NOT_MINE = "a multi-client job of another user (administrators see all)"
RUN = {200: '{"jid": ...}: the job, started by the client',
       400: "missing or invalid body: empty command, bad interpreter, an unknown field",
       404: "no connected client with this id",
       409: "the client refused: commands disabled there, or not allowed by its policy",
       413: "body too large ([api] max_request_bytes)",
       500: "the client did not answer"}
LIST = {200: "the client's jobs, with meta.count", 400: _LIST_400}
GET = {200: "the job", 404: "no such job of this client"}
CANCEL = {200: '{"jid", "cancelled": true}: its process group was terminated',
          404: "no such job of this client",
          409: "the job is not running, or the client refused (client error: ...)",
          500: "the client disconnected or did not answer (Failed to cancel the job.)"}
STREAM = {200: "text/event-stream: events job, stdout, stderr and finally status",
          404: "no such job of this client"}
RUN_MULTI = {200: '{"jid": ...}: the multi-client job, running',
             400: "missing or invalid body or targets",
             403: "a target client the caller may not use",
             404: "a client or group of the targets does not exist",
             413: "body too large"}
LIST_MULTI = {200: "the multi-client jobs (a page of them), newest first by default, with "
                   "meta.count", 400: _LIST_400}
GET_MULTI = {200: "the multi-client job with its jobs", 403: _NOT_MINE,
             404: "no such multi-client job"}
MULTI_JOBS = {200: "the jobs of the multi-client job (a page of them), with meta.count",
              400: _LIST_400, 403: _NOT_MINE,
              404: "no such multi-client job"}
CANCEL_MULTI = {200: '{"jid", "cancelled": true}: no further client is started',
                403: _NOT_MINE, 404: "no such multi-client job",
                409: "every client of the job has finished"}
