"""Settings of the commands plugin: the agent's ``[remote-commands]`` (RPort's table)."""

from __future__ import annotations

import attrs

DEFAULT_ALLOW = ["^/usr/bin/.*", "^/usr/local/bin/.*", r"^C:\\Windows\\System32\\.*"]
DEFAULT_DENY = ["(\\||<|>|;|,|\\n|&)"]


@attrs.frozen
class RemoteCommandsConfig:
    enabled: bool = True
    allow: list[str] = attrs.field(factory=lambda: list(DEFAULT_ALLOW))
    deny: list[str] = attrs.field(factory=lambda: list(DEFAULT_DENY))
    order: list[str] = attrs.field(factory=lambda: ["allow", "deny"])
    send_back_limit: int = 4194304
