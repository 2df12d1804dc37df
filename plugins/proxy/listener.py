"""One proxy server: uvicorn on the tunnel's public address with the proxy certificate."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn

from .reverse import ReverseProxy


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]  # rportd owns the signals
        yield


class ProxyListener:
    def __init__(self, app: ReverseProxy, server: _Server, task: asyncio.Task[Any]) -> None:
        self.app, self._server, self._task = app, server, task

    @classmethod
    async def start(cls, app: ReverseProxy, host: str, port: int, cert_file: str,
                    key_file: str) -> "ProxyListener":
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(512)
        sock.setblocking(False)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            date_header=False,  # the target's Date is passed on
            ssl_certfile=cert_file, ssl_keyfile=key_file, ws="websockets", proxy_headers=False,
            timeout_graceful_shutdown=2, ws_max_size=64 * 1024 * 1024, ws_ping_interval=None)
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                sock.close()
                task.result()
                raise OSError("the proxy stopped during start-up")
            await asyncio.sleep(0.01)
        return cls(app, server, task)

    async def close(self) -> None:
        """Stop at once: the tunnel is going (DELETE, idle reaping, its agent gone), so nothing
        waits for the proxy's clients. A graceful shutdown would wait for each TLS client's
        close_notify and for requests still waiting on the target, then cancel them with an
        error logged and a 500 sent: instead their connections are aborted and the requests
        end quietly (``ReverseProxy.closing``)."""
        server = self._server
        self.app.closing = True
        server.should_exit = True
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        for task in list(server.server_state.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 10)
        await self.app.aclose()
