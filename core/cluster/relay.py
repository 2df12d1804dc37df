"""An agent held by another node, as seen from this one: a :class:`~rport.core.session.Session`
whose requests go over NATS to the holding node, which asks the agent on its own session.

So code that talks to an agent (``server.clients.session(id).request(...)``) works for every
connected agent of the cluster, e.g. a multi-client command started on one node reaching agents
held by the others. ``open_stream`` relays a stream through the holder (:mod:`.streams`: a
file pushed through this node reaches the agent); the callback interface of streams, which
tunnels use, is not relayed (a tunnel listens on the node holding its agent: its API routes
are forwarded there instead, see :mod:`.forward`). Closing it asks the holder to close the
agent's session.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..session import RemoteError, Session, SessionClosed, Stream, StreamRefused

if TYPE_CHECKING:
    from .node import Cluster


class RelaySession(Session):
    def __init__(self, cluster: "Cluster", node_id: str, client_id: str, session_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.client_id = client_id
        self.session_id = session_id
        self._closed = asyncio.Event()
        self._reason = ""

    def __repr__(self) -> str:
        return f"<RelaySession {self.client_id} on node {self.node_id}>"

    async def request(self, name: str, body: Any = None, *, timeout: float | None = 30.0) -> Any:
        if self.closed:
            raise SessionClosed(self._reason or "closed")
        header = await self.cluster.call_node(
            self.node_id, "agent", {"client_id": self.client_id, "name": name, "body": body,
                                    "timeout": timeout},
            timeout=(timeout or self.cluster.config.forward_timeout) + 5)
        if header is None:  # the holder did not answer: it is gone
            self.cluster.holder_gone(self)
            raise SessionClosed(self._reason)
        if "answer" in header:
            return header["answer"]
        kind, message = header.get("error"), str(header.get("message", ""))
        if kind == "remote":
            raise RemoteError(message)
        if kind == "timeout":
            raise TimeoutError(message)
        raise SessionClosed(message or "closed")

    async def open_stream(self, kind: str, meta: dict[str, Any] | None = None, *,
                          timeout: float | None = 30.0) -> Stream:
        if self.closed:
            raise SessionClosed(self._reason or "closed")
        return await self.cluster.relays.open(self, kind, meta, timeout)

    def open_stream_nowait(self, kind: str, meta: dict[str, Any] | None = None) -> Stream | None:
        raise StreamRefused(f"the agent is held by node {self.node_id}: streams are opened there")

    async def close(self, reason: str = "") -> None:
        """Have the holder close the agent's session (the agent is then disconnected)."""
        if not self.closed:
            try:
                answer = await self.cluster.call_node(self.node_id, "close", {
                    "client_id": self.client_id, "session_id": self.session_id,
                    "reason": reason}, timeout=10)
            except TimeoutError:
                answer = None
            if answer is None:  # the node is gone: the agent is not reached through it any more
                self.cluster.holder_gone(self)
            # else its "disconnected" broadcast follows; meanwhile the client is not connected
            self.mark_closed(reason or "closed")

    def mark_closed(self, reason: str) -> None:
        if not self._closed.is_set():
            self._reason = reason
            self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> str:
        return self._reason

    @property
    def open_streams(self) -> int:
        return 0
