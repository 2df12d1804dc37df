"""The server's configuration (``rportd.conf``): RPort's keys, in frozen attrs classes.

Plugins read the ``[server]`` and ``[api]`` keys they need (RPort keeps e.g. ``auth`` and
``used_ports`` there, and our files stay compatible) and get their own ``[plugins.<name>]`` table.
"""

from __future__ import annotations

import os
import re
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


def default_data_dir(program: str = "rportd") -> str:
    """RPort's ``/var/lib/rport`` for root; a per-user directory (``~/.local/share/<program>``)
    otherwise."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/rport"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / program)


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
    max_filepush_size: int = 10485760
    """RPort's limit of a file uploaded to ``/files`` (the uploads plugin), in bytes."""
    max_connections: int = 1024
    read_timeout: Duration = Duration(10)
    max_failed_login: int = 5
    ban_time: Duration = Duration(3600)
    user_login_wait: Duration = Duration(2)
    # API users in the database (the users plugin), instead of auth or auth_file, as RPort.
    auth_user_table: str = ""
    auth_group_table: str = ""
    auth_group_details_table: str = ""
    password_min_length: int = 14
    # Two-factor login with an authenticator app (TOTP), RPort's keys.
    totp_enabled: bool = False
    totp_login_session_ttl: Duration = Duration(600)
    totp_account_name: str = "RPort"
    # The audit log (RPort keeps these in [api]; read by the auditlog plugin).
    enable_audit_log: bool = True
    use_ip_obfuscation: bool = False
    audit_log_rotation: str = "monthly"


@attrs.frozen
class DatabaseSection:
    url: str = ""
    """Empty: SQLite in ``data_dir/rportd.db``; else ``postgresql://user:password@host/db``
    (or ``sqlite:////path``)."""


@attrs.frozen
class ClusterSection:
    """Several rportd nodes on one PostgreSQL database and one NATS system (docs/operations.md,
    "Running a cluster"). Empty ``nats_url``: one node on its own, nothing of this is used."""

    nats_url: list[str] = attrs.field(factory=list)
    """``nats://[user:password@]host:4222`` (``tls://`` for TLS); several for a NATS cluster."""
    node_id: str = ""
    """This node's name in the cluster (default: the host name); unique, letters, digits, - _."""
    secret: str = ""
    """Shared by every node: messages between nodes are signed with it (HMAC-SHA256)."""
    nats_creds_file: str = ""
    nats_ca_file: str = ""
    nats_cert_file: str = ""
    nats_key_file: str = ""
    subject_prefix: str = "rport"
    heartbeat_interval: Duration = Duration(1)
    node_timeout: Duration = Duration(5)
    """A node not heard of for this long is dead: its agents are disconnected (they come back
    through ``fallback_servers``)."""
    forward_timeout: Duration = Duration(90)
    """The longest an API request forwarded to the node holding the agent may take."""


@attrs.frozen
class LoggingSection:
    log_file: str = ""
    log_level: str = "info"


@attrs.frozen
class PluginsSection:
    disabled: list[str] = attrs.field(factory=list)
    tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class ServerConfig:
    server: ServerSection = attrs.field(factory=ServerSection)
    api: ApiSection = attrs.field(factory=ApiSection)
    database: DatabaseSection = attrs.field(factory=DatabaseSection)
    cluster: ClusterSection = attrs.field(factory=ClusterSection)
    logging: LoggingSection = attrs.field(factory=LoggingSection)
    plugins: PluginsSection = attrs.field(factory=PluginsSection)
    source: str = ""

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir).expanduser()


SECTIONS = {"server": ServerSection, "api": ApiSection, "database": DatabaseSection,
            "cluster": ClusterSection, "logging": LoggingSection}
LOG_LEVELS = ("error", "warning", "info", "debug")
AUDIT_LOG_ROTATIONS = ("daily", "weekly", "monthly", "yearly")


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
    cluster_raw = data.get("cluster")
    if isinstance(cluster_raw, Mapping) and isinstance(cluster_raw.get("nats_url"), str):
        data["cluster"] = {**cluster_raw, "nats_url": [u for u in cluster_raw["nats_url"].split(",")
                                                       if u.strip()]}
    sections = structure_sections(data, SECTIONS, problems)
    plugins = plugins_section(plugins_raw, problems)
    problems += _check(sections)
    problems += _check_addresses(data, sections)
    if problems:
        raise ConfigError(problems, source=source)
    return ServerConfig(plugins=plugins, source=source, **sections)


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


