"""What ``rportd.conf`` and ``rport.conf`` share: the ``[logging]`` and ``[plugins]`` sections
and the default data directory. Apart from the server's configuration (``config.py``), whose
classes an agent has no use for (docs/performance.md, "Agent memory")."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

LOG_LEVELS = ("error", "warning", "info", "debug")


def default_data_dir(program: str = "rportd") -> str:
    """RPort's ``/var/lib/rport`` for root; a per-user directory (``~/.local/share/<program>``)
    otherwise."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/rport"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / program)


@dataclasses.dataclass(frozen=True, slots=True)
class LoggingSection:
    log_file: str = ""
    log_level: str = "info"


@dataclasses.dataclass(frozen=True, slots=True)
class PluginsSection:
    disabled: list[str] = dataclasses.field(default_factory=list)
    tables: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


def plugins_section(raw: Any, problems: list[str]) -> PluginsSection:
    if not isinstance(raw, Mapping):
        problems.append("plugins: must be a table")
        return PluginsSection()
    disabled = raw.get("disabled", [])
    if not isinstance(disabled, list) or not all(isinstance(x, str) for x in disabled):
        problems.append("plugins.disabled: must be a list of plugin names")
        disabled = []
    tables: dict[str, Mapping[str, Any]] = {}
    for key, value in raw.items():
        if key == "disabled":
            continue
        if not isinstance(value, Mapping):
            problems.append(f"plugins.{key}: must be a table [plugins.{key}] (or list it in disabled)")
        else:
            tables[key] = value
    return PluginsSection(disabled=list(disabled), tables=tables)
