"""The public API for plugins: everything a plugin (built-in or third-party) may import.

Built-in plugins use only this module (a test checks it), so a third-party plugin can do
everything they do. Anything else under ``rport.core`` is private and may change.
"""

from __future__ import annotations

from .access import (
    access_denied,
    can_access_client,
    check_client_access,
    client_user_groups,
    visible_clients,
)
from .api.query import (ListQuery, ResourceSpec, apply_list_query, matches, parse_list_query,
                        parse_time)
from .api.routing import Audit, AuditNote, data_response, read_body, read_json
from .clients import Client, ClientRegistry
from .confload import ConfigError, Duration, HostPort, parse_duration, parse_host_port
from .errors import ApiError, ErrorItem, bad_request, not_found
from .events import (
    AddressBanned,
    AgentRefused,
    ApiRequestServed,
    AuditEvent,
    ClientConnected,
    ClientDisconnected,
    ClientRemoved,
    EventBus,
)
from .plugins import PluginError, call_each, hookimpl
from .protocol.pipe import SocketPipe
from .session import (
    Handlers,
    ProtocolViolation,
    RemoteError,
    Session,
    SessionClosed,
    SessionError,
    Stream,
    StreamRefused,
    StreamSink,
)
from .store import KeyedLocks, StoreSchema, WriteBatcher, upsert
from .users import (
    ADMINISTRATORS,
    DB,
    FILE,
    PERMISSIONS,
    STATIC,
    User,
    UserRecord,
    UsersSource,
    all_permissions,
    check_permission,
    effective_permissions,
    on_revoke_sessions,
    read_only,
    require_admin,
    revoke_sessions,
    set_users_source,
    users_source,
)

__all__ = [
    "ADMINISTRATORS", "AddressBanned", "AgentRefused", "ApiRequestServed", "Audit", "AuditEvent",
    "AuditNote", "ApiError", "access_denied", "can_access_client", "check_client_access",
    "client_user_groups", "visible_clients", "Client", "ClientConnected", "ClientDisconnected",
    "ClientRegistry", "ClientRemoved", "ConfigError", "Duration", "KeyedLocks", "ErrorItem", "EventBus", "Handlers", "HostPort",
    "PluginError", "ProtocolViolation", "RemoteError", "ListQuery", "ResourceSpec", "Session", "SessionClosed",
    "SessionError", "SocketPipe", "StoreSchema", "Stream", "StreamRefused", "StreamSink", "User", "WriteBatcher", "apply_list_query", "bad_request", "call_each",
    "data_response", "hookimpl", "matches", "not_found", "parse_duration", "parse_host_port",
    "parse_list_query", "parse_time", "read_body", "read_json", "require_admin", "upsert",
    # users: the users source, permissions, session revocation (rport.core.users)
    "DB", "FILE", "PERMISSIONS", "STATIC", "UserRecord", "UsersSource", "all_permissions", "check_permission",
    "effective_permissions", "on_revoke_sessions", "read_only", "revoke_sessions",
    "set_users_source", "users_source",
]
