"""The agent: connects out to rportd, proves nothing until the server has proved its key, and
keeps reconnecting with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import uuid
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from rport.core import __version__
from rport.core.confload import ConfigError, structure
from rport.core.datadir import prepare_data_dir
from rport.core.pinning import (
    certificate_point,
    client_ssl_context,
    fingerprint,
    fingerprint_matches,
    sha256_fingerprint,
)
from rport.core.plugins import PluginSet, call_each, call_impl, create_plugin_manager, impls
from rport.core.protocol import SUPPORTED_PROTOCOLS
from rport.core.protocol.frames import T, decode, decode_json_object, encode_json
from rport.core.protocol.mux import Limits, MuxSession, valid_window
from rport.core.protocol.websocket import (
    SUBPROTOCOL,
    LinkSettings,
    TransportClosed,
    WebSocketLink,
    take_over,
)
from rport.core.session import Handlers, ProtocolViolation, RemoteError

from . import hookspecs, sysinfo
from .attributes import AttributesError, parse_attributes, read_attributes, write_attributes
from .config import AgentConfig
from .dial import HandshakeError, open_websocket

log = logging.getLogger("rport.agent")

ENTRY_POINT_GROUP = "rport.agent"
MAX_MESSAGE = 1 << 20


class ConnectFailed(Exception):
    """This attempt failed; ``retry_after`` is the least time to wait before the next one."""

    def __init__(self, message: str, retry_after: float = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def server_url(server: str) -> str:
    """RPort's rules: ``host:port``, ``http(s)://host[:port]`` or ``ws(s)://...``; http and port
    80/443 are added when missing. The link is always TLS, so the result is ``wss://``."""
    text = server.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"invalid server address {server!r}")
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"wss://{host}:{port}{parts.path or '/'}"


def machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return str(uuid.UUID(value)) if len(value) == 32 else value
    return ""



async def _ping(session: Any, body: Any) -> Any:
    return body


ATTRIBUTES_REQUEST = "update_client_attributes"


