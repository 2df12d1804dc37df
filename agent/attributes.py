"""Client attributes (RPort's ``[client] attributes_file_path``): the agent's tags and labels
kept in a JSON file of their own, ``{"tags": ["vm"], "labels": {"city": "Lille"}}``.

The file, when set and readable, overrides ``tags`` and ``labels`` of ``rport.conf`` (as RPort
does); an unreadable or invalid file is logged and ignored. ``PUT /clients/{id}/attributes``
reaches the agent as the request ``update_client_attributes``, which rewrites the file (a new
file replaces the old one in one rename, so a crash never leaves half a file) and takes the new
values at once. Without a path the request is refused, and the API answers 409.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

MAX_FILE = 1 << 20
"""An attributes file larger than this is not read (1 MiB: far more than tags and labels need)."""


class AttributesError(ValueError):
    """The attributes cannot be read, parsed or written; the text says why."""


def parse_attributes(value: Any, *, strict: bool = True) -> tuple[list[str], dict[str, str]]:
    """Tags and labels from a decoded JSON object; ``null`` or a missing key is empty (as Go
    decodes RPort's struct). Other keys are refused when ``strict`` (a request), ignored
    otherwise (a file an operator wrote, as RPort reads it). Raises :class:`AttributesError`."""
    if not isinstance(value, dict):
        raise AttributesError("attributes must be a JSON object with tags and labels")
    unknown = sorted(set(value) - {"tags", "labels"})
    if unknown and strict:
        raise AttributesError(f'unknown field "{unknown[0]}" (only tags and labels)')
    tags = value.get("tags") or []
    labels = value.get("labels") or {}
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise AttributesError("tags must be a list of strings")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise AttributesError("labels must map names to strings")
    return list(tags), dict(labels)


def read_attributes(path: Path) -> tuple[list[str], dict[str, str]]:
    """The tags and labels in the file at ``path`` (blocking: call it from a thread)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise AttributesError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise AttributesError(f"{path} is larger than {MAX_FILE} bytes")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AttributesError(f"{path} is not valid JSON: {exc}") from None
    try:
        return parse_attributes(value, strict=False)
    except AttributesError as exc:
        raise AttributesError(f"{path}: {exc}") from None


def write_attributes(path: Path, tags: list[str], labels: dict[str, str]) -> None:
    """Replace the file at ``path`` (mode 0600) with these attributes, atomically (blocking:
    call it from a thread)."""
    data = json.dumps({"tags": tags, "labels": labels}, indent=2).encode() + b"\n"
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise AttributesError(f"can't write attributes to file: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise AttributesError(f"can't write attributes to file: {exc.strerror or exc}") from None
