"""metrics, server side: the registry of the server, the core's metrics from its events,
``GET /api/v1/metrics`` and the separate listener. Hook implementations only; see
:mod:`.collect` and :mod:`.listener`."""

from __future__ import annotations

import inspect
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    AddressBanned,
    AgentRefused,
    ApiRequestServed,
    ClientConnected,
    ClientDisconnected,
    ConfigError,
    PluginError,
    hookimpl,
    parse_host_port,
    require_admin,
)

from . import hookspecs
from .collect import CoreMetrics
from .config import MetricsConfig
from .listener import MetricsListener, exposition

NAME = "metrics"


def metrics(server: Any) -> CoreMetrics:
    return server.state[NAME]


@hookimpl
def rport_add_hookspecs(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def rport_config_class() -> type:
    return MetricsConfig


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    cfg: MetricsConfig = server.plugin_config(NAME)
    if not cfg.api:
        return

    async def scrape(request: Request) -> Response:
        """Prometheus metrics of this server (text exposition format; administrators)."""
        require_admin(request)
        return exposition(metrics(server).registry, request.headers.get("accept", ""))

    register("/metrics", scrape, name="scrape",
             responses={200: "the metrics, in Prometheus' text format (OpenMetrics when the "
                             "Accept header asks for it)",
                        403: "not an administrator"})


@hookimpl
def rport_register_subscribers(server: Any, register: Any) -> None:
    def handler(name: str) -> Any:
        async def handle(event: Any) -> None:
            core = server.state.get(NAME)
            if core is not None:
                await getattr(core, name)(event)
        return handle

    register(ApiRequestServed, handler("api_request"))
    register(ClientConnected, handler("connected"))
    register(ClientDisconnected, handler("disconnected"))
    register(AgentRefused, handler("refused"))
    register(AddressBanned, handler("banned"))


@hookimpl(trylast=True)
async def rport_server_startup(server: Any) -> None:
    # Last of the plugins' start-ups: their state exists for the collectors they register.
    cfg: MetricsConfig = server.plugin_config(NAME)
    listen = None
    if cfg.address:
        try:
            listen = parse_host_port(cfg.address, default_host="127.0.0.1")
        except ValueError as exc:
            raise ConfigError([f"plugins.metrics.address: {exc}"]) from None
    core = CoreMetrics(server)
    for impl in reversed(server.hook.rport_register_metrics.get_hookimpls()):
        try:
            await call_impl_args(impl, server=server, registry=core.registry)
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r}: its metrics (rport_register_metrics)"
                              f": {exc.__class__.__name__}: {exc}") from exc
    server.state[NAME] = core
    server.state[f"{NAME}.listener"] = MetricsListener(core.registry, listen) if listen else None


@hookimpl
async def rport_server_started(server: Any) -> None:
    listener = server.state.get(f"{NAME}.listener")
    if listener is not None:
        await listener.start()


async def call_impl_args(impl: Any, **kwargs: Any) -> Any:
    """One plugin's implementation with the arguments it names, awaited if need be."""
    result = impl.function(*[kwargs[arg] for arg in impl.argnames])
    if inspect.isawaitable(result):
        result = await result
    return result


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    listener = server.state.pop(f"{NAME}.listener", None)
    if listener is not None:
        await listener.close()
