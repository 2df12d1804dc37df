"""The core's own API routes: status, clients, and the OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import __version__
from ..access import parse_allowed_user_groups, uncached_client_user_groups
from ..clients import Client
from ..errors import ApiError
from ..plugins import call_each_sync
from ..users import User, require_admin
from .attributes import register_attribute_routes
from .openapi import openapi_document
from .query import ListQuery, ResourceSpec, parse_list_query
from .routing import Audit, data_response, read_json

if TYPE_CHECKING:
    from ..server import RportServer

CLIENT_FILTER_FIELDS = (
    "id", "name", "os", "os_arch", "os_family", "os_kernel", "os_full_name", "os_version",
    "os_virtualization_system", "os_virtualization_role", "cpu_family", "cpu_model",
    "cpu_model_name", "cpu_vendor", "num_cpus", "timezone", "hostname", "ipv4", "ipv6", "tags",
    "labels", "version", "address", "client_auth_id", "allowed_user_groups", "groups",
    "connection_state",
)

CLIENTS = ResourceSpec(
    name="clients",
    sort_fields={"id", "name", "os", "hostname", "version"},
    default_sort="id",
    filter_fields=CLIENT_FILTER_FIELDS,
    fields=Client(id="").document().keys(),
    field_aliases={"ip_addresses": "ext_ip_addresses"},
    page_default=50,
    page_max=500,
    # RPort's documentation lists every client with a plain GET /clients; paging applies when
    # page[limit] is given.
    paginate_by_default=False,
)


def build_client_document(server: "RportServer", client: Client) -> dict[str, Any]:
    """A client's document made afresh: its own fields and every plugin's."""
    doc = client.document()
    call_each_sync(server.hook.rport_client_document, server=server, client=client, doc=doc)
    return doc


def client_document(server: "RportServer", client: Client) -> dict[str, Any]:
    """A client's document (a copy of the one the registry keeps until the client changes)."""
    return dict(server.clients.document(client))


def list_client_documents(server: "RportServer", user: User,
                          query: ListQuery) -> tuple[list[dict[str, Any]], int]:
    """``GET /clients``: what :func:`~.query.apply_list_query` would make of the documents of
    every client ``user`` may see, without making them each time: the registry keeps the
    documents and the orders of the sortable fields, so a page without filters costs the
    page's documents, and filters read the kept documents."""
    registry = server.clients
    ordered = registry.order(query.sort, query.descending)
    end = None if query.limit is None else query.offset + query.limit
    if user.is_admin and not query.filters:  # no client to look at but the page's
        clients = [c for c in map(registry.get, ordered[query.offset:end]) if c is not None]
        return _page(registry, clients, query), len(ordered)
    clients = [c for c in map(registry.get, ordered) if c is not None]
    if not user.is_admin:
        groups = user.groups
        clients = [c for c in clients if not registry.user_groups(c).isdisjoint(groups)]
    if query.filters:
        clients = registry.filtered(clients, query.filters)
    return _page(registry, clients[query.offset:end], query), len(clients)


def _page(registry: Any, page: list[Client], query: ListQuery) -> list[dict[str, Any]]:
    docs = [registry.document(c) for c in page]
    if query.fields is None:
        return [dict(doc) for doc in docs]
    wanted = frozenset(query.fields)
    return [{k: v for k, v in doc.items() if k in wanted} for doc in docs]


def get_client(server: "RportServer", client_id: str) -> Client:
    client = server.clients.get(client_id)
    if client is None:
        raise ApiError(404, f'client with id "{client_id}" not found', code="ERR_CODE_NOT_FOUND")
    return client


