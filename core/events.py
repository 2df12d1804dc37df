"""The in-process event bus: attrs events delivered to subscribers through bounded queues.

Publishing never waits: each subscriber has its own queue and task, so a slow subscriber delays
no one. A subscriber that falls so far behind that its queue is full loses the event, and the loss
is logged with the subscriber's owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import attrs

from .session import Session

log = logging.getLogger("rport.events")


@attrs.frozen
class ClientConnected:
    """An agent finished its handshake and is registered."""

    client_id: str
    session: Session = attrs.field(repr=False, eq=False)

    def live_client(self, server: Any) -> Any:
        """The client, if it is still on this event's session: subscribers run after the
        event, by which time the agent may have disconnected or reconnected (a new event)."""
        client = server.clients.get(self.client_id)
        return client if client is not None and client.session is self.session else None


@attrs.frozen
class ClientDisconnected:
    """An agent's session ended (``reason`` says why)."""

    client_id: str
    reason: str


@attrs.frozen
class ClientRemoved:
    """A client's record was deleted (DELETE /clients/{id}, purge, or removed on disconnect)."""

    client_id: str
    reason: str


@attrs.frozen
class AuditEvent:
    """One action for the audit log (plugin ``auditlog``), in RPort's terms: ``application``
    (``client.tunnel``) and ``action`` (``create``). The core's route wrapper publishes one for
    every successful request to a route registered with ``audit=``; plugins publish their own
    for actions outside the API (a job that finished, a scheduled run).

    ``client_ids``: the clients affected, one entry each (none: one entry without a client).
    ``request``/``response``: JSON-able values recorded as JSON text; the audit log redacts
    secrets (keys ending in ``password``, ``secret``, ``token``, ``key``) and bounds their size.
    """

    application: str
    action: str
    username: str = ""
    remote_ip: str = ""
    affected_id: str = ""
    client_ids: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    request: Any = attrs.field(default=None, eq=False)
    response: Any = attrs.field(default=None, eq=False)
    timestamp: float = attrs.field(factory=time.time)


@attrs.frozen
class ApiRequestServed:
    """An API request was answered (by the core's route wrapper), for metrics: the route's
    name (``tunnels:create``), the method, the status code and the seconds it took to produce
    the response (a streamed body's time is not included)."""

    route: str
    method: str
    status: int
    seconds: float


@attrs.frozen
class AgentRefused:
    """An agent's connection ended before it was admitted. ``reason`` is one of ``auth``
    (wrong credentials), ``banned`` (its address is banned), ``throttled`` (it must wait after
    a failure), ``invalid_hello``, ``incompatible`` (protocol version), ``duplicate`` (the
    client id is connected already), ``plugin`` (a plugin refused it), ``timeout`` (no hello in
    time), ``protocol`` (a protocol violation), ``closed`` (it went away)."""

    address: str
    reason: str


@attrs.frozen
class AddressBanned:
    """An address is banned after too many failed logins in a row: ``scope`` ``agent`` (agent
    logins, ``[server] max_failed_login``) or ``api`` (API logins, ``[api] max_failed_login``)."""

    scope: str
    address: str


@attrs.define
class _Subscriber:
    event_type: type
    handler: Callable[[Any], Awaitable[None]]
    owner: str
    queue: asyncio.Queue[Any]
    task: asyncio.Task[None] | None = None


class EventBus:
    def __init__(self, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._subscribers: list[_Subscriber] = []
        self._running = False
        self._shared: set[type] = set()
        self.bridge: Callable[[Any], None] | None = None
        """In a cluster: sends shared events to the other nodes (set by the cluster layer)."""

    def share(self, event_type: type) -> None:
        """Events of ``event_type`` (a frozen attrs class of JSON values) published on one node
        of a cluster reach the subscribers of every node. On a server of its own, nothing
        changes."""
        self._shared.add(event_type)

    @property
    def shared(self) -> set[type]:
        return set(self._shared)

    def subscribe(self, event_type: type, handler: Callable[[Any], Awaitable[None]], owner: str) -> None:
        sub = _Subscriber(event_type, handler, owner, asyncio.Queue(self._queue_size))
        self._subscribers.append(sub)
        if self._running:
            sub.task = asyncio.get_running_loop().create_task(self._pump(sub))

    def publish(self, event: Any) -> None:
        if self.bridge is not None and type(event) in self._shared:
            self.bridge(event)
        self.deliver(event)

    def deliver(self, event: Any) -> None:
        """To this server's subscribers only (an event that came from another node)."""
        for sub in self._subscribers:
            if isinstance(event, sub.event_type):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    log.error("subscriber of %s from plugin %r is %d events behind; dropped %r",
                              sub.event_type.__name__, sub.owner, sub.queue.qsize(), event)

    async def start(self) -> None:
        self._running = True
        for sub in self._subscribers:
            sub.task = asyncio.get_running_loop().create_task(self._pump(sub))

    async def stop(self) -> None:
        """Deliver what is queued, then stop the subscriber tasks."""
        self._running = False
        for sub in self._subscribers:
            if sub.task is not None:
                try:
                    await asyncio.wait_for(sub.queue.join(), 5)
                except TimeoutError:
                    log.warning("subscriber from plugin %r did not drain in time", sub.owner)
                sub.task.cancel()

    async def _pump(self, sub: _Subscriber) -> None:
        while True:
            event = await sub.queue.get()
            try:
                await sub.handler(event)
            except Exception:
                log.exception("subscriber of %s from plugin %r failed", sub.event_type.__name__, sub.owner)
            finally:
                sub.queue.task_done()
