"""tunnels, server side: the tunnel routes, the tunnels of each client in its document, and
listeners that follow their agent's session. Hook implementations only; see :mod:`.service`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    ApiError,
    Audit,
    ClientConnected,
    ClientDisconnected,
    ClientRemoved,
    ConfigError,
    StoreSchema,
    data_response,
    hookimpl,
    visible_clients,
)

from . import hookspecs, store
from .config import TunnelsConfig
from .remote import hello_remotes
from .events import TunnelsChanged
from .service import PUT_PARAMS, TunnelService, parse_bool

NAME = "tunnels"


def service(server: Any) -> TunnelService:
    return server.state[NAME]


@hookimpl
def rport_add_hookspecs(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def rport_config_class() -> type:
    return TunnelsConfig


@hookimpl
def rport_store_schema() -> StoreSchema:
    return store.SCHEMA


@hookimpl
async def rport_server_startup(server: Any) -> None:
    cfg = server.plugin_config(NAME)
    if cfg.max_per_client < 1:
        raise ConfigError(["plugins.tunnels.max_per_client: must be at least 1"])
    try:
        svc = TunnelService(server, max_per_client=cfg.max_per_client)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    await svc.load()
    server.state[NAME] = svc
    server.bus.share(TunnelsChanged)


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    if NAME in server.state:
        await service(server).shutdown()


@hookimpl
def rport_agent_accepting(server: Any, client: Any, hello: Any) -> str | None:
    """The remotes in the hello must be well formed (a mistyped one is refused, with the field
    named, before anything acts on it)."""
    try:
        hello_remotes(hello.plugins.get(NAME))
    except ValueError as exc:
        return f"invalid hello: {exc}"
    return None


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    async def create(request: Request) -> Response:
        """Open a tunnel from a server port to a port the client can reach."""
        client_id = request.path_params["client_id"]
        client = server.clients.get(client_id)
        if client is None or not client.connected:
            raise ApiError(404, f"client with id {client_id} not found", code="ERR_CODE_CLIENT_NOT_FOUND")
        tunnel = await service(server).create_from_params(
            client, request.query_params, owner=request.state.user.username)
        return data_response(tunnel.to_json())

    async def delete(request: Request) -> Response:
        """Close a tunnel (force=1 also when it has open connections)."""
        force = parse_bool(request.query_params, "force")
        await service(server).delete(request.path_params["client_id"],
                                     request.path_params["tunnel_id"], force=force)
        return Response(status_code=204)

    async def list_all(request: Request) -> Response:
        """Every tunnel of the connected clients (those the caller may see), with its client_id."""
        visible = visible_clients(server, request.state.user)
        if server.cluster is None:
            ids = {c.id for c in visible}
            rows = [{**t.to_json(), "client_id": t.client_id} for t in service(server).all()
                    if t.client_id in ids]
        else:  # every node's tunnels
            rows = [{**t, "client_id": c.id} for c in visible for t in service(server).listed(c)]
        return data_response(rows, count=len(rows))

    register("/clients/{client_id}/tunnels", create, ["PUT"], name="create", params=PUT_PARAMS,
             permission="tunnels", body=False,  # RPort's: everything is in the query
             responses={200: "the tunnel, listening",
                        400: "a bad parameter (remote, local, scheme, acl, idle timeout, "
                             "auto-close, proxy options), a destination the client does not "
                             "allow, an existing tunnel, a closed remote port, a local port "
                             "in use or not allowed",
                        404: "no connected client with this id",
                        409: "the client did not answer or refused, too many tunnels, or the "
                             "local port cannot be listened on",
                        500: "no ports available"},
             audit=Audit("client.tunnel", "create", affected="response:id", response=True),
             agent=True)
    register("/clients/{client_id}/tunnels/{tunnel_id}", delete, ["DELETE"], name="delete",
             params=("force",), permission="tunnels",
             responses={204: "closed", 400: "a bad force parameter", 404: "no such tunnel",
                        409: "the tunnel has open connections (force=1 closes them)"},
             audit=Audit("client.tunnel", "delete", affected="path:tunnel_id"), agent=True)
    register("/tunnels", list_all, name="list", permission="tunnels",
             responses={200: "the tunnels of the clients the caller may see, with meta.count"})


@hookimpl
def rport_register_subscribers(server: Any, register: Any) -> None:
    async def connected(event: ClientConnected) -> None:
        client = event.live_client(server)
        if client is not None:
            await service(server).client_connected(client)

    async def disconnected(event: ClientDisconnected) -> None:
        await service(server).client_gone(event.client_id)

    async def removed(event: ClientRemoved) -> None:
        await service(server).forget_client(event.client_id)

    async def changed(event: TunnelsChanged) -> None:
        await service(server).reload(event.client_id)

    register(ClientConnected, connected)
    register(ClientDisconnected, disconnected)
    register(ClientRemoved, removed)
    register(TunnelsChanged, changed)


@hookimpl
def rport_client_document(server: Any, client: Any, doc: dict) -> None:
    doc["tunnels"] = service(server).listed(client)


@hookimpl(optionalhook=True)
def rport_register_metrics(server: Any, registry: Any) -> None:
    """The metrics plugin's hook: tunnels open, connections, bytes (see metrics.py)."""
    from .metrics import TunnelsCollector  # prometheus_client only when metrics are on

    registry.register(TunnelsCollector(lambda: server.state.get(NAME)))


@hookimpl
def rport_status_document(server: Any, doc: dict) -> None:
    cfg = server.config.server
    doc["used_ports"] = list(cfg.used_ports)
    doc["excluded_ports"] = list(cfg.excluded_ports)
    doc["tunnel_host"] = cfg.tunnel_host