def register_core_routes(server: "RportServer", register: Any) -> None:
    # The plugins' hooks make each client's document and user groups; the registry keeps them.
    server.clients.configure(document=lambda c: build_client_document(server, c),
                             user_groups=lambda c: uncached_client_user_groups(server, c))

    async def status(request: Request) -> Response:
        """Server status: version, fingerprint, where agents connect, client counts."""
        connected, disconnected = server.clients.counts()
        doc = {
            "version": __version__,
            "fingerprint": server.identity.fingerprint,
            "fingerprint_sha256": server.identity.sha256,
            "connect_url": server.connect_urls,
            "clients_connected": connected,
            "clients_disconnected": disconnected,
            "plugins": server.plugins.names(),
        }
        if server.cluster is not None:
            doc["cluster"] = server.cluster.status()
        call_each_sync(server.hook.rport_status_document, server=server, doc=doc)
        return data_response(doc)

    async def list_clients(request: Request) -> Response:
        """List connected and disconnected clients, with sort, filter, fields and paging."""
        query = parse_list_query(request.query_params, CLIENTS)
        rows, count = list_client_documents(server, request.state.user, query)
        return data_response(rows, count=count)

    async def get_one(request: Request) -> Response:
        """One client with all its fields (or those of fields[clients])."""
        query = parse_list_query(request.query_params.multi_items(), CLIENTS)
        doc = client_document(server, get_client(server, request.path_params["client_id"]))
        if query.fields is not None:
            doc = {k: v for k, v in doc.items() if k in query.fields}
        return data_response(doc)

    async def delete_client(request: Request) -> Response:
        """Remove a disconnected client (a connected one is refused with 400)."""
        client = get_client(server, request.path_params["client_id"])
        if client.connected:
            raise ApiError(400, "Client is active, should be disconnected",
                           code="ERR_CODE_CLIENT_ACTIVE")
        await server.remove_client(client.id, f"deleted by {request.state.user.username}")
        return Response(status_code=204)

    async def set_acl(request: Request) -> Response:
        """Set the user groups whose users may see and use a client (administrators)."""
        require_admin(request)
        get_client(server, request.path_params["client_id"])  # a 404 before reading the body
        groups = parse_allowed_user_groups(
            await read_json(request, server.config.api.max_request_bytes))
        # Looked up again after the await: a reconnection may have replaced the Client object.
        client = get_client(server, request.path_params["client_id"])
        client.allowed_user_groups = groups
        await server.save_client_settings(client)
        return Response(status_code=204)

    async def plugins(request: Request) -> Response:
        """The loaded plugins with their versions and where they come from (administrators)."""
        require_admin(request)
        rows = [info.to_json() for info in server.plugins.info.values()]
        return data_response(rows, count=len(rows))

    async def openapi(request: Request) -> Response:
        """This API described as an OpenAPI 3.1 document."""
        return JSONResponse(openapi_document(server.routes.specs,
                                             bearer="auth_jwt" in server.plugins.info))

    register("/status", status, name="status", responses={200: "the status document"})
    register("/clients", list_clients, name="clients", list_params=True,
             responses={200: "the clients, with meta.count", 400: "a bad sort, filter, fields "
                        "or page parameter"})
    register("/clients/{client_id}", get_one, name="client", params=("fields[clients]",),
             responses={200: "the client", 400: "a bad fields parameter",
                        404: "no such client (or not visible to the caller)"})
    register("/clients/{client_id}", delete_client, ["DELETE"], name="client_delete",
             responses={204: "deleted", 400: "the client is connected",
                        404: "no such client"},
             audit=Audit("client", "delete"))
    register("/clients/{client_id}/acl", set_acl, ["POST"], name="client_acl",
             body=ACL_BODY,
             responses={204: "set", 400: "missing or invalid body", 403: "not an administrator",
                        404: "no such client", 413: "body too large"},
             audit=Audit("client.acl", "update"))
    register_attribute_routes(server, register)
    register("/plugins", plugins, name="plugins",
             responses={200: "the loaded plugins, with meta.count", 403: "not an administrator"})
    register("/openapi.json", openapi, name="openapi", responses={200: "this document"})


ACL_BODY = {
    "type": "object", "required": ["allowed_user_groups"], "additionalProperties": False,
    "properties": {"allowed_user_groups": {
        "type": ["array", "null"], "items": {"type": "string"},
        "description": "user groups whose members may see and use the client"}},
}
