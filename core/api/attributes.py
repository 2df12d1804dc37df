"""Client attributes (RPort's ``/clients/{id}/attributes``): a connected client's tags and
labels; ``PUT`` asks the agent to rewrite its ``attributes_file_path`` and then shows the new
values at once (filters, ``/client-tags``, groups and multi-client targeting read them live) and
keeps them with the client's record in the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..clients import Client
from ..errors import ApiError
from ..session import RemoteError, SessionClosed
from .routing import Audit, data_response, read_json

if TYPE_CHECKING:
    from ..server import RportServer

REQUEST = "update_client_attributes"
"""The agent's request (``rport.agent.client``)."""

ATTRIBUTES_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "labels": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                   "description": "key-value metadata, e.g. {\"city\": \"Lille\"}"},
    },
}


def _active_client(server: "RportServer", client_id: str) -> Client:
    client = server.clients.get(client_id)
    if client is None or not client.connected:
        raise ApiError(404, f'Active client with id="{client_id}" not found.',
                       code="ERR_CODE_CLIENT_NOT_FOUND")
    return client


def parse_body(value: Any) -> tuple[list[str], dict[str, str]]:
    def invalid(detail: str) -> ApiError:
        return ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=detail)
    if not isinstance(value, dict):
        raise invalid("the body must be a JSON object with tags and labels")
    unknown = sorted(set(value) - {"tags", "labels"})
    if unknown:
        raise invalid(f'json: unknown field "{unknown[0]}"')
    tags, labels = value.get("tags") or [], value.get("labels") or {}
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise invalid("tags must be a list of strings")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise invalid("labels must map names to strings")
    return list(tags), dict(labels)


def register_attribute_routes(server: "RportServer", register: Any) -> None:
    async def get_attributes(request: Request) -> Response:
        """A connected client's tags and labels."""
        client = _active_client(server, request.path_params["client_id"])
        return data_response({"tags": list(client.tags), "labels": dict(client.labels)})

    async def put_attributes(request: Request) -> Response:
        """Replace a connected client's tags and labels (written to its attributes file)."""
        client_id = request.path_params["client_id"]
        _active_client(server, client_id)  # a 404 before reading the body
        tags, labels = parse_body(await read_json(request, server.config.api.max_request_bytes))
        client = _active_client(server, client_id)  # again: it may have reconnected meanwhile
        session = client.session
        assert session is not None
        try:
            await session.request(REQUEST, {"tags": tags, "labels": labels})
        except RemoteError as exc:
            raise ApiError(409, f"client error: {exc}", code="ERR_CODE_CLIENT_ERROR") from None
        except (SessionClosed, TimeoutError) as exc:
            raise ApiError(500, "Failed to execute remote command.", code="ERR_CODE_CLIENT_ERROR",
                           detail=str(exc) or "no answer from the client") from None
        client.tags, client.labels = tags, labels
        await server.save_client_settings(client)  # stored, and told to the cluster's nodes
        return data_response("ok")

    register("/clients/{client_id}/attributes", get_attributes, name="client_attributes",
             responses={200: "the client's tags and labels",
                        404: "no connected client with this id"})
    # agent=True: in a cluster the node holding the agent asks it and keeps the new values
    # (RPort records no audit entry for it; ours is named as its client.* applications)
    register("/clients/{client_id}/attributes", put_attributes, ["PUT"],
             name="client_attributes_update", body=ATTRIBUTES_SCHEMA, agent=True,
             audit=Audit("client.attributes", "update"),
             responses={200: '"ok": written on the client and shown at once',
                        400: "missing or invalid body",
                        404: "no connected client with this id",
                        409: "the client refused: no attributes_file_path, or it cannot write it",
                        413: "body too large",
                        500: "the client did not answer"})
