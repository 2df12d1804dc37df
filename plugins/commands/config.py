"""Settings of the commands plugin: the agent's ``[remote-commands]`` (RPort's table) and the
server's ``[plugins.commands]``."""

from __future__ import annotations

import dataclasses

from rport.agent.plugin import Duration  # (light: config.py is imported by the agent too)

DEFAULT_ALLOW = ["^/usr/bin/.*", "^/usr/local/bin/.*", r"^C:\\Windows\\System32\\.*"]
DEFAULT_DENY = ["(\\||<|>|;|,|\\n|&)"]


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteCommandsConfig:
    enabled: bool = True
    allow: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_ALLOW))
    deny: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_DENY))
    order: list[str] = dataclasses.field(default_factory=lambda: ["allow", "deny"])
    send_back_limit: int = 4194304


@dataclasses.dataclass(frozen=True, slots=True)
class CommandsConfig:
    resume_wait: Duration = Duration(60)
    """After a restart, how long the jobs of a multi-client job that were not sent yet wait for
    their clients to reconnect; a client not back by then gets a failed job saying so."""