def _check_users_source(api: ApiSection) -> list[str]:
    """One users source (auth, auth_file or auth_user_table), and its companions."""
    problems = []
    if api.auth_user_table and (api.auth or api.auth_file):
        problems.append("api.auth_user_table: set only one of auth, auth_file or auth_user_table")
    if api.auth_user_table and not api.auth_group_table:
        problems.append("api.auth_group_table: must be set when auth_user_table is set")
    for key in ("auth_group_table", "auth_group_details_table"):
        if getattr(api, key) and not api.auth_user_table:
            problems.append(f"api.{key}: needs auth_user_table (users in the database)")
    if api.password_min_length < 1:
        problems.append("api.password_min_length: must be at least 1")
    if api.totp_enabled and not api.auth_user_table:
        problems.append("api.totp_enabled: needs the users in the database (auth_user_table): "
                        "each user's TOTP secret is kept there")
    if api.totp_login_session_ttl <= 0:
        problems.append("api.totp_login_session_ttl: must be more than 0")
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
    problems += _check_users_source(api)
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
    if api.max_filepush_size < 1:
        problems.append("api.max_filepush_size: must be at least 1 (bytes)")
    if api.max_failed_login < 1:
        problems.append("api.max_failed_login: must be at least 1")
    if api.max_connections < 1:
        problems.append("api.max_connections: must be at least 1")
    if api.read_timeout <= 0:
        problems.append("api.read_timeout: must be more than 0")
    if api.audit_log_rotation not in AUDIT_LOG_ROTATIONS:
        problems.append("api.audit_log_rotation: must be one of "
                        f"{', '.join(AUDIT_LOG_ROTATIONS)}, not {api.audit_log_rotation!r}")
    if server.max_failed_login < 1:
        problems.append("server.max_failed_login: must be at least 1")
    if server.max_request_bytes_client < 4096:
        problems.append("server.max_request_bytes_client: must be at least 4096")
    if "database" in s and s["database"].url:
        from .store.url import parse_url  # here: the agent imports this module too, not the store

        try:
            parse_url(s["database"].url)
        except ValueError as exc:
            problems.append(f"database.url: {exc}")
    if "cluster" in s and s["cluster"].nats_url:
        problems += _check_cluster(s["cluster"], s.get("database") or DatabaseSection(), api)
    if "logging" in s and s["logging"].log_level.lower() not in LOG_LEVELS:
        problems.append(f"logging.log_level: must be one of {', '.join(LOG_LEVELS)}")
    return problems


NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_CLUSTER_SECRET = 16


def _check_cluster(cluster: ClusterSection, database: DatabaseSection, api: ApiSection) -> list[str]:
    """A cluster needs a database every node shares, one secret, and one jwt_secret."""
    problems = []
    if not database.url or not database.url.strip().lower().startswith(("postgresql", "postgres:")):
        problems.append("cluster.nats_url: a cluster needs [database] url = \"postgresql://...\" "
                        "(several nodes cannot share the embedded SQLite file)")
    for url in cluster.nats_url:
        if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
            problems.append(f"cluster.nats_url: {url!r} is not a NATS URL (nats://host:4222)")
    if cluster.node_id and not NODE_ID.match(cluster.node_id):
        problems.append("cluster.node_id: letters, digits, - and _ only (at most 64)")
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", cluster.subject_prefix):
        problems.append("cluster.subject_prefix: letters, digits, - and _ only (at most 32)")
    if len(cluster.secret) < MIN_CLUSTER_SECRET:
        problems.append(f"cluster.secret: required, at least {MIN_CLUSTER_SECRET} characters, the "
                        "same on every node (nodes sign what they send each other with it)")
    if not api.jwt_secret:
        problems.append("api.jwt_secret: required in a cluster, the same on every node (a login "
                        "token from one node must be valid on the others)")
    if cluster.heartbeat_interval <= 0 or cluster.node_timeout < 2 * cluster.heartbeat_interval:
        problems.append("cluster.node_timeout: must be at least twice heartbeat_interval (> 0)")
    if cluster.forward_timeout <= 0:
        problems.append("cluster.forward_timeout: must be more than 0")
    if bool(cluster.nats_cert_file) != bool(cluster.nats_key_file):
        problems.append("cluster.nats_cert_file: nats_cert_file and nats_key_file must be set together")
    for key in ("nats_creds_file", "nats_ca_file", "nats_cert_file", "nats_key_file"):
        value = getattr(cluster, key)
        if value and not Path(value).expanduser().is_file():
            problems.append(f"cluster.{key}: file not found: {value}")
    return problems
