"""Settings of the scripts plugin on the agent: RPort's ``[remote-scripts]`` and
``[interpreter-aliases]`` tables of ``rport.conf``."""

from __future__ import annotations

from typing import Any, Mapping

import attrs


@attrs.frozen
class RemoteScriptsConfig:
    enabled: bool = False
    """RPort's default: scripts are off until the operator enables them."""


def parse_aliases(raw: Any) -> tuple[dict[str, str], list[str]]:
    """``[interpreter-aliases]``: ``name = '/path/to/interpreter'`` (or RPort's
    ``name = ['/path', 'input-encoding', 'output-encoding']``, whose encodings matter only on
    Windows and are ignored here). Returns the aliases and the problems found."""
    aliases: dict[str, str] = {}
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        return aliases, ["interpreter-aliases: must be a table"]
    for name, value in raw.items():
        if isinstance(value, list) and 1 <= len(value) <= 3 and all(isinstance(v, str) for v in value):
            value = value[0]
        if not isinstance(value, str) or not value.strip():
            problems.append(f"interpreter-aliases.{name}: must be an interpreter's path (or "
                            "[path, input encoding, output encoding])")
            continue
        aliases[str(name)] = value
    return aliases, problems
