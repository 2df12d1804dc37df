"""Bounds on the API's connections: how many, and how long one may take to send a request.

uvicorn closes a keep-alive connection that stays silent after a response, but not one that
never sends anything, nor one that sends its request a byte at a time (a "slowloris"); each
holds a file descriptor for ever, and about a thousand of them stop the API. So the API's HTTP
protocol is uvicorn's h11 one with two additions:

- **read timeout**: a connection waiting for a request (just accepted, or after a response) must
  deliver a whole request, headers and body, within ``read_timeout``, or it is closed;
- **connection cap**: at most ``max_connections`` at once. One more closes the oldest connection
  that is waiting for a request (an idle or slow one); if every connection is busy with a
  request, the newcomer gets a 503 and is closed.

Both log one line per burst (:class:`~rport.core.logs.BurstLog`), never one per connection.
Over HTTPS the TLS handshake itself is bounded by the same ``read_timeout`` (see server.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..logs import BurstLog

log = logging.getLogger("rport.server")

_BUSY = json.dumps({"errors": [{
    "code": "ERR_CODE_TOO_MANY_CONNECTIONS", "title": "too many connections",
    "detail": "the API is at its connection limit (api.max_connections); try again later"}]}
).encode()
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                  b"connection: close\r\nretry-after: 1\r\ncontent-length: "
                  + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


class ApiConnections:
    """The API's open connections, oldest first, each marked waiting for a request or not."""

    def __init__(self, *, max_connections: int, read_timeout: float) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._open: OrderedDict[Any, bool] = OrderedDict()  # protocol -> waiting for a request
        self._full = BurstLog(log, logging.WARNING)
        self._slow = BurstLog(log, logging.INFO)

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Any) -> bool:
        """A new connection: True if it may stay (possibly after closing an idle one)."""
        if len(self._open) >= self.max_connections:
            victim = next((c for c, waiting in self._open.items() if waiting), None)
            if victim is None:
                self._full.note("API connections: limit of %d reached (api.max_connections) "
                                "and all are busy, refusing new ones", self.max_connections)
                return False
            self._full.note("API connections: limit of %d reached (api.max_connections), "
                            "closing the oldest idle one (from %s)", self.max_connections,
                            _peer(victim))
            self.forget(victim)
            victim.transport.close()
        self._open[conn] = True
        return True

    def waiting(self, conn: Any, waiting: bool) -> None:
        if conn in self._open:
            self._open[conn] = waiting

    def forget(self, conn: Any) -> None:
        self._open.pop(conn, None)

    def too_slow(self, conn: Any) -> None:
        self._slow.note("API connection from %s: no complete request within %gs "
                        "(api.read_timeout), closing", _peer(conn), self.read_timeout)


def _peer(conn: Any) -> str:
    client = getattr(conn, "client", None)
    return client[0] if client else "?"


def guarded_protocol(guard: ApiConnections) -> type[H11Protocol]:
    """uvicorn's h11 protocol bound to ``guard`` (a class per server: nothing global)."""

    class GuardedH11Protocol(H11Protocol):
        _rport_timer: asyncio.TimerHandle | None = None
        _rport_admitted = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not guard.admit(self):
                self.connections.discard(self)
                transport.write(_BUSY_RESPONSE)
                transport.close()
                return
            self._rport_admitted = True
            self._rport_wait()

        def connection_lost(self, exc: Exception | None) -> None:
            self._rport_stop_timer()
            guard.forget(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._rport_admitted:
                return
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            cycle = self.cycle
            if (self._rport_timer is not None and cycle is not None and not cycle.more_body
                    and not cycle.response_complete):
                self._rport_stop_timer()  # a whole request arrived: the app has it now
                guard.waiting(self, False)

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._rport_wait()  # armed first: a pipelined request may disarm it at once
            super().on_response_complete()

        def _rport_wait(self) -> None:
            self._rport_stop_timer()
            self._rport_timer = self.loop.call_later(guard.read_timeout, self._rport_expired)
            guard.waiting(self, True)

        def _rport_stop_timer(self) -> None:
            if self._rport_timer is not None:
                self._rport_timer.cancel()
                self._rport_timer = None

        def _rport_expired(self) -> None:
            self._rport_timer = None
            if not self.transport.is_closing():
                guard.too_slow(self)
                guard.forget(self)
                self.transport.close()

    return GuardedH11Protocol
