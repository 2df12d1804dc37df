"""idle, server side: a background task that closes idle and expired tunnels of the tunnels
plugin. Disabled, tunnels stay open until deleted (their idle_timeout_minutes is not enforced)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from rport.core.plugin import hookimpl

from .config import IdleConfig
from .reaper import Reaper

NAME = "idle"
log = logging.getLogger("rport.plugins.idle")


@hookimpl
def rport_config_class() -> type:
    return IdleConfig


async def _loop(server: Any, cfg: IdleConfig) -> None:
    reaper = Reaper(minute=cfg.minute, clock=time.monotonic, wall_clock=time.time)
    while True:
        await asyncio.sleep(cfg.check_interval)
        tunnels = server.state.get("tunnels")
        if tunnels is None:
            continue
        for tunnel, reason in reaper.expired(tunnels.all()):
            try:
                await tunnels.close(tunnel, reason)
            except Exception:
                log.exception("closing tunnel %s of %s failed", tunnel.id, tunnel.client_id)


@hookimpl
def rport_server_started(server: Any) -> None:
    server.state[NAME] = asyncio.create_task(_loop(server, server.plugin_config(NAME)))


@hookimpl
async def rport_server_shutdown(server: Any) -> None:
    task = server.state.pop(NAME, None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
