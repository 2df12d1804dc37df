"""The server: built by :func:`create_server` from a config, never a module-level singleton, so
several can run in one process (tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import Any, Iterable

import uvicorn

from . import hookspecs
from .accept import BoundedAcceptor
from .agents import AgentEndpoint
from .api.app import build_app
from .api.connections import ApiConnections, guarded_protocol
from .api.routes import register_core_routes
from .api.routing import RouteTable
from .clients import Client, ClientRegistry
from .confload import ConfigError, HostPort, parse_host_port, structure
from .datadir import make_private, prepare_data_dir
from .config import ServerConfig
from .events import AddressBanned, ClientRemoved, EventBus
from .keys import ServerIdentity, load_or_create_server_identity, server_ssl_context
from .plugins import PluginError, PluginSet, call_impl, create_plugin_manager, impls
from .protocol.frames import HEADER
from .protocol.websocket import LinkSettings
from .session import Handlers
from .store import Store
from .throttle import Throttle

log = logging.getLogger("rport.server")

ENTRY_POINT_GROUP = "rport.server"
LISTEN_BACKLOG = 1024
HELLO_MAX_MESSAGE = 64 << 10  # an agent's hello is about 1 KiB (its facts)



class _UvicornServer(uvicorn.Server):
    """uvicorn without its signal handlers (rportd owns the process's signals), serving the
    sockets it is given with a bound on the TLS handshake (uvicorn leaves asyncio's 60 s)."""

    def __init__(self, config: uvicorn.Config, *, tls_handshake_timeout: float) -> None:
        super().__init__(config)
        self.tls_handshake_timeout = tls_handshake_timeout

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state,
                _loop=_loop)

        tls = {"ssl": config.ssl, "ssl_handshake_timeout": self.tls_handshake_timeout} \
            if config.ssl else {}
        self.servers = [await loop.create_server(create_protocol, sock=sock,
                                                 backlog=config.backlog, **tls)
                        for sock in sockets or []]
        self.started = True


class RportServer:
    def __init__(self, config: ServerConfig, plugins: PluginSet) -> None:
        self.config = config
        self.plugins = plugins
        self.pm = plugins.pm
        self.hook = plugins.pm.hook
        self.bus = EventBus()
        self.clients = ClientRegistry()
        self.handlers = Handlers()
        self.routes = RouteTable()
        self.store = Store(config.database.url, config.data_dir / "rportd.db")
        cfg = config.server
        # Failed logins, as RPort has them: addresses wait after each failure and are banned
        # after max_failed_login in a row; auth ids and user names only wait.
        self.agent_throttle = Throttle(wait=cfg.client_login_wait, max_failures=cfg.max_failed_login,
                                       ban_time=cfg.ban_time, on_ban=self._banned("agent"))
        self.agent_id_throttle = Throttle(wait=cfg.client_login_wait, max_failures=1,
                                          ban_time=cfg.client_login_wait)
        self.api_throttle = Throttle(wait=0, max_failures=config.api.max_failed_login,
                                     ban_time=config.api.ban_time, on_ban=self._banned("api"))
        self.api_user_throttle = Throttle(wait=config.api.user_login_wait, max_failures=1,
                                          ban_time=config.api.user_login_wait)
        self.endpoint = AgentEndpoint(self)
        self.state: dict[str, Any] = {}
        """Per-server state of each plugin, by plugin name (plugin modules are shared by every
        server in the process, so they keep nothing global)."""
        self.identity: ServerIdentity = None  # type: ignore[assignment]  # set by start()
        self.agent_address: HostPort = parse_host_port(cfg.address)
        self.api_address: HostPort | None = None
        self.started = asyncio.Event()
        self._plugin_configs: dict[str, Any] = {}
        self._public_host = ""  # for connect_urls, found once the agent endpoint listens
        self._acceptor: BoundedAcceptor | None = None
        self._api_server: _UvicornServer | None = None
        self.api_connections: ApiConnections | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self.cluster: Any = None
        """With ``[cluster] nats_url``: this node's :class:`rport.core.cluster.Cluster` (None on a
        server of its own, where nothing of the cluster is imported)."""
        if config.cluster.nats_url:
            from .cluster import Cluster

            self.cluster = Cluster(self)

    def _banned(self, scope: str) -> Any:
        """The throttle's ``on_ban``: an AddressBanned event (keys are "<kind>-address:<ip>")."""
        def on_ban(key: str) -> None:
            self.bus.publish(AddressBanned(scope, key.partition(":")[2]))
        return on_ban

    # -- plugins' view -------------------------------------------------------------------------

    def plugin_config(self, name: str) -> Any:
        """The structured ``[plugins.<name>]`` table of plugin ``name`` (None if it has none)."""
        return self._plugin_configs.get(name)

    async def remove_client(self, client_id: str, reason: str) -> None:
        """Forget a client: registry, store, and a ClientRemoved event so plugins forget it too."""
        self.clients.remove(client_id)
        await self.store.delete_client(client_id)
        if self.cluster is not None:
            self.cluster.client_removed(client_id, reason)
        self.bus.publish(ClientRemoved(client_id, reason))

    async def save_client_settings(self, client: Client) -> None:
        """Store what an administrator set on a client (and tell the cluster's other nodes)."""
        await self.store.save_client(client.id, client.to_record(),
                                     None if client.connected else client.disconnected_at)
        if self.cluster is not None:
            self.cluster.client_changed(client)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def connect_urls(self) -> list[str]:
        """``[server] url``, or the agent endpoint's address; an unspecified one (0.0.0.0, ::)
        is replaced by this host's address on its default route, which agents can use."""
        if self.config.server.url:
            return list(self.config.server.url)
        address = self.agent_address
        if address.host in ("0.0.0.0", "::", ""):
            address = HostPort(self._public_host or _host_address(address.host), address.port)
        return [f"https://{address}"]

    def configure_plugins(self) -> None:
        """Structure every plugin's ``[plugins.<name>]`` table; raises :class:`ConfigError`."""
        problems: list[str] = []
        tables = dict(self.config.plugins.tables)
        for impl in self.hook.rport_config_class.get_hookimpls():
            name = impl.plugin_name
            cls = impl.function()
            raw = tables.pop(name, {})
            if cls is None:
                if raw:
                    problems.append(f"plugins.{name}: this plugin has no settings")
                continue
            try:
                self._plugin_configs[name] = structure(raw, cls, prefix=f"plugins.{name}")
            except ConfigError as exc:
                problems += exc.problems
        for name in tables:
            if name not in self.plugins.info and name not in self.plugins.disabled:
                problems.append(f"plugins.{name}: no such plugin is installed")
            elif name in self.plugins.info:
                problems.append(f"plugins.{name}: this plugin has no settings")
        if problems:
            raise ConfigError(problems, source=self.config.source)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        data_dir = self.config.data_dir
        await asyncio.to_thread(self._private_data_dir)
        self.identity = await asyncio.to_thread(
            load_or_create_server_identity, data_dir, self.config.server.key_seed)
        log.info("data directory %s", data_dir)
        log.info("server key fingerprint %s (%s)", self.identity.fingerprint, self.identity.sha256)
        await self._open_store()
        if self.cluster is not None:
            self.cluster.watch_throttles({
                "agent": self.agent_throttle, "agent_id": self.agent_id_throttle,
                "api": self.api_throttle, "api_user": self.api_user_throttle})
            await self.cluster.start()
        else:
            await self._load_clients()
        register_core_routes(self, self.routes.registrar("core"))
        for impl in impls(self.hook.rport_register_routes):
            await call_impl(impl, server=self, register=self.routes.registrar(impl.plugin_name))
        for impl in impls(self.hook.rport_register_handlers):
            await call_impl(impl, server=self, register=self.handlers.registrar(impl.plugin_name))
        for impl in impls(self.hook.rport_register_subscribers):
            owner = impl.plugin_name
            await call_impl(impl, server=self,
                        register=lambda etype, fn, owner=owner: self.bus.subscribe(etype, fn, owner))
        for impl in impls(self.hook.rport_server_startup):
            await call_impl(impl, server=self)
        if self.cluster is not None:
            self.bus.bridge = self.cluster.forward_event
        await self.bus.start()
        await self._listen_agents()
        await self._listen_api()
        # Agents are accepted once the API answers: restarted under a fleet that comes back at
        # once, the API waited for seconds of handshakes before it even listened.
        if self._acceptor is not None:
            self._acceptor.start()
        self._tasks.append(asyncio.create_task(self._purge_loop(), name="purge"))
        for impl in impls(self.hook.rport_server_started):
            await call_impl(impl, server=self)
        self.started.set()

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping")
        if self._api_server is not None:
            self._api_server.should_exit = True
        if self._acceptor is not None:
            await self._acceptor.close()
        # Our own closing handshake with every agent, so that both sides log why: the agent
        # "peer closed the connection (1000: server stopping)", we "server stopping".
        sessions = [c.session for c in self.clients.connected()
                    if c.session is not None and not c.node_id]  # not those of other nodes
        await asyncio.gather(*(s.close("server stopping") for s in sessions),
                             return_exceptions=True)
        await self.endpoint.wait_closed(10)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for impl in self.hook.rport_server_shutdown.get_hookimpls():
            try:
                await call_impl(impl, server=self)
            except Exception:
                log.exception("shutdown of plugin %r failed", impl.plugin_name)
        await self.bus.stop()
        if self.cluster is not None:
            if self.store.is_open:
                await self.store.flush()  # (a save landing after the node left would undo it)
            await self.cluster.stop()  # marks only this node's agents disconnected
        elif self.store.is_open:
            await self.store.mark_all_disconnected(time.time())
        await self.store.close()
        log.info("stopped")

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())

    # -- internals -------------------------------------------------------------------------------

    def _private_data_dir(self) -> None:
        data_dir = self.config.data_dir
        prepare_data_dir(data_dir, log)
        for path in data_dir.glob("rportd*"):  # the store and its -wal/-shm, keys, credentials
            if path.is_file():
                make_private(path, log)

    async def _open_store(self) -> None:
        """Open the store with every plugin's tables migrated (``rport_store_schema``)."""
        schemas: dict[str, Any] = {}
        builtin = {name for name, info in self.plugins.info.items() if info.builtin}
        # Built-ins first: a third-party plugin that declares one of their tables is the one named.
        for impl in sorted(impls(self.hook.rport_store_schema), key=lambda i: i.plugin_name not in builtin):
            schema = await call_impl(impl)
            if schema is not None:
                schemas[impl.plugin_name] = schema
        for reserved in ("core", "cluster"):
            if reserved in schemas:
                raise PluginError(f"plugin {reserved!r}: this name is reserved for the core's tables")
        if self.cluster is not None:
            from .cluster.tables import SCHEMA as CLUSTER_SCHEMA

            schemas["cluster"] = CLUSTER_SCHEMA
        try:
            await self.store.open(schemas)
        except ValueError as exc:  # a schema that cannot be used, naming its plugin
            raise PluginError(str(exc)) from None

    async def _load_clients(self) -> None:
        now = time.time()
        keep = self.config.server.keep_disconnected_clients
        for record, disconnected_at in await self.store.load_clients():
            client = Client.from_record(record, disconnected_at or now)
            if keep > 0 and now - (client.disconnected_at or now) < keep:
                self.clients.put(client)
            else:
                await self.store.delete_client(client.id)
        await self.store.mark_all_disconnected(now)
        if len(self.clients):
            log.info("%d disconnected client(s) restored from the store", len(self.clients))

    async def _listen_agents(self) -> None:
        cfg = self.config.server
        settings = LinkSettings(
            max_message=cfg.max_request_bytes_client + HEADER.size,
            ping_interval=cfg.keep_alive or None, ping_timeout=cfg.keep_alive_timeout or None,
            hello_max_message=HELLO_MAX_MESSAGE)
        sock = _bind(self.agent_address)
        self._acceptor = BoundedAcceptor(
            sock, server_ssl_context(self.identity), self.endpoint.open, settings,
            handshake_timeout=cfg.handshake_timeout, max_pending=cfg.max_pending_connections,
            per_address=cfg.max_pending_per_address)  # started by start()
        self.agent_address = _bound(sock)
        log.info("agent endpoint listening on %s (TLS)", self.agent_address)
        if not cfg.url and self.agent_address.host in ("0.0.0.0", "::"):
            self._public_host = await asyncio.to_thread(_host_address, self.agent_address.host)
            log.info("server.url is not set: agents are told %s (this host's address on its "
                     "default route); set [server] url if they reach it by another name",
                     self.connect_urls[0])

    async def _listen_api(self) -> None:
        api = self.config.api
        if not api.address:
            log.info("API disabled (api.address is empty)")
            return
        address = parse_host_port(api.address, default_host="127.0.0.1")
        sock = _bind(address)
        self.api_address = _bound(sock)
        tls = bool(api.cert_file)
        self.api_connections = ApiConnections(max_connections=api.max_connections,
                                              read_timeout=api.read_timeout)
        config = uvicorn.Config(
            build_app(self), log_config=None, access_log=False, lifespan="off",
            ssl_certfile=api.cert_file or None, ssl_keyfile=api.key_file or None,
            http=guarded_protocol(self.api_connections), timeout_keep_alive=5,
            server_header=False, h11_max_incomplete_event_size=16384, backlog=listen_backlog(),
            proxy_headers=False)  # the peer address is the socket's: X-Forwarded-For would let any
        # caller pick the address its failed logins are counted (and banned) under
        self._api_server = _UvicornServer(config, tls_handshake_timeout=api.read_timeout)
        task = asyncio.create_task(self._api_server.serve(sockets=[sock]), name="api")
        self._tasks.append(task)
        while not self._api_server.started:
            if task.done():
                task.result()
                raise RuntimeError("API server stopped during start-up")
            await asyncio.sleep(0.01)
        log.info("API listening on %s://%s", "https" if tls else "http", self.api_address)

    async def _purge_loop(self) -> None:
        cfg = self.config.server
        while True:
            await asyncio.sleep(max(1.0, cfg.purge_disconnected_clients_interval))
            cutoff = time.time() - cfg.keep_disconnected_clients
            if self.cluster is not None and not self.cluster.may_purge():
                continue  # one node of a cluster purges
            for client in self.clients:
                if not client.connected and client.disconnected_at and client.disconnected_at < cutoff:
                    await self.remove_client(client.id, "purged")
                    log.info("client %s purged (disconnected since %s)", client.id,
                             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(client.disconnected_at)))




