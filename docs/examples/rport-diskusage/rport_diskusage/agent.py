"""diskusage, agent side: the ``diskusage.usage`` request handler. Hook implementations only."""

from __future__ import annotations

import asyncio
from typing import Any

from rport.agent.plugin import RemoteError, hookimpl

from . import NAME
from .config import DiskUsageAgentConfig
from .usage import Refused, measure, resolve


@hookimpl
def rport_config_class() -> type:
    return DiskUsageAgentConfig


@hookimpl
def rport_register_handlers(agent: Any, register: Any) -> None:
    async def usage(session: Any, body: Any) -> dict[str, Any]:
        cfg: DiskUsageAgentConfig = agent.plugin_config(NAME)
        requested = body.get("path") if isinstance(body, dict) else None
        try:
            path = resolve(requested, cfg.paths)
            # shutil.disk_usage blocks (a slow or hung mount): never in the event loop.
            return await asyncio.to_thread(measure, path)
        except Refused as exc:
            raise RemoteError(str(exc)) from None  # the server sees exactly this message

    register.request(f"{NAME}.usage", usage)
