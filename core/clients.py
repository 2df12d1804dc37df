"""Clients (agents) the server knows: connected ones with their session, and disconnected ones
kept for ``keep_disconnected_clients``. One registry per server instance, never module-global.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterator

import attrs

from .session import Session

FACT_FIELDS = (
    "os", "os_arch", "os_family", "os_kernel", "os_full_name", "os_version",
    "os_virtualization_system", "os_virtualization_role", "cpu_family", "cpu_model",
    "cpu_model_name", "cpu_vendor", "num_cpus", "mem_total", "timezone", "hostname", "ipv4", "ipv6",
)
"""System facts the agent gathers and reports in its hello, in RPort's names."""

_FACT_DEFAULTS: dict[str, Any] = {
    **{name: "unknown" for name in FACT_FIELDS}, "num_cpus": 0, "mem_total": 0, "ipv4": [], "ipv6": [],
}


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def clean_facts(raw: Any) -> dict[str, Any]:
    """The facts of a hello, with RPort's types; anything missing or mistyped is a default."""
    raw = raw if isinstance(raw, dict) else {}
    facts: dict[str, Any] = {}
    for name in FACT_FIELDS:
        value, default = raw.get(name), _FACT_DEFAULTS[name]
        if isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        facts[name] = value if ok else default
    return facts


@attrs.define(eq=False)
class Client:
    id: str
    name: str = ""
    facts: dict[str, Any] = attrs.field(factory=dict)
    tags: list[str] = attrs.field(factory=list)
    labels: dict[str, str] = attrs.field(factory=dict)
    version: str = ""
    address: str = ""
    auth_id: str = ""
    session_id: str = ""
    connected_at: float | None = None
    disconnected_at: float | None = None
    plugin_data: dict[str, Any] = attrs.field(factory=dict)
    """What each agent plugin sent in the hello, by plugin name (e.g. the agent's remotes)."""
    allowed_user_groups: list[str] | None = None
    """User groups whose (non-admin) users may see and use this client; set by an
    administrator (``POST /clients/{id}/acl``), kept across reconnections."""
    session: Session | None = attrs.field(default=None, repr=False)
    node_id: str = ""
    """In a cluster, the other node that holds this agent's session ("" when this node holds it,
    and always on a server of its own); ``session`` then relays requests to that node."""

    @property
    def connected(self) -> bool:
        return self.session is not None and not self.session.closed

    def document(self) -> dict[str, Any]:
        """RPort's client JSON, before plugins add their fields (``rport_client_document``)."""
        return {
            "id": self.id,
            "name": self.name,
            **{name: self.facts.get(name, _FACT_DEFAULTS[name]) for name in FACT_FIELDS},
            "tags": list(self.tags),
            "labels": dict(self.labels),
            "version": self.version,
            "address": self.address,
            "tunnels": [],
            "client_auth_id": self.auth_id,
            "connection_state": "connected" if self.connected else "disconnected",
            "disconnected_at": rfc3339(self.disconnected_at),
            "last_heartbeat_at": None,
            "allowed_user_groups": (None if self.allowed_user_groups is None
                                    else list(self.allowed_user_groups)),
            "groups": [],
            "updates_status": None,
            "ext_ip_addresses": None,
            "client_configuration": None,
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "facts": self.facts, "tags": self.tags,
            "labels": self.labels, "version": self.version, "address": self.address,
            "auth_id": self.auth_id, "session_id": self.session_id,
            "connected_at": self.connected_at, "plugin_data": self.plugin_data,
            "allowed_user_groups": self.allowed_user_groups,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], disconnected_at: float | None) -> "Client":
        fields = {f.name for f in attrs.fields(cls)} - {"session", "disconnected_at", "node_id"}
        return cls(**{k: v for k, v in record.items() if k in fields}, disconnected_at=disconnected_at)


class ClientRegistry:
    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def put(self, client: Client) -> None:
        self._clients[client.id] = client

    def remove(self, client_id: str) -> Client | None:
        return self._clients.pop(client_id, None)

    def session(self, client_id: str) -> Session | None:
        """The live session of a connected client, or None."""
        client = self._clients.get(client_id)
        return client.session if client is not None and client.connected else None

    def connected(self) -> list[Client]:
        return [c for c in self._clients.values() if c.connected]

    def ids_json_size(self) -> int:
        """Bytes that a JSON list naming every known client takes (``["a", "b", ...]``): the
        room a request body that targets clients by id needs beyond ``max_request_bytes``."""
        return sum(len(json.dumps(cid)) + 2 for cid in self._clients)

    def counts(self) -> tuple[int, int]:
        connected = sum(1 for c in self._clients.values() if c.connected)
        return connected, len(self._clients) - connected