def _bind(address: HostPort) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says it is TCP (Nagle would add ~40 ms to each request/response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise PluginError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    sock.listen(listen_backlog())
    sock.setblocking(False)
    return sock


def listen_backlog() -> int:
    """The system's maximum (as Go's net package takes it): a fleet coming back after a
    restart waits in the kernel's accept queue rather than retry after dropped SYNs (1, 3, 7 s...)."""
    try:
        return max(LISTEN_BACKLOG, min(65535, int(Path(SOMAXCONN).read_text())))
    except (OSError, ValueError):
        return LISTEN_BACKLOG


SOMAXCONN = "/proc/sys/net/core/somaxconn"


def _host_address(unspecified: str) -> str:
    """This host's address on its default route (for IPv6 if ``unspecified`` is ``::``), found
    without sending anything (a UDP socket is only connected); the loopback address if there is
    no route."""
    family, probe, loopback = (socket.AF_INET6, "2001:db8::1", "::1") if ":" in unspecified \
        else (socket.AF_INET, "192.0.2.1", "127.0.0.1")  # documentation addresses (RFC 5737, 3849)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe_sock:
            probe_sock.connect((probe, 9))
            return str(probe_sock.getsockname()[0])
    except OSError:
        return loopback


def _bound(sock: socket.socket) -> HostPort:
    host, port = sock.getsockname()[:2]
    return HostPort(host, port)


def create_server(config: ServerConfig, *, extra_plugins: Iterable[tuple[str, Any]] = ()) -> RportServer:
    """Load the plugins (entry points of ``rport.server`` minus the disabled ones, plus
    ``extra_plugins``), configure them and return a server ready to :meth:`~RportServer.start`.
    Raises :class:`PluginError` or :class:`ConfigError` naming the plugin or key at fault."""
    plugins = create_plugin_manager(ENTRY_POINT_GROUP, hookspecs,
                                    disabled=config.plugins.disabled, extra=extra_plugins)
    server = RportServer(config, plugins)
    server.configure_plugins()
    return server


__all__ = ["RportServer", "create_server", "ENTRY_POINT_GROUP"]
