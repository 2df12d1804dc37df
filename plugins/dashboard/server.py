"""dashboard, server side: the web dashboard at ``/`` on the API's address. Hook
implementations only; see :mod:`.site`."""

from __future__ import annotations

import asyncio
from typing import Any

from rport.core.plugin import ConfigError, hookimpl

from .config import DashboardConfig
from .site import ASSET_PREFIX, Site

NAME = "dashboard"
MIN_REFRESH = 1.0


@hookimpl
def rport_config_class() -> type[DashboardConfig]:
    return DashboardConfig


@hookimpl
async def rport_register_routes(server: Any, register: Any) -> None:
    config: DashboardConfig = server.plugin_config(NAME)
    if 0 < config.refresh_interval < MIN_REFRESH:
        raise ConfigError([f"plugins.{NAME}.refresh_interval: at least {MIN_REFRESH:g}s, or 0 "
                           f"to turn live updates off (got {config.refresh_interval:g}s)"])
    site = await asyncio.to_thread(Site.load, config)
    server.state[NAME] = site
    register.page("/", site.index, name="index")
    register.page(ASSET_PREFIX + "{path:path}", site.asset, name="asset")
