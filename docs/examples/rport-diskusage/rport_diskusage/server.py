"""diskusage, server side: ``GET /api/v1/clients/{client_id}/disk-usage[?path=...]`` asks that
client's agent (request ``diskusage.usage``), keeps the answer in the plugin's own table and
returns it; ``GET /api/v1/clients/{client_id}/disk-usage/history`` lists what was kept. Hook
implementations only (the table is :mod:`.history`'s)."""

from __future__ import annotations

import time
from typing import Any

from rport.core.plugin import (
    ApiError, RemoteError, SessionClosed, StoreSchema, data_response, hookimpl,
)
from starlette.requests import Request
from starlette.responses import Response

from . import NAME, history
from .config import DiskUsageServerConfig


@hookimpl
def rport_config_class() -> type:
    return DiskUsageServerConfig


@hookimpl
def rport_store_schema() -> StoreSchema:
    return history.SCHEMA  # its table, and the Alembic migrations rportd runs at start-up


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    async def usage(request: Request) -> Response:
        """Disk usage (total, used, free bytes and percent used) of a path on a connected client."""
        client_id = request.path_params["client_id"]
        session = server.clients.session(client_id)  # None unless connected now
        if session is None:
            raise ApiError(404, f'Active client with id="{client_id}" not found.',
                           code="ERR_CODE_CLIENT_NOT_FOUND")
        cfg: DiskUsageServerConfig = server.plugin_config(NAME)
        try:
            answer = await session.request(
                f"{NAME}.usage", {"path": request.query_params.get("path")}, timeout=cfg.timeout)
        except RemoteError as exc:  # the agent refused (a path it does not allow, ...)
            raise ApiError(409, str(exc), code="ERR_CODE_CLIENT_ERROR",
                           detail=f"client {client_id} refused the request") from None
        except (SessionClosed, TimeoutError):
            raise ApiError(409, f"client {client_id} did not answer", code="ERR_CODE_CLIENT_ERROR",
                           detail=f"no answer within {cfg.timeout:g}s or the client disconnected") from None
        # Committed before the caller hears of it.
        await server.store.run(history.add, client_id, answer, time.time())
        return data_response(answer)

    async def usage_history(request: Request) -> Response:
        """The disk usage measured on a client so far (up to 100), newest first."""
        return data_response(await server.store.run(history.of_client, request.path_params["client_id"]))

    # Every status code each route answers (the OpenAPI document lists them)
    register("/clients/{client_id}/disk-usage", usage, name="usage", params=("path",),
             responses={200: "total, used, free and percent", 404: "no connected client",
                        409: "the client refused the path, or did not answer"})
    register("/clients/{client_id}/disk-usage/history", usage_history, name="history",
             responses={200: "the measurements, newest first"})
