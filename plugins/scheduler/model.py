"""A schedule as RPort's API has it (``Schedule``): validation of a create or replace body, the
multi-client job request it makes at each run, and its JSON with ``last_execution``."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any, Mapping

from rport.core.plugin import ApiError

from .cron import CronError, Spec, parse

TYPES = ("command", "script")
BASE_KEYS = ("name", "schedule", "type")
DETAIL_KEYS = ("client_ids", "group_ids", "tags", "labels", "command", "script", "interpreter",
               "cwd", "is_sudo", "timeout_sec", "execute_concurrently", "abort_on_error",
               "overlaps")
READ_ONLY = ("id", "created_at", "created_by", "last_execution", "next_run_at")
"""Sent back by a client that edits what it read: accepted and ignored (as RPort)."""

BODY_SCHEMA = {
    "type": "object", "required": ["schedule", "type"],
    "properties": {
        "name": {"type": "string"},
        "schedule": {"type": "string", "examples": ["*/5 * * * *", "@daily", "@every 30m"],
                     "description": "minute hour day-of-month month day-of-week, a descriptor "
                                    "(@hourly, @daily, ...) or @every <duration>; server local time"},
        "type": {"type": "string", "enum": list(TYPES)},
        "client_ids": {"type": ["array", "null"], "items": {"type": "string"}},
        "group_ids": {"type": ["array", "null"], "items": {"type": "string"}},
        "tags": {"type": ["object", "null"], "description": '{"tags": [...], "operator": "OR"|"AND"}'},
        "labels": {"type": ["object", "null"],
                   "description": '{"labels": ["key: value"], "operator": "OR"|"AND"}'},
        "command": {"type": "string", "description": "type command: the command line"},
        "script": {"type": "string", "description": "type script: the script, base64-encoded"},
        "interpreter": {"type": "string"},
        "cwd": {"type": "string"},
        "is_sudo": {"type": "boolean"},
        "timeout_sec": {"type": "integer"},
        "execute_concurrently": {"type": "boolean"},
        "abort_on_error": {"type": ["boolean", "null"]},
        "overlaps": {"type": "boolean",
                     "description": "start a run while the previous one is still in progress"},
        **{k: {"readOnly": True} for k in READ_ONLY},
    },
}


def _bad(title: str, detail: str, code: str = "ERR_CODE_INVALID_SCHEDULE") -> ApiError:
    return ApiError(400, title, code=code, detail=detail)


def _invalid_json(detail: str) -> ApiError:
    return ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=detail)


def parse_body(body: Any) -> tuple[dict[str, Any], dict[str, Any], Spec]:
    """``(base, details, spec)`` of a create or replace body, with RPort's 400s: ``Invalid
    type.``, ``Invalid schedule.``, ``Empty command.``, ``Empty script.``, ``Invalid script.``.
    The command's own options are checked by the commands plugin (:func:`command_body`)."""
    if not isinstance(body, dict):
        raise _invalid_json("the body must be a JSON object")
    unknown = sorted(set(body) - set(BASE_KEYS) - set(DETAIL_KEYS) - set(READ_ONLY))
    if unknown:
        raise _invalid_json(f'json: unknown field "{unknown[0]}"')
    base = {k: body.get(k) if body.get(k) is not None else "" for k in BASE_KEYS}
    for key, value in base.items():
        if not isinstance(value, str):
            raise _invalid_json(f"{key} must be a string")
    if base["type"] not in TYPES:
        raise _bad("Invalid type.", "type must be 'command' or 'script'")
    try:
        spec = parse(base["schedule"])
    except CronError as exc:
        raise _bad("Invalid schedule.", str(exc)) from None
    details = {k: body.get(k) for k in DETAIL_KEYS if body.get(k) is not None}
    if base["type"] == "command":
        details.pop("script", None)
        if not isinstance(details.get("command", ""), str) or not details.get("command", "").strip():
            raise _bad("Empty command.", "command cannot be empty")
    else:
        details.pop("command", None)
        script = details.get("script", "")
        if not isinstance(script, str) or not script.strip():
            raise _bad("Empty script.", "script cannot be empty")
        decode_script(script)
    return base, details, spec


def decode_script(script: str) -> str:
    try:
        raw = base64.b64decode(script.replace("\r", "").replace("\n", ""), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise _bad("Invalid script.", f"the script must be UTF-8 text in base64: {exc}") from None


def command_body(schedule_type: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """The multi-client job request (the commands plugin's ``POST /commands`` body) of a run."""
    body = {k: v for k, v in details.items() if k not in ("script", "overlaps")}
    if schedule_type == "script":
        body["command"] = decode_script(details["script"])
    return body


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def document(record: Mapping[str, Any], last_execution: dict[str, Any] | None) -> dict[str, Any]:
    details = record["details"]
    doc: dict[str, Any] = {
        "id": record["id"], "created_at": rfc3339(record["created_at"]),
        "created_by": record["created_by"], "name": record["name"],
        "schedule": record["schedule"], "type": record["type"],
        "client_ids": details.get("client_ids"), "group_ids": details.get("group_ids"),
        "tags": details.get("tags"), "labels": details.get("labels"),
    }
    if record["type"] == "command":
        doc["command"] = details.get("command", "")
    else:
        doc["script"] = details.get("script", "")
    doc.update({
        "interpreter": details.get("interpreter", ""), "cwd": details.get("cwd", ""),
        "is_sudo": bool(details.get("is_sudo", False)),
        "timeout_sec": details.get("timeout_sec", 0),
        "execute_concurrently": bool(details.get("execute_concurrently", False)),
        "abort_on_error": details.get("abort_on_error"),
        "overlaps": bool(details.get("overlaps", False)),
        "next_run_at": rfc3339(record["next_run_at"]),
        "last_execution": last_execution,
    })
    return doc


def last_execution(multi: Mapping[str, Any] | None, jobs: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """RPort's ``last_execution`` of the latest run: when it started, on how many clients and
    how many succeeded; with one client, its status and summary too."""
    if multi is None:
        return None
    one = jobs[0] if len(jobs) == 1 else None
    return {
        "started_at": multi.get("started_at"),
        "client_count": len(jobs),
        "success_count": sum(1 for j in jobs if j.get("status") == "successful"),
        "status": one.get("status") if one else None,
        "summary": (one.get("result") or {}).get("summary") if one else None,
    }
