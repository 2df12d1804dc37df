"""auth_jwt, server side: ``/login`` tokens for ``Authorization: Bearer``, API tokens for scripts
(``/me/tokens``), ``/me``, ``/logout`` and the agent credentials API (``/clients-auth``). Users
and agent credentials are auth_basic's; this plugin needs it. Hook implementations only: the
logic is in :mod:`.sessions`, :mod:`.apitokens`, :mod:`.clientsauth`, :mod:`.auth` and
:mod:`.routes`."""

from __future__ import annotations

from typing import Any

import attrs

from rport.core.plugin import ClientDisconnected, ConfigError, StoreSchema, User, hookimpl

from . import auth
from .clientsauth import STATIC
from .config import AuthJwtConfig
from .routes import register_routes
from .service import AuthJwt
from .tables import SCHEMA

NAME = "auth_jwt"
BASIC = "auth_basic"


@attrs.frozen
class ClientsAuthChanged:
    """In a cluster: agent credentials kept in the store were changed through one node."""

    node: str


def _service(server: Any) -> AuthJwt:
    return server.state[NAME]


@hookimpl
def rport_config_class() -> type:
    return AuthJwtConfig


@hookimpl
def rport_store_schema() -> StoreSchema:
    return SCHEMA


@hookimpl(trylast=True)  # after auth_basic's start-up: its users and agent credentials are ours too
async def rport_server_startup(server: Any) -> None:
    basic = server.state.get(BASIC)
    if basic is None:
        raise ConfigError(["auth_jwt needs the auth_basic plugin (API users and agent credentials); "
                           "enable auth_basic or disable auth_jwt as well"])
    service = AuthJwt(server, basic, server.plugin_config(NAME))
    await service.start()
    server.state[NAME] = service
    server.bus.share(ClientsAuthChanged)
    if server.cluster is not None and service.clients_auth.in_store:
        node = server.cluster.node_id
        service.clients_auth.on_change = lambda: server.bus.publish(ClientsAuthChanged(node))


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    service = server.state.get(NAME)
    if service is not None:
        await service.stop()


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    register_routes(server, register, lambda: _service(server))


@hookimpl
def rport_register_subscribers(server: Any, register: Any) -> None:
    async def disconnected(event: ClientDisconnected) -> None:
        service = server.state.get(NAME)
        if service is not None and (done := service.disconnects.get(event.client_id)) is not None:
            done.set()

    async def credentials_changed(event: ClientsAuthChanged) -> None:
        service = server.state.get(NAME)
        if service is not None and server.cluster is not None and event.node != server.cluster.node_id:
            await service.clients_auth.reload()

    register(ClientDisconnected, disconnected)
    register(ClientsAuthChanged, credentials_changed)


@hookimpl
async def rport_authenticate_api(server: Any, request: Any) -> User | None:
    return await auth.authenticate(_service(server), server.api_user_throttle, request)


@hookimpl
async def rport_authenticate_agent(server: Any, auth_id: str, password: str) -> bool | None:
    return await _service(server).clients_auth.check_agent(auth_id, password)


@hookimpl(trylast=True)  # after auth_basic, which reports its own (read-only) view
def rport_status_document(server: Any, doc: dict) -> None:
    doc["two_fa_enabled"] = server.config.api.totp_enabled
    doc["two_fa_delivery_method"] = "totp_authenticator_app" if server.config.api.totp_enabled else ""
    service = server.state.get(NAME)
    if service is not None:
        doc["clients_auth_source"] = service.clients_auth.source
        doc["clients_auth_mode"] = "Read Only" if service.clients_auth.source == STATIC else "Read Write"
