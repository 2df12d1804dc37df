"""The server's configuration (``rportd.conf``): RPort's keys, in frozen attrs classes.

Plugins read the ``[server]`` and ``[api]`` keys they need (RPort keeps e.g. ``auth`` and
``used_ports`` there, and our files stay compatible) and get their own ``[plugins.<name>]`` table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import attrs

from .confload import (
    ConfigError,
    Duration,
    env_overrides,
    merge,
    parse_host_port,
    read_toml,
    structure_sections,
)
from .sections import (  # the sections that rport.conf has too
    LOG_LEVELS,
    LoggingSection,
    PluginsSection,
    default_data_dir,
    plugins_section,
)


@attrs.frozen
class ServerSection:
    address: str = "0.0.0.0:8080"
    url: list[str] = attrs.field(factory=list)
    key_seed: str = ""
    auth: str = ""
    auth_file: str = ""
    data_dir: str = attrs.field(factory=default_data_dir)
    keep_disconnected_clients: Duration = Duration(3600)
    purge_disconnected_clients_interval: Duration = Duration(60)
    keep_alive: Duration = Duration(30)
    keep_alive_timeout: Duration = Duration(30)
    handshake_timeout: Duration = Duration(10)
    max_pending_connections: int = 1024
    max_pending_per_address: int = 64
    client_login_wait: Duration = Duration(2)
    max_failed_login: int = 5
    ban_time: Duration = Duration(3600)
    max_request_bytes_client: int = 524288
    # Tunnels (RPort keeps these in [server]; read by the tunnels and proxy plugins).
    used_ports: list[str] = attrs.field(factory=lambda: ["2000-30000"])
    excluded_ports: list[str] = attrs.field(factory=lambda: ["1-1024"])
    check_port_timeout: Duration = Duration(2)
    run_remote_cmd_timeout_sec: int = 60
    tunnel_host: str = ""
    tunnel_proxy_cert_file: str = ""
    tunnel_proxy_key_file: str = ""


@attrs.frozen
class ApiSection:
    address: str = "127.0.0.1:3000"
    auth: str = ""
    auth_file: str = ""
    jwt_secret: str = ""
    cert_file: str = ""
    key_file: str = ""
    max_request_bytes: int = 10240
    max_connections: int = 1024
    read_timeout: Duration = Duration(10)
    max_failed_login: int = 5
    ban_time: Duration = Duration(3600)
    user_login_wait: Duration = Duration(2)


@attrs.frozen
class DatabaseSection:
    url: str = ""
    """Empty: SQLite in ``data_dir/rportd.db``; else ``postgresql://user:password@host/db``
    (or ``sqlite:////path``)."""


@attrs.frozen
class ServerConfig:
    server: ServerSection = attrs.field(factory=ServerSection)
    api: ApiSection = attrs.field(factory=ApiSection)
    database: DatabaseSection = attrs.field(factory=DatabaseSection)
    logging: LoggingSection = attrs.field(factory=LoggingSection)
    plugins: PluginsSection = attrs.field(factory=PluginsSection)
    source: str = ""

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir).expanduser()


SECTIONS = {"server": ServerSection, "api": ApiSection, "database": DatabaseSection,
            "logging": LoggingSection}


def load_server_config(path: Path | None = None, *, overrides: Mapping[str, Any] | None = None,
                       environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults, then the file, then ``RPORTD_<SECTION>_<KEY>`` variables, then ``overrides``
    (command-line flags). Raises :class:`ConfigError` listing every problem."""
    data: dict[str, Any] = read_toml(path) if path else {}
    data = merge(data, env_overrides("rportd", SECTIONS, environ))
    data = merge(data, overrides or {})
    source = str(path) if path else ""
    problems: list[str] = []
    plugins_raw = data.pop("plugins", {}) or {}
    unknown = sorted(set(data) - set(SECTIONS))
    problems += [f"{key}: unknown section" for key in unknown]
    server_raw = data.get("server")
    if isinstance(server_raw, Mapping) and isinstance(server_raw.get("url"), str):
        data["server"] = {**server_raw, "url": [server_raw["url"]]}  # RPort accepts one URL too
    sections = structure_sections(data, SECTIONS, problems)
    plugins = plugins_section(plugins_raw, problems)
    problems += _check(sections)
    problems += _check_addresses(data, sections)
    if problems:
        raise ConfigError(problems, source=source)
    return ServerConfig(plugins=plugins, source=source, **sections)


def _check_addresses(raw: Mapping[str, Any], sections: dict[str, Any]) -> list[str]:
    """Address checks on the raw values, so they are reported even when a section has other
    problems."""
    problems = []
    for section in ("server", "api"):
        value = (raw.get(section) or {}).get("address") if isinstance(raw.get(section), Mapping) else None
        if value is None and section in sections:
            value = sections[section].address
        if isinstance(value, str) and (value or section == "server"):
            try:
                parse_host_port(value)
            except ValueError as exc:
                problems.append(f"{section}.address: {exc}")
    return problems


def _check(s: dict[str, Any]) -> list[str]:
    """Checks across keys, on the sections that structured (so every problem is reported)."""
    problems = []
    server: ServerSection = s.get("server") or ServerSection()
    api: ApiSection = s.get("api") or ApiSection()
    if server.auth and server.auth_file:
        problems.append("server.auth: set either auth or auth_file, not both")
    if server.auth and ":" not in server.auth:
        problems.append('server.auth: must be "id:password"')
    if api.auth and api.auth_file:
        problems.append("api.auth: set either auth or auth_file, not both")
    if api.auth and ":" not in api.auth:
        problems.append('api.auth: must be "user:password"')
    if bool(api.cert_file) != bool(api.key_file):
        problems.append("api.cert_file: cert_file and key_file must be set together")
    for key, value in (("api.cert_file", api.cert_file), ("api.key_file", api.key_file),
                       ("server.auth_file", server.auth_file), ("api.auth_file", api.auth_file)):
        if value and not Path(value).expanduser().is_file():
            problems.append(f"{key}: file not found: {value}")
    if server.keep_alive and server.keep_alive < 1:
        problems.append("server.keep_alive: must be at least 1s (or 0 to disable)")
    if server.handshake_timeout <= 0:
        problems.append("server.handshake_timeout: must be more than 0")
    if server.max_pending_connections < 1:
        problems.append("server.max_pending_connections: must be at least 1")
    if server.max_pending_per_address < 1:
        problems.append("server.max_pending_per_address: must be at least 1")
    if api.max_failed_login < 1:
        problems.append("api.max_failed_login: must be at least 1")
    if api.max_connections < 1:
        problems.append("api.max_connections: must be at least 1")
    if api.read_timeout <= 0:
        problems.append("api.read_timeout: must be more than 0")
    if server.max_failed_login < 1:
        problems.append("server.max_failed_login: must be at least 1")
    if server.max_request_bytes_client < 4096:
        problems.append("server.max_request_bytes_client: must be at least 4096")
    if "database" in s and s["database"].url:
        from .store.url import parse_url  # here: the store is not needed to check a file

        try:
            parse_url(s["database"].url)
        except ValueError as exc:
            problems.append(f"database.url: {exc}")
    if "logging" in s and s["logging"].log_level.lower() not in LOG_LEVELS:
        problems.append(f"logging.log_level: must be one of {', '.join(LOG_LEVELS)}")
    return problems
