"""Hook specifications of the agent (entry-point group ``rport.agent``).

Same rules as the server's (see :mod:`rport.core.hookspecs`): hooks may return awaitables, the
core calls each implementation itself, and each docstring gives when, parameters and result rule.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("rport")


@hookspec(historic=True)
def rport_add_hookspecs(pluginmanager: Any) -> Any:
    """Add hook specifications this plugin defines for other agent plugins, with
    ``pluginmanager.add_hookspecs(module)``. Result rule: ignored."""


@hookspec
def rport_config_class() -> Any:
    """The frozen attrs class or dataclass of this plugin's ``[plugins.<name>]`` table in
    ``rport.conf``, or None. Result rule: one value per plugin; read it with
    ``agent.plugin_config(name)``."""


@hookspec
def rport_config_sections() -> Any:
    """Top-level ``rport.conf`` tables this plugin reads besides ``[plugins.<name>]`` (RPort
    keeps some, e.g. ``[remote-commands]``), as a list of names. Read them from
    ``agent.config.extra_sections``. Result rule: the union of all plugins' lists."""


@hookspec
def rport_register_handlers(agent: Any, register: Any) -> Any:
    """Register what the server may ask this agent: ``register.request(name, async fn(session,
    body))`` and ``register.stream(kind, async fn(session, stream))``. Result rule: ignored."""


@hookspec
def rport_agent_startup(agent: Any) -> Any:
    """Called once before the first connection. Result rule: ignored; an exception stops the
    agent naming the plugin."""


@hookspec
def rport_agent_hello(agent: Any) -> Any:
    """Data this plugin sends to the server in each hello (e.g. the tunnels it wants), as a
    JSON-able value or None. The server keeps it in ``client.plugin_data[<name>]``.
    Result rule: one value per plugin, sent under its name."""


@hookspec
def rport_agent_connected(agent: Any, session: Any) -> Any:
    """The server accepted us; ``session`` is live. Called after every (re)connection.
    Result rule: ignored."""


@hookspec
def rport_agent_disconnected(agent: Any, reason: str) -> Any:
    """The session ended (``reason``); the agent will reconnect. Result rule: ignored."""


@hookspec
def rport_agent_shutdown(agent: Any) -> Any:
    """Called once when the agent stops. Result rule: ignored; errors are logged."""
