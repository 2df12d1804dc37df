"""Accepting agent connections with a bound on TLS handshakes in flight.

When a thousand agents come back at once (a server restart), the event loop would otherwise run
hundreds of TLS handshakes in one iteration and the API, on the same loop, would stall for over
100 ms. Here connections are accepted one by one, at most ``limit`` handshakes are in progress,
and each finished handshake lets the next connection in: the same total work, in small slices.
The WebSocket layer is websockets' own; only the accepting is ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Any, Callable

log = logging.getLogger("rport.server")


def websockets_protocol_factory(ws_server: Any) -> Callable[[], asyncio.Protocol] | None:
    """The connection factory inside a websockets server made by ``serve()``, or None if this
    version of websockets builds it differently (the caller then lets asyncio accept)."""
    create = getattr(ws_server, "create_server", None)
    code, cells = getattr(create, "__code__", None), getattr(create, "__closure__", None)
    if code is None or cells is None or "protocol_factory" not in code.co_freevars:
        return None
    factory = cells[code.co_freevars.index("protocol_factory")].cell_contents
    return factory if callable(factory) else None


class BoundedAcceptor:
    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol],
                 context: ssl.SSLContext, *, handshake_timeout: float, limit: int = 64) -> None:
        self.sock, self.factory, self.context = sock, factory, context
        self.handshake_timeout = handshake_timeout
        self._slots = asyncio.Semaphore(limit)
        self._handshakes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, ws_server: Any) -> None:
        """Start accepting for ``ws_server`` (made with ``start_serving=False``). websockets
        refuses handshakes (503) unless its server "is serving", i.e. not closing: that is now
        for this acceptor to say."""
        ws_server.is_serving = self.is_serving
        self._task = asyncio.get_running_loop().create_task(self._accept_loop(), name="accept")

    def is_serving(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # e.g. out of file descriptors: back off, keep serving
                self._slots.release()
                log.error("accepting an agent connection failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self.factory, conn, ssl=self.context, ssl_handshake_timeout=self.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("TLS handshake with an agent failed: %s", exc)
            conn.close()
        finally:
            self._slots.release()

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._handshakes) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
