"""library, server side: RPort's stored commands and scripts, ``/library/commands`` and
``/library/scripts`` (list with sort/filter/fields/page, create, read, replace, delete), in the
server's store (tables ``library_commands`` and ``library_scripts``); every write is committed
before the API answers. Hook implementations only; see :mod:`.entries`."""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    ApiError,
    Audit,
    StoreSchema,
    apply_list_query,
    data_response,
    hookimpl,
    parse_list_query,
    read_json,
)

from . import entries
from .entries import COMMANDS, SCRIPTS, Kind

NAME = "library"


@hookimpl
def rport_store_schema() -> StoreSchema:
    return entries.SCHEMA


def _not_found(kind: Kind, entry_id: str) -> ApiError:
    return ApiError(404, f"Cannot find a {kind.noun} by the provided id: {entry_id}",
                    code="ERR_CODE_NOT_FOUND")


def _name_taken(kind: Kind, name: str) -> ApiError:
    return ApiError(409, f"another {kind.noun} with the same name '{name}' exists",
                    code="ERR_CODE_ALREADY_EXIST")


def _register_kind(server: Any, register: Any, kind: Kind) -> None:
    table, spec, store = kind.table, kind.spec, server.store
    max_body = server.config.api.max_request_bytes
    base = f"/library/{kind.resource}"
    fields_param = f"fields[{kind.resource}]"

    async def list_entries(request: Request) -> Response:
        query = parse_list_query(request.query_params, spec)
        rows = [entries.document(kind, r) for r in await store.run(entries.all_rows, table)]
        page, count = apply_list_query(rows, query, spec)
        return data_response(page, count=count)

    async def create(request: Request) -> Response:
        values = entries.parse_input(kind, await read_json(request, max_body))
        now, user = time.time(), request.state.user.username
        row = entries.row_of({**values, "id": str(uuid.uuid4()), "created_by": user,
                              "created_at": now, "updated_by": user, "updated_at": now})
        try:
            await store.run(entries.insert_row, table, row)
        except sa.exc.IntegrityError:
            raise _name_taken(kind, values["name"]) from None
        return data_response(entries.document(kind, row), status=201)

    async def get_one(request: Request) -> Response:
        entry_id = request.path_params["id"]
        query = parse_list_query(request.query_params.multi_items(), spec)
        row = await store.run(entries.get_row, table, entry_id)
        if row is None:
            raise _not_found(kind, entry_id)
        doc = entries.document(kind, row)
        if query.fields is not None:
            doc = {k: v for k, v in doc.items() if k in query.fields}
        return data_response(doc)

    async def update(request: Request) -> Response:
        entry_id = request.path_params["id"]
        values = entries.parse_input(kind, await read_json(request, max_body))
        row = entries.row_of({**values, "updated_by": request.state.user.username,
                              "updated_at": time.time()})
        try:
            stored = await store.run(entries.update_row, table, entry_id, row)
        except sa.exc.IntegrityError:
            raise _name_taken(kind, values["name"]) from None
        if stored is None:
            raise _not_found(kind, entry_id)
        return data_response(entries.document(kind, stored))

    async def delete(request: Request) -> Response:
        entry_id = request.path_params["id"]
        if not await store.run(entries.delete_row, table, entry_id):
            raise _not_found(kind, entry_id)
        return Response(status_code=204)

    noun, perm = kind.noun, kind.resource  # RPort's permissions: "commands" and "scripts"
    app = f"library.{noun}"  # RPort's audit log names: library.command, library.script
    list_entries.__doc__ = f"The stored {kind.resource} (sort, filter[...], fields[{kind.resource}], page)."
    create.__doc__ = f"Store a new {noun}; its name must be unique."
    get_one.__doc__ = f"One stored {noun}."
    update.__doc__ = f"Replace a stored {noun} (all fields, as when creating it)."
    delete.__doc__ = f"Delete a stored {noun}."
    register(base, list_entries, name=f"{kind.resource}_list", list_params=True, permission=perm,
             responses={200: f"the {kind.resource}, with meta.count",
                        400: "a bad sort, filter, fields or page parameter"})
    register(base, create, ["POST"], name=f"{kind.resource}_create", permission=perm,
             body=kind.inputs,
             responses={201: f"the stored {noun}", 400: f"missing name or {kind.text}, or a bad body",
                        409: f"another {noun} has this name", 413: "body too large"},
             audit=Audit(app, "create", affected="response:id", response=True))
    register(base + "/{id}", get_one, name=f"{kind.resource}_get", permission=perm,
             params=(fields_param,),
             responses={200: f"the {noun}", 400: "a bad fields parameter", 404: f"no such {noun}"})
    register(base + "/{id}", update, ["PUT"], name=f"{kind.resource}_update", permission=perm,
             body=kind.inputs,
             responses={200: f"the {noun} as stored now", 400: f"missing name or {kind.text}, "
                        "or a bad body", 404: f"no such {noun}", 409: f"another {noun} has this name",
                        413: "body too large"},
             audit=Audit(app, "update", response=True))
    register(base + "/{id}", delete, ["DELETE"], name=f"{kind.resource}_delete", permission=perm,
             responses={204: "deleted", 404: f"no such {noun}"},
             audit=Audit(app, "delete"))


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    _register_kind(server, register, COMMANDS)
    _register_kind(server, register, SCRIPTS)
