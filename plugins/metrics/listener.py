"""The separate ``/metrics`` listener (``[plugins.metrics] address``): a small Starlette app
served by uvicorn on its own socket, in the server's event loop (so collectors read the
server's state without locks), without authentication. Bounded like the API: a few concurrent
connections, a keep-alive and a header size limit."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from typing import Any

import uvicorn
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rport.core.plugin import HostPort, PluginError

log = logging.getLogger("rport.plugins.metrics")

MAX_CONNECTIONS = 32  # a scraper or two, and a person with curl


def exposition(registry: Any, accept: str) -> Response:
    """The registry in the format the scraper asked for (Prometheus text, or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept)
    return Response(encoder(registry), headers={"Content-Type": content_type})


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield  # rportd owns the process's signals


class MetricsListener:
    def __init__(self, registry: Any, address: HostPort) -> None:
        self.registry = registry
        self.requested = address
        self.address: HostPort | None = None
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        async def metrics(request: Request) -> Response:
            return exposition(self.registry, request.headers.get("accept", ""))

        app = Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
        sock = _bind(self.requested)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            proxy_headers=False, timeout_keep_alive=5, limit_concurrency=MAX_CONNECTIONS,
            h11_max_incomplete_event_size=16384)
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="metrics")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise PluginError("plugin 'metrics': its listener stopped during start-up")
            await asyncio.sleep(0.01)
        host, port = sock.getsockname()[:2]
        self.address = HostPort(host, port)
        log.info("metrics listening on http://%s/metrics (no authentication)", self.address)
        if not is_loopback(host):
            log.warning("metrics on %s need no authentication: anyone who reaches this address "
                        "reads them (plugins.metrics.address)", self.address)

    async def close(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        except TimeoutError:
            self._task.cancel()
        except Exception:
            log.exception("metrics listener failed")


def _bind(address: HostPort) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise PluginError(f"plugin 'metrics': cannot listen on {address}: "
                          f"{exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock
