"""The hook the metrics plugin defines for other plugins (added with rport_add_hookspecs).
Implement it with ``@hookimpl(optionalhook=True)``, so that your plugin still loads when the
metrics plugin is disabled."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("rport")


@hookspec
def rport_register_metrics(server: Any, registry: Any) -> Any:
    """Add this plugin's metrics to the server's ``registry`` (a prometheus_client
    ``CollectorRegistry``, one per server: never the library's global one): create them with
    ``registry=registry`` (``Counter("rport_x", "...", registry=registry)``) and keep them in
    ``server.state``, or ``registry.register(collector)`` for an object whose ``collect()``
    reads your state at each scrape. Called once, at start-up (after every plugin's
    ``rport_server_startup``). A name registered twice stops start-up naming the plugin.
    Result rule: ignored."""
