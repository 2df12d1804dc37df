"""Clients (agents) the server knows: connected ones with their session, and disconnected ones
kept for ``keep_disconnected_clients``. One registry per server instance, never module-global.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Callable, Iterable, Iterator

import attrs

from .api.query import Filter, Forms, forms, sort_key, string_form
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
    _watcher: Callable[["Client", str], None] | None = attrs.field(default=None, init=False,
                                                                   repr=False)
    """Told of every assignment to a field once the client is in a registry (which keeps its
    counts, cached document and orders by it): fields are replaced, never changed in place."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        watcher = getattr(self, "_watcher", None)  # (not set yet while __init__ runs)
        if watcher is not None and name != "_watcher":
            watcher(self, name)

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


SORT_SOURCES = frozenset({"id", "name", "facts", "version"})
"""The fields of :class:`Client` that the sortable fields of its document come from."""


def sort_value(client: Client, field: str) -> Any:
    """The value of a sortable field (``id``, ``name``, ``os``, ``hostname``, ``version``) in
    the client's document, without building the document."""
    if field in FACT_FIELDS:
        return client.facts.get(field, _FACT_DEFAULTS[field])
    return getattr(client, field)


class _Cached:
    """A client's document and user groups as the plugins last made them."""

    __slots__ = ("client", "doc", "user_groups", "forms")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.doc: dict[str, Any] | None = None
        self.user_groups: frozenset[str] | None = None
        self.forms: _Forms | None = None
        """The filterable strings of the document's fields that filters asked for."""


class _Forms(dict[str, Forms]):
    """The filterable strings of a document's fields, made for the fields filters ask for."""

    __slots__ = ("doc",)

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__()
        self.doc = doc

    def of(self, column: str) -> Forms:
        found = self.get(column)
        if found is None:
            found = self[column] = forms(self.doc.get(column))
        return found


