"""The agent endpoint: TLS WebSocket connections from agents, their handshake and their lifetime.

Handshake: after TLS (the agent has checked our key's fingerprint by then), the agent's first
frame is a HELLO with the protocol versions it speaks, its credentials and its facts. We answer
WELCOME (and the session starts) or REFUSED with the reason, then close. The agent must have
said hello within ``handshake_timeout`` of its TCP connection being accepted (the acceptor,
:mod:`.accept`, holds that deadline and the caps on connections not admitted yet); failed logins
are throttled per auth id and per address; bcrypt checks run in plugins off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

import attrs

from . import __version__
from .accept import Pending
from .clients import Client, clean_facts
from .events import AgentRefused, ClientConnected, ClientDisconnected
from .plugins import call_each
from .protocol import SUPPORTED_PROTOCOLS
from .protocol.frames import T, decode, decode_json_object, encode_json
from .protocol.mux import Limits, MuxSession, valid_window
from .protocol.websocket import TransportClosed, WebSocketLink
from .session import ProtocolViolation

if TYPE_CHECKING:
    from .server import RportServer

log = logging.getLogger("rport.agents")

MAX_ID = 256


class Refusal(Exception):
    def __init__(self, reason: str, *, retry_after: float = 0, log_level: int = logging.WARNING,
                 kind: str = "invalid_hello"):
        super().__init__(reason)
        self.retry_after = retry_after
        self.log_level = log_level
        self.kind = kind  # the reason of the AgentRefused event (metrics)


@attrs.frozen
class Hello:
    protocol: int
    auth_id: str
    password: str
    client_id: str
    session_id: str
    name: str
    tags: list[str]
    labels: dict[str, str]
    facts: dict[str, Any]
    version: str
    capabilities: list[str]
    plugins: dict[str, Any]
    raw: dict[str, Any] = attrs.field(repr=False)

    @property
    def window(self) -> int | None:
        """The agent's receive window for a new stream, if it announced one (then streams to it
        may be opened optimistically)."""
        return valid_window(self.raw.get("window"))


def parse_hello(obj: dict[str, Any]) -> Hello:
    """Validate a HELLO payload; a malformed one is a :class:`Refusal` saying what is wrong."""
    protocols = obj.get("protocols")
    if not isinstance(protocols, list) or not all(type(p) is int for p in protocols):
        raise Refusal("invalid hello: protocols must be a list of integers")
    common = set(protocols) & set(SUPPORTED_PROTOCOLS)
    if not common:
        theirs = ", ".join(map(str, protocols)) or "none"
        ours = ", ".join(map(str, SUPPORTED_PROTOCOLS))
        raise Refusal(f"incompatible protocol: the agent speaks version {theirs}, this server "
                      f"(rportd {__version__}) speaks version {ours}; upgrade the older side",
                      kind="incompatible")
    auth = obj.get("auth")
    client = obj.get("client")
    if not isinstance(auth, dict) or not isinstance(client, dict):
        raise Refusal("invalid hello: auth and client must be objects")
    strings = {"auth.id": auth.get("id"), "auth.password": auth.get("password"),
               "client.id": client.get("id", ""), "client.session_id": client.get("session_id", ""),
               "client.name": client.get("name", ""), "version": obj.get("version", "")}
    for key, value in strings.items():
        if not isinstance(value, str):
            raise Refusal(f"invalid hello: {key} must be a string")
        if len(value) > MAX_ID * 4:
            raise Refusal(f"invalid hello: {key} longer than {MAX_ID * 4} characters")
    if not strings["auth.id"]:
        raise Refusal("invalid hello: auth.id must not be empty")
    if len(strings["client.id"]) > MAX_ID:
        raise Refusal(f"invalid hello: client id longer than {MAX_ID} characters")
    bad = next((ch for ch in strings["client.id"] if ch in "/?#" or not ch.isprintable()), None)
    if bad is not None:
        # the id is a path segment of the API (/clients/{id}) and a word of the server's log
        raise Refusal(f"invalid hello: client id {strings['client.id']!r} has the character "
                      f"{bad!r}; use letters, digits and punctuation other than / ? #")
    tags, labels = client.get("tags", []), client.get("labels", {})
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise Refusal("invalid hello: client.tags must be a list of strings")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise Refusal("invalid hello: client.labels must map strings to strings")
    caps, plugins = obj.get("capabilities", []), obj.get("plugins", {})
    if not isinstance(caps, list) or not isinstance(plugins, dict):
        raise Refusal("invalid hello: capabilities must be a list and plugins an object")
    return Hello(protocol=max(common), auth_id=strings["auth.id"], password=strings["auth.password"],
                 client_id=strings["client.id"], session_id=strings["client.session_id"],
                 name=strings["client.name"], tags=tags, labels=labels,
                 facts=clean_facts(client.get("facts")), version=strings["version"],
                 capabilities=[c for c in caps if isinstance(c, str)], plugins=plugins, raw=obj)


class AgentEndpoint:
    """Serves agent connections for one server."""

    def __init__(self, server: "RportServer") -> None:
        self.server = server
        cfg = server.config.server
        self.limits = Limits(max_frame=min(1 << 16, cfg.max_request_bytes_client - 1024))
        self.handshake_timeout = cfg.handshake_timeout
        self.handshakes = 0  # in progress, for metrics
        self.connections = 0  # that reached the hello, since start-up (rportd's gc policy)
        self._serving: set[asyncio.Task[None]] = set()

    def open(self, transport: WebSocketLink, pending: Pending) -> None:
        """A connection the acceptor has opened (TLS and WebSocket): served in a task."""
        task = asyncio.get_running_loop().create_task(
            self.serve(transport, pending.address, pending))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def wait_closed(self, timeout: float) -> None:
        """Until every connection served has ended (its session closed), at most ``timeout``
        seconds; those left are cancelled."""
        if self._serving:
            await asyncio.wait(list(self._serving), timeout=timeout)
        for task in list(self._serving):
            task.cancel()
        if self._serving:
            await asyncio.gather(*self._serving, return_exceptions=True)

    async def serve(self, transport: WebSocketLink, address: str,
                    pending: Pending | None = None) -> None:
        try:
            await self._serve(transport, address, pending)
        finally:
            if pending is not None:
                pending.done()
            await transport.close("server stopped")  # returns once the connection is gone

    async def _serve(self, transport: WebSocketLink, address: str,
                     pending: Pending | None) -> None:
        self.handshakes += 1
        self.connections += 1
        timeout = self.handshake_timeout
        if pending is not None:
            pending.reading_hello()
            timeout = pending.remaining()
        try:
            hello = await asyncio.wait_for(self._read_hello(transport), timeout)
            client = await self._admit(hello, address)
        except TimeoutError:
            log.warning("agent from %s: no hello within %gs, disconnecting", address,
                        self.handshake_timeout)
            self.server.bus.publish(AgentRefused(address, "timeout"))
            await transport.close("handshake timeout", violation=True)
            return
        except ProtocolViolation as exc:
            log.warning("agent from %s: protocol violation in handshake: %s, disconnecting", address, exc)
            self.server.bus.publish(AgentRefused(address, "protocol"))
            await transport.close(str(exc), violation=True)
            return
        except TransportClosed:
            self.server.bus.publish(AgentRefused(address, "closed"))
            return
        except Refusal as exc:
            log.log(exc.log_level, "agent from %s refused: %s", address, exc)
            self.server.bus.publish(AgentRefused(address, exc.kind))
            try:
                transport.write(encode_json(T.REFUSED, 0, {
                    "reason": str(exc), "retry_after": exc.retry_after}))
                await transport.close("refused", quick=True)
            except TransportClosed:
                pass
            return
        finally:
            self.handshakes -= 1
            if pending is not None:
                pending.done()
        await self._run(client, hello, transport, address)

    async def _read_hello(self, transport: WebSocketLink) -> Hello:
        ftype, _, payload = decode(await transport.recv())
        if ftype is not T.HELLO:
            raise ProtocolViolation(f"expected HELLO, got {ftype.name}")
        return parse_hello(decode_json_object(ftype, payload))

    async def _admit(self, hello: Hello, address: str) -> Client:
        server = self.server
        # RPort's rules: after a failure the auth id and the address wait client_login_wait;
        # after max_failed_login failures in a row the address is banned for ban_time. The id
        # is never banned: agents sharing it elsewhere keep connecting.
        id_key, address_key = f"agent-id:{hello.auth_id}", f"agent-address:{address}"
        if (wait := server.agent_throttle.blocked_for(address_key)) > 0:
            banned = server.agent_throttle.failures(address_key) >= server.agent_throttle.max_failures
            why = f"too many failed logins from {address}" if banned else \
                f"a login from {address} failed just now (server.client_login_wait)"
            raise Refusal(f"{why}; try again in {math.ceil(wait)}s", retry_after=wait,
                          kind="banned" if banned else "throttled")
        if (wait := server.agent_id_throttle.blocked_for(f"agent-violation:{address}")) > 0:
            raise Refusal(f"an agent from {address} broke the protocol just now; try again in "
                          f"{math.ceil(wait)}s", retry_after=wait, kind="throttled")
        if (wait := server.agent_id_throttle.blocked_for(id_key)) > 0:
            raise Refusal(f"a login with id {hello.auth_id!r} failed just now "
                          f"(server.client_login_wait); try again in {math.ceil(wait)}s",
                          retry_after=wait, kind="throttled")
        verdicts = await call_each(server.hook.rport_authenticate_agent, server=server,
                                   auth_id=hello.auth_id, password=hello.password, address=address)
        answers = [result for _, result in verdicts if result is not None]
        if not answers or False in answers:
            server.agent_throttle.failure(address_key)
            server.agent_id_throttle.failure(id_key)
            raise Refusal(f"authentication failed for id {hello.auth_id!r}",
                          retry_after=max(server.agent_throttle.blocked_for(address_key),
                                          server.agent_id_throttle.blocked_for(id_key)), kind="auth")
        server.agent_throttle.success(address_key)
        server.agent_id_throttle.success(id_key)
        client_id = hello.client_id or hello.auth_id
        existing = server.clients.get(client_id)
        if existing is not None and existing.connected and server.cluster is not None \
                and (not hello.session_id or hello.session_id != existing.session_id):
            await server.cluster.check_holder(existing)  # another node's: is it still there?
        if existing is not None and existing.connected:
            if not hello.session_id or hello.session_id != existing.session_id:
                raise Refusal(f"client is already connected: {existing.name} [{client_id}]",
                              retry_after=30, kind="duplicate")
            log.info("client %s reconnected (same session); closing its previous connection", client_id)
            assert existing.session is not None
            await existing.session.close("replaced by a new connection of the same agent")
        client = Client(
            id=client_id, name=hello.name, facts=hello.facts, tags=hello.tags, labels=hello.labels,
            version=hello.version, address=address, auth_id=hello.auth_id,
            session_id=hello.session_id or str(uuid.uuid4()), connected_at=time.time(),
            plugin_data=hello.plugins)
        for plugin, reason in await call_each(server.hook.rport_agent_accepting, server=server,
                                              client=client, hello=hello):
            if isinstance(reason, str):
                raise Refusal(f"{reason} (plugin {plugin})", kind="plugin")
        return client

    async def _run(self, client: Client, hello: Hello, transport: WebSocketLink,
                   address: str) -> None:
        server = self.server
        session = MuxSession(transport, server.handlers, initiator=False, limits=self.limits,
                             name=f"client {client.id}", peer_window=hello.window)
        session.context["client_id"] = client.id
        session.on_close = lambda _reason: self._mark_gone(client, session)
        client.session = session
        if (previous := server.clients.get(client.id)) is not None and previous.connected:
            await transport.close("client is already connected")  # lost a race with a twin
            return
        if previous is not None:  # what an administrator set stays with the client id
            client.allowed_user_groups = previous.allowed_user_groups
        server.clients.put(client)
        transport.admitted()  # before WELCOME: the agent may send its first requests at once
        try:
            transport.write(encode_json(T.WELCOME, 0, {
                "protocol": hello.protocol, "version": __version__, "client_id": client.id,
                "capabilities": server.handlers.capabilities,
                "max_message": server.config.server.max_request_bytes_client,
                "window": self.limits.window}))
        except TransportClosed:
            await self._gone(client, "closed during handshake")
            return
        if server.cluster is not None:
            await server.cluster.client_connected(client)  # this node holds it now
        await server.store.save_client(client.id, client.to_record(), None)
        log.info("client %s (%s) connected from %s with auth id %r, agent %s", client.id,
                 client.name or "no name", address, client.auth_id, client.version or "?")
        server.bus.publish(ClientConnected(client.id, session))
        reason = "server stopped"
        try:
            reason = await session.run()
        finally:
            if transport.violation:
                # An admitted agent that broke the protocol reconnects to do it again, each time
                # at the cost of a TLS handshake and a login: its address waits
                # client_login_wait first, as after a failed login (it is not banned for it).
                server.agent_id_throttle.failure(f"agent-violation:{address}")
            session.on_close = None  # (a cycle through the session: freed without the gc)
            await asyncio.shield(self._gone(client, reason))

    def _mark_gone(self, client: Client, session: MuxSession) -> None:
        if client.session is session:
            client.session = None
            client.disconnected_at = time.time()

    async def _gone(self, client: Client, reason: str) -> None:
        server = self.server
        if server.clients.get(client.id) is not client:
            return  # replaced by a reconnection of the same agent
        if client.disconnected_at is None:
            client.session = None
            client.disconnected_at = time.time()
        log.info("client %s disconnected: %s", client.id, reason)
        # In a cluster another node may have taken the agent over by now: then its record is
        # that node's to write.
        ours = server.cluster is None or await server.cluster.client_disconnected(client, reason)
        if not ours:
            pass
        elif server.config.server.keep_disconnected_clients <= 0:
            await server.remove_client(client.id, "disconnected (keep_disconnected_clients = 0)")
        else:
            await server.store.save_client(client.id, client.to_record(), client.disconnected_at)
        server.bus.publish(ClientDisconnected(client.id, reason))
