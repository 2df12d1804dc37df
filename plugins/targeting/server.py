"""targeting, server side: the ``/client-groups`` and ``/client-tags`` routes, the ``groups`` of
each client document, and ``server.state["targeting"]`` (a :class:`.service.Targeting`) for
plugins that target many clients. Hook implementations only."""

from __future__ import annotations

from typing import Any

import attrs

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    Audit,
    ResourceSpec,
    StoreSchema,
    apply_list_query,
    data_response,
    hookimpl,
    parse_list_query,
    read_json,
    require_admin,
    visible_clients,
)

from .groups import PARAM_KEYS, READ_ONLY_FIELDS
from .service import Targeting, not_found
from .store import SCHEMA, GroupStore

NAME = "targeting"

GROUPS = ResourceSpec(
    name="client_groups", sort_fields={"id", "description"}, default_sort="id",
    filter_fields={"id", "description"},
    fields={"id", "description", "params", "allowed_user_groups", "client_ids", "num_clients",
            "num_clients_connected"},
    default_fields=None, page_default=50, page_max=500)

TAGS = ResourceSpec(
    name="client_tags", sort_fields={"tag"}, default_sort="tag", filter_fields={"tag"},
    fields={"tag", "client_ids"}, default_fields=None, page_default=50, page_max=500)


def targeting(server: Any) -> Targeting:
    return server.state[NAME]


@hookimpl
def rport_store_schema() -> StoreSchema:
    return SCHEMA


@attrs.frozen
class ClientGroupsChanged:
    """In a cluster: client groups were written through one node (the others read them again)."""

    node: str


@hookimpl
async def rport_server_startup(server: Any) -> None:
    service = Targeting(server.clients, GroupStore(server.store), on_change=server.clients.changed)
    await service.load()
    server.state[NAME] = service
    server.bus.share(ClientGroupsChanged)


@hookimpl
def rport_register_subscribers(server: Any, register: Any) -> None:
    async def changed(event: ClientGroupsChanged) -> None:
        if server.cluster is not None and event.node != server.cluster.node_id:
            await targeting(server).reload()

    register(ClientGroupsChanged, changed)


def _changed(server: Any) -> None:
    if server.cluster is not None:
        server.bus.publish(ClientGroupsChanged(server.cluster.node_id))


@hookimpl
def rport_server_shutdown(server: Any) -> None:
    server.state.pop(NAME, None)


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    def max_bytes() -> int:
        # plus room to list every known client by id in a group's params.client_id
        return server.config.api.max_request_bytes + server.clients.ids_json_size()

    async def list_groups(request: Request) -> Response:
        """List client groups with their current clients (sort, filter, fields, page)."""
        query = parse_list_query(request.query_params, GROUPS)
        user = request.state.user
        # as RPort: members among the clients the caller may see; for non-admins, no group
        # without one of those
        docs = targeting(server).documents(clients=visible_clients(server, user))
        if not user.is_admin:
            docs = [doc for doc in docs if doc["client_ids"]]
        rows, count = apply_list_query(docs, query, GROUPS)
        return data_response(rows, count=count)

    async def create_group(request: Request) -> Response:
        """Create a client group (administrators)."""
        require_admin(request)
        service = targeting(server)
        group = await service.create(await read_json(request, max_bytes()))
        _changed(server)
        return data_response(service.document(group), status=201)

    async def get_group(request: Request) -> Response:
        """One client group with its current clients."""
        query = parse_list_query(request.query_params.multi_items(), GROUPS)
        service = targeting(server)
        group_id = request.path_params["group_id"]
        user = request.state.user
        doc = service.document(service.get(group_id), visible_clients(server, user))
        if not user.is_admin and not doc["client_ids"]:
            # as in the list: a group without a client the caller may see does not exist for
            # them (its params would name clients hidden from them)
            raise not_found(group_id)
        if query.fields is not None:
            doc = {k: v for k, v in doc.items() if k in query.fields}
        return data_response(doc)

    async def put_group(request: Request) -> Response:
        """Create or replace a client group (administrators)."""
        require_admin(request)
        await targeting(server).put(request.path_params["group_id"],
                                    await read_json(request, max_bytes()))
        _changed(server)
        return Response(status_code=204)

    async def delete_group(request: Request) -> Response:
        """Delete a client group (administrators); 204 whether it existed or not."""
        require_admin(request)
        await targeting(server).delete(request.path_params["group_id"])
        _changed(server)
        return Response(status_code=204)

    async def client_tags(request: Request) -> Response:
        """Every tag of the known clients with the ids of the clients that have it."""
        query = parse_list_query(request.query_params, TAGS)
        tags = targeting(server).client_tags(visible_clients(server, request.state.user))
        rows, count = apply_list_query(tags, query, TAGS)
        return data_response(rows, count=count)

    admin_403 = "the caller is not in the Administrators group"
    invalid = ("the body is not a group: invalid JSON, an unknown field, a bad id, params key "
               "or value")
    register("/client-groups", list_groups, name="groups", list_params=True,
             responses={200: "the groups, with meta.count",
                        400: "a bad sort, filter, fields or page parameter"})
    register("/client-groups", create_group, ["POST"], name="group_create", body=GROUP_BODY,
             responses={201: "the group created", 400: invalid, 403: admin_403,
                        409: "a group with this id exists", 413: "body too large"},
             audit=Audit("client.group", "create", affected="body:id"))
    register("/client-groups/{group_id}", get_group, name="group",
             params=("fields[client_groups]",),
             responses={200: "the group with its current clients",
                        400: "a bad fields parameter", 404: "no such group (or, for a user who "
                        "is not an administrator, none of its clients is theirs)"})
    register("/client-groups/{group_id}", put_group, ["PUT"], name="group_put", body=GROUP_BODY,
             responses={204: "created or replaced", 400: invalid + "; or an id that is not "
                        "the path's", 403: admin_403, 413: "body too large"},
             audit=Audit("client.group", "update"))
    register("/client-groups/{group_id}", delete_group, ["DELETE"], name="group_delete",
             responses={204: "deleted (also when it did not exist)", 403: admin_403},
             audit=Audit("client.group", "delete"))
    register("/client-tags", client_tags, name="client_tags", list_params=True,
             responses={200: "every tag with the ids of its clients, with meta.count",
                        400: "a bad sort, filter, fields or page parameter"})


_PATTERNS = {"type": ["array", "null"], "items": {"type": "string"}}
GROUP_BODY = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "maxLength": 30,
               "description": "letters, digits, _, - and *; a PUT takes the path's if absent"},
        "description": {"type": ["string", "null"]},
        "params": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            **{key: _PATTERNS for key in PARAM_KEYS},
            "tag": {"description": 'patterns (any matches), or {"and": [...]} / {"or": [...]}',
                    "oneOf": [_PATTERNS, {"type": "object"}]},
            "labels": {**_PATTERNS, "description": 'patterns of "key: value"'}}},
        "allowed_user_groups": _PATTERNS,
        **{key: {"readOnly": True, "description": "computed; ignored in a body"}
           for key in READ_ONLY_FIELDS},
    },
}


@hookimpl
def rport_client_user_groups(server: Any, client: Any) -> Any:
    """The users of a client group's ``allowed_user_groups`` see the group's clients."""
    service = server.state.get(NAME)
    return service.user_groups_of(client) if service is not None else None


@hookimpl
def rport_client_document(server: Any, client: Any, doc: dict) -> None:
    service = server.state.get(NAME)
    if service is not None:
        doc["groups"] = service.groups_of(client)