class RportAgent:
    def __init__(self, config: AgentConfig, plugins: PluginSet) -> None:
        self.config = config
        self.plugins = plugins
        self.hook = plugins.pm.hook
        self.handlers = Handlers()
        self.handlers.add_request("ping", _ping, "core")
        self.handlers.add_request(ATTRIBUTES_REQUEST, self._update_attributes, "core")
        self.session: MuxSession | None = None
        self.connected = asyncio.Event()
        self.session_id = str(uuid.uuid4())
        self.state: dict[str, Any] = {}
        self.client_id = config.client.id or (machine_id() if config.client.use_system_id else "")
        self.name = config.client.name or (socket.gethostname() if config.client.use_hostname else "")
        self.urls = [server_url(s) for s in [config.client.server, *config.client.fallback_servers]]
        """The main server, then the fallback servers, tried in this order."""
        self.url = self.urls[0]
        self.tags: list[str] = list(config.client.tags)
        self.labels: dict[str, str] = dict(config.client.labels)
        """The client's attributes as sent in the hello: ``[client] tags`` and ``labels``, or
        those of ``attributes_file_path`` (read at start, rewritten by the server's requests)."""
        self._plugin_configs: dict[str, Any] = {}
        self._facts: dict[str, Any] = {}
        # One TLS context for every attempt: no CA bundle (the server is verified by its key's
        # fingerprint), so building it is cheap, and it is not rebuilt at each reconnect.
        self._tls = client_ssl_context()

    def plugin_config(self, name: str) -> Any:
        return self._plugin_configs.get(name)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def configure_plugins(self) -> None:
        problems: list[str] = []
        tables = dict(self.config.plugins.tables)
        for impl in self.hook.rport_config_class.get_hookimpls():
            cls = impl.function()
            raw = tables.pop(impl.plugin_name, {})
            if cls is None:
                if raw:
                    problems.append(f"plugins.{impl.plugin_name}: this plugin has no settings")
                continue
            try:
                self._plugin_configs[impl.plugin_name] = structure(
                    raw, cls, prefix=f"plugins.{impl.plugin_name}")
            except ConfigError as exc:
                problems += exc.problems
        problems += [f"plugins.{name}: this plugin has no settings" if name in self.plugins.info
                     else f"plugins.{name}: no such plugin is installed"
                     for name in tables if name not in self.plugins.disabled]
        claimed = {section for impl in self.hook.rport_config_sections.get_hookimpls()
                   for section in (impl.function() or ())}
        problems += [f"{name}: unknown section" for name in self.config.extra_sections
                     if name not in claimed]
        if problems:
            raise ConfigError(problems, source=self.config.source)

    # -- attributes --------------------------------------------------------------------------------

    @property
    def attributes_path(self) -> Path | None:
        path = self.config.client.attributes_file_path
        return Path(path).expanduser() if path else None

    async def _load_attributes(self) -> None:
        """``attributes_file_path`` overrides the configured tags and labels; a file that cannot
        be read is ignored (RPort's behaviour), saying why."""
        path = self.attributes_path
        if path is None:
            return
        try:
            self.tags, self.labels = await asyncio.to_thread(read_attributes, path)
        except AttributesError as exc:
            log.warning("client attributes: %s; using the tags and labels of the configuration "
                        "instead", exc)
            return
        log.info("client attributes from %s: tags %s, labels %s", path, self.tags, self.labels)

    async def _update_attributes(self, session: Any, body: Any) -> Any:
        """The server's ``PUT /clients/{id}/attributes``: rewrite the file, then use the new
        values (the server shows them at once; the next hello carries them)."""
        path = self.attributes_path
        if path is None:
            raise RemoteError("attributes file path not set ([client] attributes_file_path)")
        try:
            tags, labels = parse_attributes(body)
            await asyncio.to_thread(write_attributes, path, tags, labels)
        except AttributesError as exc:
            raise RemoteError(str(exc)) from None
        self.tags, self.labels = tags, labels
        log.info("client attributes updated by the server: tags %s, labels %s", tags, labels)
        return {"status": "OK"}

    # -- running -----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Connect and keep connecting; returns an exit status when retries are exhausted."""
        await asyncio.to_thread(prepare_data_dir, self.data_dir, log)
        await self._load_attributes()
        for impl in impls(self.hook.rport_register_handlers):
            await call_impl(impl, agent=self, register=self.handlers.registrar(impl.plugin_name))
        for impl in impls(self.hook.rport_agent_startup):
            await call_impl(impl, agent=self)
        if not self._facts:
            self._facts = await asyncio.to_thread(sysinfo.gather)
        conn = self.config.connection
        failures = rounds = 0
        index = 0
        try:
            while True:
                self.url = self.urls[index]
                try:
                    established = await self._connect_once()
                except ConnectFailed as exc:
                    log.error("%s", exc)
                    retry_after = exc.retry_after
                    established = False
                else:
                    retry_after = 0
                failures = 0 if established else failures + 1
                if 0 <= conn.max_retry_count < failures:
                    log.error("giving up after %d failed attempts (connection.max_retry_count)",
                              failures)
                    return 1
                if established:  # the main server first again
                    index = rounds = 0
                else:  # the next server at once; after a round of failures, back off
                    index = (index + 1) % len(self.urls)
                    rounds += index == 0
                if not established and index != 0:
                    delay = retry_after
                else:
                    delay = max(retry_after, backoff(rounds, conn.min_retry_interval,
                                                     conn.max_retry_interval))
                log.info("reconnecting%s in %.1fs", f" to {self.urls[index]}"
                         if len(self.urls) > 1 else "", delay)
                await asyncio.sleep(delay)
        finally:
            for impl in self.hook.rport_agent_shutdown.get_hookimpls():
                try:
                    await call_impl(impl, agent=self)
                except Exception:
                    log.exception("shutdown of plugin %r failed", impl.plugin_name)

    async def _connect_once(self) -> bool:
        """One connection; returns True if a session was established (and has now ended)."""
        conn = self.config.connection
        settings = LinkSettings(max_message=MAX_MESSAGE, ping_interval=conn.keep_alive or None,
                                ping_timeout=conn.keep_alive_timeout or None)
        log.info("connecting to %s", self.url)
        target = urlsplit(self.url)
        try:
            ws = await open_websocket(
                target.netloc.rpartition(":")[0], target.port or 443, target.path or "/",
                ssl_context=self._tls, subprotocol=SUBPROTOCOL, timeout=conn.connect_timeout)
        except HandshakeError as exc:
            if exc.status:
                raise ConnectFailed(f"cannot connect to {self.url}: the server answered HTTP "
                                    f"{exc.status} (is this an rportd agent endpoint?)") from None
            raise ConnectFailed(f"cannot connect to {self.url}: {exc}") from None
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = "TimeoutError: timed out" if isinstance(exc, TimeoutError) and not str(exc) else (
                f"{exc.__class__.__name__}: {exc}")
            raise ConnectFailed(f"cannot connect to {self.url}: {reason}") from None
        # The server says nothing before our hello: the link takes over the connection now.
        transport = take_over(ws, settings, client=True)
        try:
            self._verify_server(transport)
            welcome = await self._handshake(transport)
        except ConnectFailed:
            await transport.close("refused")
            raise
        except (TransportClosed, ProtocolViolation) as exc:
            await transport.close(str(exc), violation=isinstance(exc, ProtocolViolation))
            raise ConnectFailed(f"handshake with {self.url} failed: {exc}") from None
        max_message = welcome.get("max_message")
        limits = Limits()
        if isinstance(max_message, int) and max_message > 2048:
            # Frames the server accepts: its max_request_bytes_client, less room for the header.
            limits = Limits(max_frame=min(limits.max_frame, max_message - 1024))
        session = MuxSession(transport, self.handlers, initiator=True, limits=limits,
                             name="server", peer_window=valid_window(welcome.get("window")))
        self.session = session
        log.info("connected to %s as client %s (protocol %s, server %s)", self.url,
                 welcome.get("client_id"), welcome.get("protocol"), welcome.get("version"))
        runner = asyncio.create_task(session.run())
        self.connected.set()
        reason = "closed"
        switchback = None
        interval = self.config.client.server_switchback_interval
        if self.url != self.urls[0] and interval > 0:
            switchback = asyncio.create_task(self._switch_back(session, interval))
        try:
            for impl in impls(self.hook.rport_agent_connected):
                await call_impl(impl, agent=self, session=session)
            reason = await runner
        finally:
            if switchback is not None:
                switchback.cancel()
            self.connected.clear()
            self.session = None
            if not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
        log.warning("disconnected from %s: %s", self.url, reason)
        for impl in impls(self.hook.rport_agent_disconnected):
            try:
                await call_impl(impl, agent=self, reason=reason)
            except Exception:
                log.exception("plugin %r failed after disconnect", impl.plugin_name)
        return True

    async def _switch_back(self, session: MuxSession, interval: float) -> None:
        """Connected to a fallback server: every ``interval``, is the main one back? Then
        this session ends and the agent reconnects to it (RPort's server_switchback_interval)."""
        main = urlsplit(self.urls[0])
        while True:
            await asyncio.sleep(interval)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(
                    main.hostname, main.port or 443), self.config.connection.connect_timeout)
            except (OSError, TimeoutError):
                continue
            writer.close()
            log.info("the main server %s is reachable again: switching back to it", self.urls[0])
            await session.close("switching back to the main server")
            return

    def _verify_server(self, transport: WebSocketLink) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        try:
            key = certificate_point(ssl_object.getpeercert(binary_form=True) or b"")
        except ValueError as exc:
            raise ConnectFailed(f"cannot verify the server at {self.url}: {exc}") from None
        expected = self.config.client.fingerprint
        if not expected:
            log.warning("no fingerprint given: cannot verify the server's identity; its key has "
                        "fingerprint %s (pin it with --fingerprint)", fingerprint(key))
        elif not fingerprint_matches(expected, key):
            raise ConnectFailed(
                f"server fingerprint mismatch: expected {expected}, the server at {self.url} has "
                f"{fingerprint(key)} ({sha256_fingerprint(key)}); refusing to send credentials "
                "(the server's key changed, or someone is intercepting the connection)")

    async def _handshake(self, transport: WebSocketLink) -> dict[str, Any]:
        auth_id, _, password = self.config.client.auth.partition(":")
        plugins = {name: value for name, value in await call_each(
            self.hook.rport_agent_hello, agent=self) if value is not None}
        transport.write(encode_json(T.HELLO, 0, {
            "protocols": list(SUPPORTED_PROTOCOLS),
            "window": Limits().window,
            "version": __version__,
            "auth": {"id": auth_id, "password": password},
            "client": {"id": self.client_id, "session_id": self.session_id, "name": self.name,
                       "tags": list(self.tags), "labels": dict(self.labels),
                       "facts": self._facts},
            "capabilities": self.handlers.capabilities,
            "plugins": plugins,
        }))
        ftype, _, payload = decode(await transport.recv())
        if ftype is T.REFUSED:
            obj = decode_json_object(ftype, payload, "reason")
            retry = obj.get("retry_after") if isinstance(obj.get("retry_after"), (int, float)) else 0
            raise ConnectFailed(f"the server refused this agent: {obj['reason']}", retry_after=retry)
        if ftype is not T.WELCOME:
            raise ProtocolViolation(f"expected WELCOME or REFUSED, got {ftype.name}")
        return decode_json_object(ftype, payload, "protocol")


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: between half and all of ``min(cap, base * 2**n)``, so
    agents that lost the same server do not come back in lockstep."""
    if failures <= 0:
        ceiling = base
    else:
        ceiling = min(cap, base * 2 ** min(failures, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)




def create_agent(config: AgentConfig, *, extra_plugins: Iterable[tuple[str, Any]] = ()) -> RportAgent:
    plugins = create_plugin_manager(ENTRY_POINT_GROUP, hookspecs,
                                    disabled=config.plugins.disabled, extra=extra_plugins)
    agent = RportAgent(config, plugins)
    agent.configure_plugins()
    return agent
