"""auditlog, server side: ``GET /auditlog``, the writer subscribed to AuditEvent, rotation, and
``auditlog`` in ``GET /status``. Hook implementations only; see :mod:`.service`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import AuditEvent, ConfigError, StoreSchema, data_response, hookimpl

from . import query, store
from .config import AuditlogConfig
from .service import AuditLog

NAME = "auditlog"

def enabled(server: Any) -> bool:
    return bool(server.config.api.enable_audit_log)


@hookimpl
def rport_config_class() -> type:
    return AuditlogConfig


@hookimpl
def rport_store_schema() -> StoreSchema:
    return store.SCHEMA  # the table exists even while the log is off, so turning it on is quick


@hookimpl
def rport_server_startup(server: Any) -> None:
    if not enabled(server):
        return
    cfg: AuditlogConfig = server.plugin_config(NAME)
    problems = []
    if cfg.max_entries < 1:
        problems.append("plugins.auditlog.max_entries: must be at least 1")
    if cfg.keep_archives < 0:
        problems.append("plugins.auditlog.keep_archives: must not be negative")
    if cfg.max_value_chars < 256:
        problems.append("plugins.auditlog.max_value_chars: must be at least 256")
    if cfg.max_value_items < 1:
        problems.append("plugins.auditlog.max_value_items: must be at least 1")
    if problems:
        raise ConfigError(problems)
    service = AuditLog(server, cfg)
    service.start()
    server.state[NAME] = service


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    service = server.state.get(NAME)
    if service is not None:
        await service.close()


@hookimpl
def rport_register_subscribers(server: Any, register: Any) -> None:
    if not enabled(server):
        return

    async def audit(event: AuditEvent) -> None:
        service = server.state.get(NAME)
        if service is not None:
            await service.submit(event)

    register(AuditEvent, audit)


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    if not enabled(server):
        return

    async def list_entries(request: Request) -> Response:
        """The audit log: who did what to which client, from where (sort, filter, page)."""
        user = request.state.user
        parsed = query.parse(request.query_params.multi_items(),
                             username=None if user.is_admin else user.username)
        rows, count = await server.state[NAME].list(parsed)
        return data_response(rows, count=count)

    register("/auditlog", list_entries, name="list", list_params=True, permission="auditlog",
             responses={200: "the entries of this page (timestamp, username, remote_ip, "
                             "application, action, affected_id, client_id, client_hostname, "
                             "request, response), with meta.count (all that match)",
                        400: "a bad sort, filter or page parameter",
                        403: "a non-administrator filtered by username (or lacks the "
                             "auditlog permission)"})


@hookimpl
def rport_status_document(server: Any, doc: dict) -> None:
    doc["auditlog"] = {"enabled": enabled(server),
                       "rotation": server.config.api.audit_log_rotation}


@hookimpl(optionalhook=True)
def rport_register_metrics(server: Any, registry: Any) -> None:
    """The metrics plugin's hook: entries written, dropped, failed, rotated out."""
    if not enabled(server):
        return
    from .metrics import AuditlogCollector  # prometheus_client only when metrics are on

    registry.register(AuditlogCollector(lambda: server.state.get(NAME)))
