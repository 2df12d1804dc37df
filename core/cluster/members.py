"""The agents of the whole cluster as one node sees them: what this node tells the others about
the agents it holds, and what it makes of what they tell it.

Every node's :class:`~rport.core.clients.ClientRegistry` holds every client. One held by another
node has ``node_id`` set and a :class:`~.relay.RelaySession`; it becomes disconnected here in
one place (:meth:`Members.disconnect_remote`): its node said so, stopped, went silent, or did not
answer a request. The holder of each agent is also in the database (``cluster_clients``), read
when a node starts or hears of a node it did not know.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ..clients import Client
from ..events import ClientDisconnected, ClientRemoved
from . import tables
from .relay import RelaySession

if TYPE_CHECKING:
    from .node import Cluster

log = logging.getLogger("rport.cluster")


class Members:
    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster
        self.server = cluster.server

    # -- the agents this node holds ----------------------------------------------------------------

    async def connected(self, client: Client) -> None:
        """An agent finished its handshake here: recorded as ours (before its record is saved,
        so that a node releasing a dead node's agents cannot undo it), and announced."""
        cluster = self.cluster
        now = client.connected_at or time.time()
        await self.server.store.run(tables.hold, client.id, cluster.node_id, client.session_id, now)
        cluster.broadcast({"op": "connected", "node": cluster.node_id, "client_id": client.id,
                           "session_id": client.session_id, "record": client.to_record()})

    async def disconnected(self, client: Client, reason: str) -> bool:
        """This node's session of the agent ended. Returns False if another node holds the
        agent by now (it took it over): then nothing of this session may be written."""
        cluster = self.cluster
        try:
            ours = await self.server.store.run(tables.let_go, client.id, cluster.node_id,
                                               client.session_id)
        except Exception:
            log.exception("cluster: cannot record that client %s disconnected", client.id)
            ours = True
        if ours:
            cluster.broadcast({"op": "disconnected", "node": cluster.node_id,
                               "client_id": client.id, "session_id": client.session_id,
                               "reason": reason, "at": client.disconnected_at or time.time()})
        return ours

    async def reassert(self) -> None:
        """After NATS came back: the others may have declared us dead meanwhile."""
        for client in self.server.clients:
            if not client.node_id and client.connected:
                try:
                    await self.connected(client)
                except Exception as exc:
                    log.warning("cluster: client %s not announced again: %s", client.id, exc)

    # -- agents of other nodes ----------------------------------------------------------------------

    def holder(self, client_id: str) -> str | None:
        """The other node holding this agent's session, or None (here, or not connected)."""
        client = self.server.clients.get(client_id)
        if client is None or not client.node_id or not client.connected:
            return None
        return client.node_id

    async def check_holder(self, client: Client) -> None:
        """Before refusing an agent as "already connected" because another node holds it: is
        that node still there? If not, its agent is disconnected now (and may be admitted)."""
        if not client.node_id or not client.connected:
            return
        try:
            answer = await self.cluster.call_node(client.node_id, "ping", {}, timeout=2)
        except TimeoutError:
            answer = None
        if answer is None and isinstance(client.session, RelaySession):
            self.holder_gone(client.session)

    def holder_gone(self, relay: RelaySession) -> None:
        """A relay's node did not answer: its client is disconnected here."""
        client = self.server.clients.get(relay.client_id)
        if client is not None and client.session is relay and not relay.closed:
            self.disconnect_remote(client, f"node {relay.node_id} is unreachable")
        relay.mark_closed(f"node {relay.node_id} is unreachable")

    def disconnect_remote(self, client: Client, reason: str, at: Any = None) -> None:
        """The one place where a client held by another node becomes disconnected here."""
        assert isinstance(client.session, RelaySession)
        client.session.mark_closed(reason)
        client.disconnected_at = float(at) if isinstance(at, (int, float)) else time.time()
        self.server.bus.publish(ClientDisconnected(client.id, reason))

    def node_gone(self, node_id: str, why: str) -> None:
        count = 0
        for client in self.server.clients:
            if client.node_id == node_id and client.disconnected_at is None:
                self.disconnect_remote(client, f"node {node_id} {why}")
                count += 1
        log.warning("cluster: node %s %s; %d of its client(s) disconnected", node_id, why, count)

    def apply(self, op: str, sender: str, header: dict[str, Any]) -> None:
        """What another node said about its agents (``connected``, ``disconnected``,
        ``removed``, ``changed``)."""
        clients = self.server.clients
        client = clients.get(str(header.get("client_id")))
        if op == "connected":
            self._remote_connected(sender, header)
        elif op == "disconnected":
            if (client is not None and client.node_id == sender
                    and isinstance(client.session, RelaySession)
                    and client.session.session_id == header.get("session_id")
                    and client.disconnected_at is None):
                self.disconnect_remote(client, str(header.get("reason") or "disconnected"),
                                       at=header.get("at"))
        elif op == "removed":
            if client is None or (not client.node_id and client.connected):
                return  # unknown, or connected here again meanwhile: ours
            clients.remove(client.id)
            self.server.bus.publish(ClientRemoved(client.id, str(header.get("reason", ""))))
        elif op == "changed" and client is not None:
            groups = header.get("allowed_user_groups")
            client.allowed_user_groups = list(groups) if isinstance(groups, list) else None
            tags, labels = header.get("tags"), header.get("labels")
            if isinstance(tags, list) and isinstance(labels, dict):
                client.tags = [str(t) for t in tags]
                client.labels = {str(k): str(v) for k, v in labels.items()}

    def _relayed(self, record: dict[str, Any], node_id: str, session_id: str) -> Client:
        client = Client.from_record(record, None)
        client.node_id = node_id
        client.session = RelaySession(self.cluster, node_id, client.id, session_id)
        return client

    def _remote_connected(self, node_id: str, header: dict[str, Any]) -> None:
        record = header.get("record")
        if not isinstance(record, dict) or record.get("id") != header.get("client_id"):
            return
        client_id = str(header.get("client_id"))
        existing = self.server.clients.get(client_id)
        self.server.clients.put(self._relayed(record, node_id, str(header.get("session_id"))))
        if existing is not None and not existing.node_id and existing.connected:
            # The agent came back through another node while we still had its old session:
            # the other node won (it holds it in the database), ours closes.
            log.info("client %s: taken over by node %s; closing its session here", client_id, node_id)
            self.cluster.spawn(self._close_taken_over(existing, node_id))
        elif existing is not None and isinstance(existing.session, RelaySession):
            existing.session.mark_closed("reconnected elsewhere")  # replaced by the new one

    async def _close_taken_over(self, client: Client, node_id: str) -> None:
        reason = f"taken over by node {node_id}"
        if client.session is not None:
            await client.session.close(reason)
        self.server.bus.publish(ClientDisconnected(client.id, reason))

    # -- from the database ----------------------------------------------------------------------------

    async def load(self, live: set[str], now: float) -> None:
        """At start: every known client, connected (through another live node) or not."""
        server = self.server
        holders = await server.store.run(tables.all_holders)
        keep = server.config.server.keep_disconnected_clients
        for record, disconnected_at in await server.store.load_clients():
            client_id = str(record.get("id"))
            held = holders.get(client_id)
            if held is not None and held[0] in live:
                client = self._relayed(record, held[0], held[1])
            else:
                client = Client.from_record(record, disconnected_at or now)
                if keep <= 0 or now - (client.disconnected_at or now) >= keep:
                    continue  # left for the purge (one node does it)
            if server.clients.get(client_id) is None:
                server.clients.put(client)
        connected = sum(1 for c in server.clients if c.connected)
        log.info("cluster: %d client(s) known, %d connected through other nodes",
                 len(server.clients), connected)

    async def load_node(self, node_id: str) -> None:
        """A node we had not heard of (started, or back after a partition): its agents."""
        holders = await self.server.store.run(tables.all_holders)
        theirs = {cid: sid for cid, (node, sid) in holders.items() if node == node_id}
        if not theirs:
            return
        for client_id, record, _at in await self.server.store.run(tables.records_of, list(theirs)):
            existing = self.server.clients.get(client_id)
            if existing is not None and existing.connected:
                continue
            self.server.clients.put(self._relayed(json.loads(record), node_id, theirs[client_id]))
