"""The OpenAPI document, generated from the route table (so it cannot drift from the routes)."""

from __future__ import annotations

import re
from typing import Any, Iterable

from .. import __version__
from .routing import API_PREFIX, RouteSpec

_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")
_LIST_PARAMS = ("sort", "filter[<field>]", "fields[<resource>]", "page[limit]", "page[offset]")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["errors"],
    "properties": {"errors": {"type": "array", "items": {
        "type": "object", "required": ["code", "title", "detail"],
        "properties": {k: {"type": "string"} for k in ("code", "title", "detail")}}}},
}


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}


def _responses(spec: RouteSpec) -> dict[str, Any]:
    """The route's declared status codes (errors in the error envelope); a route that declares
    none is documented as "200, or an error"."""
    if not spec.responses:
        return {"200": {"description": "success: {\"data\": ...}"},
                "default": {"description": "error", "content": _ERROR_CONTENT}}
    declared = dict(spec.responses)
    if spec.agent:  # forwarded to the node holding the agent, in a cluster (core/cluster)
        declared.setdefault(502, "in a cluster: the node holding the client failed")
        declared.setdefault(504, "in a cluster: the node holding the client did not answer")
    # What the core's wrapper answers for every route, unless the route says more.
    declared.setdefault(400, "a query parameter this route does not take, or a bad value")
    if not spec.public:
        declared.setdefault(401, "no credentials, wrong ones, or too many failed logins")
        declared.setdefault(403, "the caller's token scope, permissions or client access "
                                 "do not allow this")
    out: dict[str, Any] = {}
    for status, description in sorted(declared.items()):
        entry: dict[str, Any] = {"description": description}
        if status >= 400:
            entry["content"] = _ERROR_CONTENT
        out[str(status)] = entry
    return out


def openapi_document(specs: Iterable[RouteSpec], *, bearer: bool = False) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path = API_PREFIX + _PATH_PARAM.sub(r"{\1}", spec.path)
        for method in spec.methods:
            params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in _PATH_PARAM.findall(spec.path)]
            query = list(spec.params) + (list(_LIST_PARAMS) if spec.list_params else [])
            params += [{"name": name, "in": "query", "required": False,
                        "schema": {"type": "string"}} for name in query]
            responses = _responses(spec)
            operation: dict[str, Any] = {
                "operationId": spec.name,
                "summary": spec.summary,
                "tags": [spec.owner],
                "parameters": params,
                "security": [] if spec.public else [{"basic": []}] + ([{"bearer": []}] if bearer else []),
                "responses": responses,
            }
            if spec.body is False:  # said explicitly: its input is the path and the query
                operation["x-rport-no-body"] = True
            elif spec.body is not None:
                # A JSON schema, or {"content": {<media type>: {"schema": ...}}} for a body that
                # is not JSON (e.g. the uploads plugin's multipart/form-data)
                content = (dict(spec.body["content"]) if "content" in spec.body
                           else {"application/json": {"schema": dict(spec.body)}})
                operation["requestBody"] = {"required": True, "content": content}
            if spec.permission:
                operation["x-rport-permission"] = spec.permission
            if spec.audit is not None:
                operation["x-rport-audit"] = {"application": spec.audit.application,
                                              "action": spec.audit.action}
            if spec.agent:  # in a cluster, answered by the node holding the agent
                operation["x-rport-agent"] = True
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "rport for Python API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Errors": ERROR_SCHEMA},
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                **({"bearer": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}} if bearer else {})},
        },
    }
