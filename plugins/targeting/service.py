"""The per-server targeting service: the stored client groups (cached in memory, written
through to the store), their JSON with members computed live, ``/client-tags``, and the
resolution of multi-client targets for other plugins (``server.state["targeting"]``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rport.core.plugin import ApiError, Client

from .groups import ClientGroup, client_values, parse_group, quote
from .select import resolve_targets
from .store import GroupExists, GroupStore

log = logging.getLogger("rport.plugins.targeting")


def not_found(group_id: str) -> ApiError:
    return ApiError(404, f"Client Group[id={quote(group_id)}] not found.",
                    code="ERR_CODE_CLIENT_GROUP_NOT_FOUND")


class Targeting:
    """Client groups and target resolution for one server.

    ``clients`` is the server's registry (anything iterable over :class:`Client`); ``store``
    a :class:`GroupStore`. Reads never touch the store: the groups are cached, and every
    write goes to the store first (committed) and then to the cache, one write at a time.
    """

    def __init__(self, clients: Iterable[Client], store: GroupStore,
                 on_change: Callable[[], None] | None = None) -> None:
        self.clients = clients
        self.store = store
        self._on_change = on_change or (lambda: None)
        """Called after the groups changed: every client's ``groups`` and user groups may have."""
        self._groups: dict[str, ClientGroup] = {}
        self._write = asyncio.Lock()

    async def reload(self) -> None:
        """Read the groups again (another node of a cluster wrote them)."""
        async with self._write:
            self._groups = {}
            await self.load()
        self._on_change()  # every client's groups and user groups may differ now

    async def load(self) -> None:
        for record in await self.store.load():
            try:
                group = parse_group(record)
            except ApiError as exc:
                log.error("client group %r in the store is invalid and was skipped: %s",
                          record.get("id"), "; ".join(i.detail for i in exc.items))
                continue
            self._groups[group.id] = group
        log.info("%d client group(s) loaded", len(self._groups))

    # -- groups -------------------------------------------------------------------------------

    @property
    def groups(self) -> Mapping[str, ClientGroup]:
        return dict(self._groups)

    def get(self, group_id: str) -> ClientGroup:
        group = self._groups.get(group_id)
        if group is None:
            raise not_found(group_id)
        return group

    async def create(self, body: Any) -> ClientGroup:
        group = parse_group(body)
        async with self._write:
            try:
                await self.store.insert(group.to_record())
            except GroupExists:
                raise ApiError(409, f"Client group with id {quote(group.id)} already exists.",
                               code="ERR_CODE_ALREADY_EXIST") from None
            self._groups[group.id] = group
            self._on_change()
        return group

    async def put(self, group_id: str, body: Any) -> ClientGroup:
        """Create or replace group ``group_id``; a body without ``id`` takes the path's."""
        if isinstance(body, dict) and body.get("id") is None:
            body = {**body, "id": group_id}
        if isinstance(body, dict) and body["id"] != group_id:
            raise ApiError(400, '"group_id" route param doesn\'t match group ID from request body.',
                           code="ERR_CODE_ID_MISMATCH",
                           detail=f"route: {quote(group_id)}, body: {quote(str(body['id']))}")
        group = parse_group(body)
        async with self._write:
            await self.store.upsert(group.to_record())
            self._groups[group.id] = group
            self._on_change()
        return group

    async def delete(self, group_id: str) -> None:
        async with self._write:
            await self.store.delete(group_id)
            self._groups.pop(group_id, None)
            self._on_change()

    # -- documents ----------------------------------------------------------------------------

    def documents(self, groups: Iterable[ClientGroup] | None = None,
                  clients: Iterable[Client] | None = None) -> list[dict[str, Any]]:
        """RPort's group JSON, ``client_ids`` and counts computed from the current clients (or
        from ``clients``: those the caller may see)."""
        groups = list(self._groups.values() if groups is None else groups)
        if not groups:  # no client's values to compute (10,000 clients: most of a second)
            return []
        snapshot = [(c, client_values(c)) for c in (self.clients if clients is None else clients)]
        docs = []
        for group in groups:
            found = sorted((c for c, values in snapshot if group.matches(c, values)),
                           key=lambda c: c.id)
            docs.append({
                "id": group.id,
                "description": group.description,
                "params": group.params_json(),
                "allowed_user_groups": list(group.allowed_user_groups),
                "client_ids": [c.id for c in found],
                "num_clients": len(found),
                "num_clients_connected": sum(1 for c in found if c.connected),
            })
        return docs

    def document(self, group: ClientGroup, clients: Iterable[Client] | None = None) -> dict[str, Any]:
        return self.documents([group], clients)[0]

    def groups_of(self, client: Client) -> list[str]:
        """The ids of the groups ``client`` belongs to, sorted (its ``groups`` field)."""
        if not self._groups:  # called for every listed client: skip its values when there is no group
            return []
        values = client_values(client)
        return sorted(g.id for g in self._groups.values() if g.matches(client, values))

    def user_groups_of(self, client: Client) -> set[str]:
        """The ``allowed_user_groups`` of the groups ``client`` belongs to: their users may see
        the client."""
        if not any(g.allowed_user_groups for g in self._groups.values()):
            return set()
        values = client_values(client)
        return {user_group for g in self._groups.values() if g.allowed_user_groups
                and g.matches(client, values) for user_group in g.allowed_user_groups}

    def client_tags(self, clients: Iterable[Client] | None = None) -> list[dict[str, Any]]:
        """``[{tag, client_ids}]`` over every known client (or ``clients``), by tag; ids
        sorted."""
        by_tag: dict[str, set[str]] = {}
        for client in (self.clients if clients is None else clients):
            for tag in client.tags:
                by_tag.setdefault(tag, set()).add(client.id)
        return [{"tag": tag, "client_ids": sorted(ids)} for tag, ids in sorted(by_tag.items())]

    # -- targets ------------------------------------------------------------------------------

    async def resolve(self, body: Mapping[str, Any],
                      matchable: Iterable[Client] | None = None) -> list[Client]:
        """The clients a multi-client request targets (see :func:`.select.resolve_targets`);
        raises :class:`ApiError` with RPort's messages. Tags, labels and groups select among
        ``matchable`` (a non-admin's visible clients), ``client_ids`` among every client."""
        return resolve_targets(body, self.clients, self._groups, matchable)
