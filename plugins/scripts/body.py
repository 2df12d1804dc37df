"""A script request (RPort's ``ExecuteScriptRequest``: ``script`` in base64) as the commands
plugin's command request: the decoded script becomes the job's ``command``, which the agent
writes to ``{data_dir}/scripts/<uuid>`` and runs with the interpreter, as RPort does."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from rport.core.plugin import ApiError

SINGLE_KEYS = frozenset({"script", "interpreter", "cwd", "is_sudo", "timeout_sec"})
MULTI_KEYS = SINGLE_KEYS | {"client_ids", "group_ids", "tags", "labels", "execute_concurrently",
                            "abort_on_error"}


def _invalid_json(detail: str) -> ApiError:
    return ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=detail)


def missing_script() -> ApiError:
    return ApiError(400, "Missing script body", code="ERR_CODE_MISSING_SCRIPT",
                    detail="script: the script's text, base64-encoded")


def decode_script(script: Any) -> str:
    """The text of a base64 script. Line breaks are ignored (``base64`` wraps its output at 76
    columns; Go's decoder, RPort's, skips them too); anything else that is not base64, or a
    script that is not UTF-8 text, is a 400."""
    if script is None or script == "":
        raise missing_script()
    if not isinstance(script, str):
        raise _invalid_json("script must be a string (base64)")
    try:
        raw = base64.b64decode(script.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "failed to decode script payload from base64",
                       code="ERR_CODE_INVALID_SCRIPT", detail=str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "failed to decode script payload from base64",
                       code="ERR_CODE_INVALID_SCRIPT",
                       detail=f"the decoded script is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise missing_script()
    return text


def command_body(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """The commands plugin's request body for this script request (``command`` instead of
    ``script``); unknown fields are refused as everywhere in the API."""
    if not isinstance(body, dict):
        raise _invalid_json("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _invalid_json(f'json: unknown field "{unknown[0]}"')
    out = {k: v for k, v in body.items() if k != "script"}
    out["command"] = decode_script(body.get("script"))
    return out
