"""uploads, server side: RPort's ``POST /files`` (a multipart upload sent on to clients), and
``GET /files`` / ``GET /files/{uuid}``, which show each client's result (RPort reports them only
on its ``/ws/uploads`` websocket, to whoever listens at that moment). Hook implementations only;
see :mod:`.service`, :mod:`.receive` and :mod:`.form`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    ApiError,
    Audit,
    ResourceSpec,
    StoreSchema,
    apply_list_query,
    data_response,
    hookimpl,
    parse_list_query,
)

from . import store
from .service import UploadService

NAME = "uploads"
PERMISSION = "uploads"

UPLOADS = ResourceSpec(
    name="uploads", sort_fields={"uuid", "created_at", "created_by", "filepath", "size"},
    default_sort="-created_at", filter_fields={"uuid", "created_by", "filepath", "client_ids"},
    fields={"uuid", "filepath", "size", "md5", "filename", "mode", "user", "group", "force",
            "sync", "created_at", "created_by", "client_ids"},
    default_fields=None, page_default=50, page_max=500)

FORM_SCHEMA = {
    "type": "object", "required": ["upload", "dest"],
    "properties": {
        "upload": {"type": "string", "format": "binary", "description": "the file"},
        "client_id": {"type": "string", "description": "a client to send it to; repeat for several"},
        "group_id": {"type": "string", "description": "a client group; repeat for several"},
        "tags": {"type": "string", "description": 'JSON: {"tags": ["linux"], "operator": "OR"}'},
        "dest": {"type": "string", "description": "absolute path of the file on the clients"},
        "force": {"type": "string", "description": "true: overwrite an existing file"},
        "sync": {"type": "string", "description": "true: overwrite an existing file whose md5 "
                 "differs, and apply mode/user/group to it"},
        "mode": {"type": "string", "description": "octal file mode, e.g. 0644 (default 0764 "
                 "less the client's umask)"},
        "user": {"type": "string", "description": "owner of the file on the clients"},
        "group": {"type": "string", "description": "group of the file on the clients"},
        "id": {"type": "string", "description": "the upload's id (default: a new UUID)"},
        "md5": {"type": "string", "description": "the file's MD5: the upload is refused if the "
                "file received does not match it"},
    },
}


def service(server: Any) -> UploadService:
    return server.state[NAME]


@hookimpl
def rport_store_schema() -> StoreSchema:
    return store.SCHEMA


@hookimpl
async def rport_server_startup(server: Any) -> None:
    server.state[NAME] = UploadService(server)
    await service(server).clean()


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    if NAME in server.state:
        await service(server).close()


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    async def upload(request: Request) -> Response:
        """Upload a file (multipart/form-data) and send it to clients."""
        return data_response(await service(server).create(request))

    async def _upload(request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        found = await server.store.run(store.get, request.path_params["uuid"])
        if found is None:
            raise ApiError(404, f'Upload[id="{request.path_params["uuid"]}"] not found.',
                           code="ERR_CODE_NOT_FOUND")
        user = request.state.user
        if not user.is_admin and user.username != found[0]["created_by"]:
            raise ApiError(403, "forbidden", code="ERR_CODE_FORBIDDEN",
                           detail="only administrators and the user who uploaded it")
        return found

    async def list_uploads(request: Request) -> Response:
        """Uploads, newest first (administrators see all, other users their own)."""
        query = parse_list_query(request.query_params, UPLOADS)
        user = request.state.user
        rows = [_summary(u) for u in await server.store.run(store.all_uploads)
                if user.is_admin or u["created_by"] == user.username]
        page, count = apply_list_query(rows, query, UPLOADS)
        return data_response(page, count=count)

    async def get_upload(request: Request) -> Response:
        """An upload with each client's result (pending, success, error or ignored)."""
        upload, results = await _upload(request)
        return data_response({**_summary(upload), "clients": results})

    register("/files", upload, ["POST"], name="upload", permission=PERMISSION,
             body={"content": {"multipart/form-data": {"schema": FORM_SCHEMA}}},
             responses={200: '{"uuid", "filepath", "size"}: received; sending it to the clients '
                             "goes on (see GET /files/{uuid})",
                        400: "not multipart, no file, no or a refused dest, a bad option or "
                             "target, an md5 that does not match",
                        403: "a target client the caller may not use",
                        404: "a client or group of the targets does not exist",
                        409: "an upload with this id exists",
                        413: "the file is larger than [api] max_filepush_size"},
             # RPort's names; each client's result follows as uploads success or failed
             audit=Audit("uploads", "create", affected="response:uuid", response=True))
    register("/files", list_uploads, name="list", list_params=True, permission=PERMISSION,
             responses={200: "the uploads, with meta.count",
                        400: "a bad sort, filter, fields or page parameter"})
    register("/files/{uuid}", get_upload, name="get", permission=PERMISSION,
             responses={200: "the upload and each client's result",
                        403: "another user's upload", 404: "no such upload"})


def _summary(upload: dict[str, Any]) -> dict[str, Any]:
    summary = {k: upload.get(k) for k in ("uuid", "filepath", "size", "md5", "filename", "mode",
                                          "user", "group", "force", "sync", "created_at",
                                          "created_by", "client_ids")}
    if isinstance(summary["mode"], int):
        summary["mode"] = f"{summary['mode']:04o}"  # as it was given: octal
    return summary
