"""The agent's configuration (``rport.conf``): RPort's keys, in frozen attrs classes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import attrs

from rport.core.confload import (
    ConfigError,
    Duration,
    env_overrides,
    merge,
    read_toml,
    structure_sections,
)
from rport.core.config import (
    LOG_LEVELS,
    LoggingSection,
    PluginsSection,
    default_data_dir,
    plugins_section,
)


@attrs.frozen
class ClientSection:
    server: str = ""
    fallback_servers: list[str] = attrs.field(factory=list)
    """Tried in order when ``server`` cannot be reached (other nodes of a cluster)."""
    server_switchback_interval: Duration = Duration(120)
    """Connected to a fallback server: how often the main server is tried again (0: never)."""
    fingerprint: str = ""
    auth: str = ""
    id: str = ""
    use_system_id: bool = True
    name: str = ""
    use_hostname: bool = True
    tags: list[str] = attrs.field(factory=list)
    labels: dict[str, str] = attrs.field(factory=dict)
    attributes_file_path: str = ""
    """A JSON file of tags and labels that overrides ``tags`` and ``labels`` (RPort's
    client attributes); ``PUT /clients/{id}/attributes`` rewrites it."""
    remotes: list[str] = attrs.field(factory=list)
    tunnel_allowed: list[str] = attrs.field(factory=list)
    data_dir: str = attrs.field(factory=lambda: default_data_dir("rport"))


@attrs.frozen
class ConnectionSection:
    keep_alive: Duration = Duration(30)
    keep_alive_timeout: Duration = Duration(30)
    max_retry_count: int = -1
    min_retry_interval: Duration = Duration(1)
    max_retry_interval: Duration = Duration(600)
    connect_timeout: Duration = Duration(30)


@attrs.frozen
class AgentConfig:
    client: ClientSection = attrs.field(factory=ClientSection)
    connection: ConnectionSection = attrs.field(factory=ConnectionSection)
    logging: LoggingSection = attrs.field(factory=LoggingSection)
    plugins: PluginsSection = attrs.field(factory=PluginsSection)
    extra_sections: Mapping[str, Any] = attrs.field(factory=dict)
    """Top-level tables that plugins claim (RPort's ``[remote-commands]``, for example)."""
    source: str = ""

    @property
    def data_dir(self) -> Path:
        return Path(self.client.data_dir).expanduser()


SECTIONS = {"client": ClientSection, "connection": ConnectionSection, "logging": LoggingSection}


def load_agent_config(path: Path | None = None, *, overrides: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Defaults, the file, ``RPORT_<SECTION>_<KEY>`` variables (plus RPort's ``RPORT_AUTH`` and
    ``RPORT_FINGERPRINT``), then ``overrides`` (flags). Raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = read_toml(path) if path else {}
    env = env_overrides("rport", SECTIONS, environ)
    for short, key in (("RPORT_AUTH", "auth"), ("RPORT_FINGERPRINT", "fingerprint")):
        if short in environ:
            env.setdefault("client", {})[key] = environ[short]
    data = merge(merge(data, env), overrides or {})
    problems: list[str] = []
    plugins = plugins_section(data.pop("plugins", {}) or {}, problems)
    # Other top-level tables must be claimed by a plugin (checked once plugins are loaded).
    extra = {k: data.pop(k) for k in list(data) if k not in SECTIONS}
    sections = structure_sections(data, SECTIONS, problems)
    if set(sections) == set(SECTIONS):
        problems += _check(sections)
    if problems:
        raise ConfigError(problems, source=str(path or ""))
    return AgentConfig(plugins=plugins, extra_sections=extra, source=str(path or ""), **sections)


def _check(s: dict[str, Any]) -> list[str]:
    problems = []
    client: ClientSection = s["client"]
    conn: ConnectionSection = s["connection"]
    if not client.server:
        problems.append("client.server: required (the server's address, e.g. 192.0.2.10:8080)")
    for address in [client.server, *client.fallback_servers] if client.server else []:
        from .client import server_url  # noqa: PLC0415 (the agent's URL rules)

        try:
            server_url(address)
        except ValueError as exc:
            key = "client.server" if address == client.server else "client.fallback_servers"
            problems.append(f"{key}: {exc}")
    if client.server_switchback_interval < 0:
        problems.append("client.server_switchback_interval: must be 0 (never) or more")
    if client.auth and ":" not in client.auth:
        problems.append('client.auth: must be "id:password"')
    if not client.auth:
        problems.append("client.auth: required (--auth id:password)")
    if conn.min_retry_interval <= 0 or conn.max_retry_interval < conn.min_retry_interval:
        problems.append("connection.max_retry_interval: must be at least min_retry_interval (> 0)")
    if conn.keep_alive and conn.keep_alive < 1:
        problems.append("connection.keep_alive: must be at least 1s (or 0 to disable)")
    if s["logging"].log_level.lower() not in LOG_LEVELS:
        problems.append(f"logging.log_level: must be one of {', '.join(LOG_LEVELS)}")
    return problems
