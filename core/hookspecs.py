"""Hook specifications of the server (entry-point group ``rport.server``).

Grouped by lifecycle. Every hook may return a value or an awaitable; the core awaits every
result. The core calls each plugin's implementation itself (not pluggy's ``firstresult``), so the
result rule of each hook is stated here. Registration hooks get a ``register`` callback that
records which plugin registered what; a duplicate fails at start-up naming both plugins.
See docs/hooks.md for the same reference with the built-in plugins that use each hook.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("rport")

# --- loading -----------------------------------------------------------------------------------


@hookspec(historic=True)
def rport_add_hookspecs(pluginmanager: Any) -> Any:
    """Add hook specifications that this plugin defines for other plugins to implement, with
    ``pluginmanager.add_hookspecs(module)`` (as pytest's ``pytest_addhooks``). Called when the
    plugin is registered. Result rule: ignored."""


# --- configuration (called once, at start-up, before everything else) ------------------------


@hookspec
def rport_config_class() -> Any:
    """Return the frozen attrs class of this plugin's ``[plugins.<name>]`` table, or None if it
    has no settings. The core structures the table (``{}`` when absent) with unknown keys
    forbidden; a bad table stops start-up with ``plugins.<name>.<key>: message``. The plugin gets
    the result from ``server.plugin_config(name)``.
    Result rule: one value per plugin, kept under that plugin's name."""


@hookspec
def rport_store_schema() -> Any:
    """Return this plugin's tables and migrations, ``StoreSchema(metadata, migrations)``, or
    None if it stores nothing: ``metadata`` is the ``sqlalchemy.MetaData`` of its tables and
    ``migrations`` the directory of its Alembic revision files. At start-up, before any other
    hook touches the store, the core runs the pending revisions of the core and of every plugin
    (each plugin has its own history, in table ``alembic_version_<name>``), then checks that
    every declared table exists. A table declared by two plugins, or a migration that fails,
    stops start-up naming the plugin. The plugin then reads and writes its tables with
    ``await server.store.run(fn, ...)``.
    Result rule: one value per plugin, kept under that plugin's name."""


# --- registration (called once, at start-up, after configuration) -----------------------------


@hookspec
def rport_register_routes(server: Any, register: Any) -> Any:
    """Register API routes: ``register(path, endpoint, methods=["GET"], *, name="", params=(),
    list_params=False, summary="", public=False, body=None, responses=None, permission=None,
    audit=None, agent=False)``.
    ``path`` is below ``/api/v1``;
    ``endpoint`` is ``async def (request) -> Response``; ``name`` defaults to the endpoint's
    name and is prefixed ``<plugin>:``; ``params`` are the query parameters the route accepts
    (others are a 400) and ``list_params`` adds RPort's sort/filter/fields/page; ``public``
    routes skip authentication (the route must then check credentials itself); ``body`` (JSON
    schema of the request body), ``responses`` (``{status: meaning}``, every code the route
    answers) and ``permission`` (the per-function permission a non-admin needs) describe the
    route in the OpenAPI document; ``audit`` (``Audit(application, action, ...)`` or an
    ``(application, action)`` pair) has every successful request recorded in the audit log;
    ``agent=True`` marks a ``{client_id}`` route that talks to
    that client's agent (its session, or listeners that follow it): in a cluster it runs on the
    node that holds the agent.
    ``register.page(path, endpoint, methods=["GET"], *, name="")`` serves a web page outside
    the API (``path`` not under ``/api``, Starlette path syntax such as ``/x/{path:path}``):
    public, the core authenticates nothing there; other methods are a 405 and paths nobody
    serves the API's 404, in the error envelope.
    Result rule: ignored."""


@hookspec
def rport_register_handlers(server: Any, register: Any) -> Any:
    """Register what agents may ask the server: ``register.request(name, fn)`` for requests
    (``async fn(session, body) -> answer``) and ``register.stream(kind, fn)`` for streams the
    agent opens (``async fn(session, stream)``). Result rule: ignored."""


@hookspec
def rport_register_subscribers(server: Any, register: Any) -> Any:
    """Subscribe to core events: ``register(EventClass, async fn(event))``. Each subscriber has
    its own bounded queue and task, so a slow one delays nobody. Result rule: ignored."""


# --- lifecycle ------------------------------------------------------------------------------


@hookspec
def rport_server_startup(server: Any) -> Any:
    """Called after registration and before the server listens: open stores, start background
    tasks. Awaited in plugin order (the plugin registered last first, as pluggy calls hooks);
    an exception stops start-up naming the plugin.
    Result rule: ignored."""


@hookspec
def rport_server_started(server: Any) -> Any:
    """Called once the agent endpoint and the API listen (their bound addresses are known:
    ``server.agent_address``, ``server.api_address``). Result rule: ignored."""


@hookspec
def rport_server_shutdown(server: Any) -> Any:
    """Called once when the server stops, after agents are disconnected, in reverse plugin
    order. Errors are logged, not raised. Result rule: ignored."""


# --- authentication ---------------------------------------------------------------------------


@hookspec
def rport_authenticate_api(server: Any, request: Any) -> Any:
    """Identify the caller of an API request from its credentials. Return a ``User`` when the
    credentials are this plugin's and valid, None when the request carries no credential this
    plugin understands, or raise ``ApiError(401)`` for a credential it owns that is wrong.
    Result rule: called in plugin order until one returns a ``User``, which wins (later
    plugins are not asked); if none does, 401."""


@hookspec
def rport_authenticate_agent(server: Any, auth_id: str, password: str, address: str) -> Any:
    """Check an agent's credentials (``--auth id:password``). Return True to accept, False to
    refuse, None if this plugin does not know the id. Result rule: any False refuses (a veto);
    otherwise at least one True is needed; with no plugin answering, every agent is refused."""


# --- clients ----------------------------------------------------------------------------------


@hookspec
def rport_agent_accepting(server: Any, client: Any, hello: Any) -> Any:
    """An authenticated agent is about to be registered as ``client`` (with its raw ``hello``).
    Return a string to refuse it with that reason, or None. Result rule: any string refuses."""


@hookspec
def rport_client_document(server: Any, client: Any, doc: dict) -> Any:
    """Add this plugin's fields to a client's JSON document (``doc``, RPort's client fields), in
    place, e.g. ``doc["tunnels"] = [...]``. Must not block. The registry keeps the document
    until the client changes (any of its fields is assigned, or it reconnects): when the data
    behind your fields changes otherwise, call ``server.clients.changed(client_id)`` (or
    ``server.clients.changed()`` for every client) so that it is made again.
    Result rule: ignored."""


@hookspec
def rport_client_user_groups(server: Any, client: Any) -> Any:
    """User groups whose non-admin users may see and use ``client``, besides its own
    ``allowed_user_groups``: an iterable of group names, or None. Must not block. Kept, like
    the document, until the client changes or ``server.clients.changed(...)`` is called.
    Result rule: the union of every plugin's answer."""


@hookspec
def rport_status_document(server: Any, doc: dict) -> Any:
    """Add this plugin's fields to ``GET /status`` (e.g. ``used_ports``), in place. Must not
    block. Result rule: ignored."""
