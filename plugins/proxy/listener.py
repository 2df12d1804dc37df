"""One proxy server: a TLS listener on the tunnel's public address with the proxy certificate,
serving :class:`~.client.ClientConnection`s."""

from __future__ import annotations

import asyncio
import socket
import ssl
from .client import ClientConnection, Home
from .reverse import ReverseProxy

HANDSHAKE_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 5.0  # a client's TLS close_notify is awaited this long after ours
SWEEP_INTERVAL = 1.0  # how often idle connections are looked for


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ProxyListener:
    def __init__(self, app: ReverseProxy, home: Home, server: asyncio.AbstractServer) -> None:
        self.app, self._home, self._server = app, home, server
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep()

    @classmethod
    async def start(cls, app: ReverseProxy, host: str, port: int, cert_file: str,
                    key_file: str) -> "ProxyListener":
        ctx = server_context(cert_file, key_file)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # [::] takes IPv4 too, as Go listens
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        home = Home(app)
        server = await loop.create_server(lambda: ClientConnection(home, loop), sock=sock, ssl=ctx,
                                          ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                                          ssl_shutdown_timeout=SHUTDOWN_TIMEOUT, backlog=512)
        return cls(app, home, server)

    @property
    def connections(self) -> int:
        return len(self._home.connections)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._home.connections):
            conn.check_idle(now)
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    async def close(self) -> None:
        """Stop at once: the tunnel is going (DELETE, idle reaping, its agent gone), so nothing
        waits for the proxy's clients: their connections are aborted, requests in flight end
        with them, and the port is free when this returns."""
        self._home.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._server.close()
        for conn in list(self._home.connections):
            conn.abort()
        await asyncio.sleep(0)  # let the transports report their end
