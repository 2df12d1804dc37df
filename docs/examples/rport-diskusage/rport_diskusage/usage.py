"""The logic of the agent side: which path may be measured, and measuring it.

Plain functions, without pluggy or rport, so they are unit-testable alone. ``measure`` blocks
(it asks the file system): the agent calls it in a thread.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any


class Refused(Exception):
    """The agent will not answer for this path; ``str(exc)`` is the reason sent to the server."""


def resolve(requested: Any, allowed: Sequence[str]) -> str:
    """The path to measure: ``requested`` if it is one of ``allowed`` (compared after
    normalisation, so ``/var/`` is ``/var``), the first allowed path if ``requested`` is None.
    Anything else raises :class:`Refused`."""
    if requested is None:
        if not allowed:
            raise Refused("no path is allowed: [plugins.diskusage] paths is empty on this client")
        return allowed[0]
    if not isinstance(requested, str) or not requested:
        raise Refused("path must be a non-empty string")
    wanted = os.path.normpath(requested)
    for path in allowed:
        if os.path.normpath(path) == wanted:
            return path
    raise Refused(f"path {requested!r} is not allowed on this client "
                  f"(allowed: {', '.join(allowed) or 'none'})")


def measure(path: str) -> dict[str, Any]:
    """Disk usage of the file system holding ``path``, in bytes. ``percent`` is the share of the
    space ordinary users can have that is used, ``used / (used + free)``, as ``df`` and psutil
    report it (blocks reserved for root are in ``total`` only)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        raise Refused(f"cannot read the disk usage of {path!r}: {exc.strerror or exc}") from None
    usable = usage.used + usage.free
    percent = round(usage.used / usable * 100, 1) if usable else 0.0
    return {"path": path, "total": usage.total, "used": usage.used, "free": usage.free,
            "percent": percent}