class ClientRegistry:
    """The known clients of one server, by id, with what the API asks of them on every call
    kept up to date as they change instead of computed from every client each time:

    - the counts of connected and disconnected clients (``GET /status``);
    - each client's document as the plugins make it (``rport_client_document``) and its user
      groups (``rport_client_user_groups``), built on first use and kept until the client
      changes: any assignment to one of its fields (the registry watches them), a new object
      for its id, its removal, or :meth:`changed` (a plugin's data behind them changed);
    - the clients in the order of each sortable field, kept until a client is added or
      removed or one of the fields the order comes from (``SORT_SOURCES``) changes;
    - the size of the JSON list of every id (:meth:`ids_json_size`).
    """

    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}
        self._connected: set[str] = set()
        self._ids_json = 0
        self._cache: dict[str, _Cached] = {}
        self._orders: dict[tuple[str, bool], list[str]] = {}
        self._build_document: Callable[[Client], dict[str, Any]] = Client.document
        self._build_user_groups: Callable[[Client], Iterable[str]] = \
            lambda c: c.allowed_user_groups or ()
        self.changes = 0
        """Bumped at every change of any client (added, removed, a field, :meth:`changed`)."""

    def configure(self, *, document: Callable[[Client], dict[str, Any]],
                  user_groups: Callable[[Client], Iterable[str]]) -> None:
        """How a client's full document and user groups are made (the server's plugins)."""
        self._build_document, self._build_user_groups = document, user_groups
        self.changed()

    # -- the clients ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    def put(self, client: Client) -> None:
        previous = self._clients.get(client.id)
        if previous is not None:
            previous._watcher = None
        else:
            self._ids_json += _id_json_size(client.id)
        self._clients[client.id] = client
        client._watcher = self._on_change
        self._update(client)
        self._orders.clear()

    def remove(self, client_id: str) -> Client | None:
        client = self._clients.pop(client_id, None)
        if client is not None:
            client._watcher = None
            self._ids_json -= _id_json_size(client_id)
            self._connected.discard(client_id)
            self._cache.pop(client_id, None)
            self._orders.clear()
            self.changes += 1
        return client

    def session(self, client_id: str) -> Session | None:
        """The live session of a connected client, or None."""
        client = self._clients.get(client_id)
        return client.session if client is not None and client.connected else None

    def connected(self) -> list[Client]:
        return [self._clients[cid] for cid in self._connected]

    def ids_json_size(self) -> int:
        """Bytes that a JSON list naming every known client takes (``["a", "b", ...]``): the
        room a request body that targets clients by id needs beyond ``max_request_bytes``."""
        return self._ids_json

    def counts(self) -> tuple[int, int]:
        """(connected, disconnected) clients."""
        return len(self._connected), len(self._clients) - len(self._connected)

    # -- what changes ---------------------------------------------------------------------------

    def changed(self, client_id: str | None = None) -> None:
        """What a plugin adds to the document or the user groups of ``client_id`` (of every
        client: None) has changed: they are made again when next asked for. A plugin calls it
        whenever the data behind its ``rport_client_document`` or ``rport_client_user_groups``
        changes (a tunnel opened, a client group edited); changes to the client's own fields
        need no call."""
        if client_id is None:
            self._cache.clear()
        else:
            self._cache.pop(client_id, None)
        self.changes += 1

    def _on_change(self, client: Client, name: str) -> None:
        if self._clients.get(client.id) is not client:
            return
        self._update(client)
        if name in SORT_SOURCES:
            self._orders.clear()

    def _update(self, client: Client) -> None:
        if client.connected:
            self._connected.add(client.id)
        else:
            self._connected.discard(client.id)
        self._cache.pop(client.id, None)
        self.changes += 1

    # -- what the API asks --------------------------------------------------------------------------

    def _cached(self, client: Client) -> _Cached:
        entry = self._cache.get(client.id)
        if entry is None or entry.client is not client:
            entry = _Cached(client)
            if self._clients.get(client.id) is client:  # only known clients are kept
                self._cache[client.id] = entry
        return entry

    def document(self, client: Client) -> dict[str, Any]:
        """The client's full document (the plugins' fields included), shared: copy it before
        changing it."""
        entry = self._cached(client)
        if entry.doc is None:
            entry.doc = self._build_document(client)
        return entry.doc

    def user_groups(self, client: Client) -> frozenset[str]:
        """The user groups whose non-admin users may see and use the client."""
        entry = self._cached(client)
        if entry.user_groups is None:
            entry.user_groups = frozenset(self._build_user_groups(client))
        return entry.user_groups

    def filtered(self, clients: Iterable[Client], filters: Iterable[Filter]) -> list[Client]:
        """The ``clients`` whose documents pass every filter (as ``Filter.matches_row``), on
        the strings kept of their documents' fields."""
        tests = [f.compile() for f in filters]
        selected = []
        for client in clients:
            entry = self._cached(client)
            if entry.forms is None:
                entry.forms = _Forms(entry.doc if entry.doc is not None else self.document(client))
            forms_of = entry.forms.of
            for test in tests:
                if not test(forms_of):
                    break
            else:
                selected.append(client)
        return selected

    def order(self, field: str, descending: bool = False) -> list[str]:
        """Every client's id in the order of sortable ``field`` (see :func:`sort_value`);
        equal values in id order in both directions, as ``GET /clients`` sorts."""
        key = (field, descending)
        ids = self._orders.get(key)
        if ids is None:
            by_id = self._orders.get(("id", False))
            if by_id is None:
                by_id = sorted(self._clients, key=_id_key)
                self._orders[("id", False)] = by_id
            if key == ("id", False):
                return by_id
            clients = self._clients
            ids = sorted(by_id, key=lambda cid: sort_key(sort_value(clients[cid], field)),
                         reverse=descending)
            self._orders[key] = ids
        return ids


def _id_json_size(client_id: str) -> int:
    return len(json.dumps(client_id)) + 2


def _id_key(client_id: str) -> tuple[tuple[int, Any], str]:
    return (sort_key(client_id), string_form(client_id))
