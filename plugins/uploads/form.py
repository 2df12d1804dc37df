"""The fields of ``POST /files`` (RPort's ``UploadedFile``) checked into what is sent to the
clients, with RPort's rules: ``dest`` absolute, never under ``/proc``, ``/sys``, ``/dev`` or
``/run`` (the server's own refusal, ``upload denied``), ``mode`` in octal, ``force``/``sync`` as
Go booleans, ``user``/``group`` names, optional ``id``; and the targets (``client_id`` and
``group_id`` repeated, ``tags`` as JSON)."""

from __future__ import annotations

import json
import posixpath
import re
import uuid
from typing import Any

from rport.core.plugin import ApiError

from .receive import bad

DENIED_PREFIXES = ("/proc/", "/sys/", "/dev/", "/run/")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
SINGLE = ("dest", "mode", "user", "group", "force", "sync", "id", "md5", "tags")


def _one(fields: dict[str, list[str]], key: str) -> str:
    values = fields.get(key) or [""]
    if len(values) > 1:
        raise bad(f"{key} must be given once", f"the form has {len(values)} {key} fields")
    return values[0]


def parse_bool(key: str, text: str) -> bool:
    """Go's strconv.ParseBool, as RPort reads ``force`` and ``sync``."""
    if text == "" or text in _FALSE:
        return False
    if text in _TRUE:
        return True
    raise bad(f"invalid {key} value", f'strconv.ParseBool: parsing "{text}": invalid syntax')


def parse_options(fields: dict[str, list[str]]) -> dict[str, Any]:
    """The upload's options from the form's fields; raises a 400 for any bad one."""
    dest = _one(fields, "dest")
    if not dest:
        raise bad("empty destination file path", "dest: the absolute path of the file on the clients")
    if "\0" in dest or not dest.startswith("/") or dest.endswith("/"):
        raise bad("invalid destination file path",
                  "dest must be an absolute path naming a file, e.g. /etc/motd")
    dest = posixpath.normpath(dest)
    for prefix in DENIED_PREFIXES:
        if (dest + "/").startswith(prefix):
            raise ApiError(400, "upload denied", code="BAD_DESTINATION",
                           detail=f"uploads to {prefix} are forbidden")
    mode_text = _one(fields, "mode")
    mode = None
    if mode_text:
        try:
            mode = int(mode_text, 8)
        except ValueError:
            raise bad(f"failed to parse file mode value {mode_text}",
                      "mode is octal, e.g. 0644") from None
        if not 0 <= mode <= 0o7777:
            raise bad(f"failed to parse file mode value {mode_text}", "mode must be 0 to 07777")
    owner, group = _one(fields, "user"), _one(fields, "group")
    for key, name in (("user", owner), ("group", group)):
        if name and not _NAME.match(name):
            raise bad(f"invalid {key}", f"{key} must be a user or group name (or a number)")
    upload_id = _one(fields, "id") or str(uuid.uuid4())
    if not _ID.match(upload_id):
        raise bad("invalid id", "id: letters, digits, - and _ (at most 64)")
    md5 = _one(fields, "md5").lower()
    if md5 and not _MD5.match(md5):
        raise bad("invalid md5", "md5: the file's MD5 checksum, 32 hexadecimal digits")
    return {"uuid": upload_id, "filepath": dest, "mode": mode, "user": owner, "group": group,
            "force": parse_bool("force", _one(fields, "force")),
            "sync": parse_bool("sync", _one(fields, "sync")), "md5": md5}


def parse_targets(fields: dict[str, list[str]]) -> dict[str, Any]:
    """The targets as a multi-client job names them: ``client_ids``, ``group_ids``, ``tags``."""
    targets: dict[str, Any] = {}
    if fields.get("client_id"):
        targets["client_ids"] = list(fields["client_id"])
    if fields.get("group_id"):
        targets["group_ids"] = list(fields["group_id"])
    tags = _one(fields, "tags")
    if tags:
        try:
            targets["tags"] = json.loads(tags)
        except ValueError as exc:
            raise bad("invalid tags", f'tags: JSON such as {{"tags": ["linux"], "operator": "OR"}}: {exc}') from None
    return targets
