"""One server-side tunnel: a TCP listener whose connections become streams to the agent."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, Callable

import attrs

from rport.core.plugin import Session, SessionClosed, SocketPipe, StreamRefused

from .remote import join_host_port
from .traffic import Traffic

log = logging.getLogger("rport.plugins.tunnels")


@attrs.define(eq=False)
class Tunnel:
    id: str
    client_id: str
    lhost: str
    lport: int
    rhost: str
    rport: int
    lport_random: bool = False
    name: str = ""
    protocol: str = "tcp"
    scheme: str | None = None
    acl: str | None = None
    idle_timeout_minutes: int = 5
    auto_close: float = 0.0  # seconds; 0 = none
    http_proxy: bool = False
    host_header: str = ""
    auth_user: str = ""
    auth_password: str = ""
    owner: str = ""
    created_at: float = attrs.field(factory=time.time)
    tunnel_url: str = ""
    tunnel_host: str = ""
    """In a cluster: the host of the node whose listener this is (``[server] tunnel_host``)."""
    # runtime
    raw_port: int = 0
    """With http_proxy: the raw tunnel's port on 127.0.0.1 (lhost/lport are the proxy's)."""
    proxy: Any = attrs.field(default=None, repr=False)
    """With http_proxy: the running proxy (plugin proxy), an object with ``async close()``."""
    acl_check: Any = attrs.field(default=None, repr=False)
    session: Any = attrs.field(default=None, repr=False)
    """The agent's session when the tunnel started (a reconnection replaces older tunnels)."""
    connections: int = 0
    traffic: Traffic = attrs.field(factory=Traffic, repr=False)
    """Where ended connections are counted (the service's, shared by its tunnels)."""
    last_active: float = attrs.field(factory=time.monotonic)
    _server: asyncio.AbstractServer | None = attrs.field(default=None, repr=False)
    _session_of: Callable[[], Session | None] | None = attrs.field(default=None, repr=False)
    _pipes: set[SocketPipe] = attrs.field(factory=set, repr=False)
    _streams: set[Any] = attrs.field(factory=set, repr=False)  # the proxy's, open_stream()
    _tasks: set[asyncio.Task[Any]] = attrs.field(factory=set, repr=False)
    closed: bool = False

    @property
    def remote(self) -> str:
        return join_host_port(self.rhost, self.rport)

    def spec(self) -> dict[str, Any]:
        """What identifies the tunnel and survives restarts (no runtime state but, in a
        cluster, where it listens, for the other nodes' listings)."""
        spec = {k: getattr(self, k) for k in (
            "id", "client_id", "lhost", "lport", "rhost", "rport", "lport_random", "name",
            "protocol", "scheme", "acl", "idle_timeout_minutes", "auto_close", "http_proxy",
            "host_header", "auth_user", "auth_password", "owner", "created_at")}
        if self.tunnel_host:
            spec.update(tunnel_host=self.tunnel_host, tunnel_url=self.tunnel_url)
        return spec

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "protocol": self.protocol, "lhost": self.lhost,
            "lport": str(self.lport), "lport_random": self.lport_random, "owner": self.owner,
            "rhost": self.rhost, "rport": str(self.rport), "scheme": self.scheme, "acl": self.acl,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "auto_close": int(self.auto_close * 1e9), "http_proxy": self.http_proxy,
            "host_header": self.host_header, "auth_user": self.auth_user,
            "auth_password": self.auth_password, "tunnel_url": self.tunnel_url,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
            **({"tunnel_host": self.tunnel_host} if self.tunnel_host else {}),
        }

    def touch(self) -> None:
        self.last_active = time.monotonic()

    async def start(self, session_of: Callable[[], Session | None]) -> None:
        """Listen on lhost:lport; raises OSError if the port cannot be bound."""
        self._session_of = session_of
        def on_connect(pipe: SocketPipe) -> None:
            self._admit(pipe, session_of)

        def factory() -> SocketPipe:
            return SocketPipe(on_connect=on_connect, on_activity=self.touch)

        host, port = ("127.0.0.1", self.raw_port) if self.http_proxy else (self.lhost, self.lport)
        loop = asyncio.get_running_loop()
        if host == "::":  # every address, IPv4 too, as Go listens on [::] (asyncio would not)
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(512)
            except OSError:
                sock.close()
                raise
            self._server = await loop.create_server(factory, sock=sock)
            return
        self._server = await loop.create_server(factory, host, port, reuse_address=True,
                                                backlog=512)

    def _admit(self, pipe: SocketPipe, session_of: Callable[[], Session | None]) -> None:
        """A new connection (in the transport's callback): refused by the ACL, or piped to a new
        stream. The stream is opened optimistically: what the client sends follows the request
        to open at once, instead of waiting a round trip to the agent."""
        source = str((pipe.peername or ("?", 0))[0])
        if self.http_proxy:
            # Behind the proxy the raw tunnel serves only this host; the user's ACL is the proxy's.
            allowed = source in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
        else:
            allowed = self.acl_check is None or self.acl_check.allows(source)
        if not allowed:
            log.info("tunnel %s of %s: connection from %s refused by the ACL", self.id,
                     self.client_id, source)
            self.traffic.refused += 1
            pipe.abort("refused by the ACL")
            return
        session = session_of()
        if session is None or self.closed:
            pipe.abort("agent not connected")
            return
        self.connections += 1
        self.traffic.connections += 1
        self._pipes.add(pipe)
        self.touch()
        pipe.add_done_callback(lambda reason: self._ended(pipe, source, reason))
        try:
            stream = session.open_stream_nowait("tunnel", {"remote": self.remote})
        except (StreamRefused, SessionClosed) as exc:
            pipe.abort(str(exc))
            return
        if stream is not None:
            pipe.attach(stream)
        else:  # an agent that did not announce its window: wait for it to accept
            task = asyncio.get_running_loop().create_task(self._open(pipe, session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def open_stream(self) -> Any:
        """A stream to the remote, as a connection to the listener would get, for the proxy
        plugin (whose requests then skip the loopback connection to the raw listener). Counted
        in ``connections`` until :meth:`stream_ended`. None if the agent needs its open
        answered first (the caller connects to the listener then); raises SessionClosed or
        StreamRefused."""
        session = self._session_of() if self._session_of is not None else None
        if session is None or self.closed:
            raise SessionClosed("agent not connected")
        stream = session.open_stream_nowait("tunnel", {"remote": self.remote})
        if stream is not None:
            self.connections += 1
            self.traffic.connections += 1
            self._streams.add(stream)
            self.touch()
        return stream

    def stream_ended(self, stream: Any) -> None:
        """The end of a stream from :meth:`open_stream` (its user logs a failure)."""
        self.connections -= 1
        self._streams.discard(stream)
        self.traffic.ended(stream)
        self.touch()

    async def _open(self, pipe: SocketPipe, session: Session) -> None:
        try:
            stream = await session.open_stream("tunnel", {"remote": self.remote})
        except (StreamRefused, SessionClosed, TimeoutError) as exc:
            log.warning("tunnel %s of %s: connection to %s failed: %s", self.id, self.client_id,
                        self.remote, exc)
            pipe.abort(str(exc))
        except BaseException:
            pipe.abort("tunnel closed")
            raise
        else:
            pipe.attach(stream)

    def live_bytes(self) -> tuple[int, int]:
        """Bytes sent and received so far by the connections still open."""
        streams = [p.stream for p in self._pipes if p.stream is not None] + list(self._streams)
        return (sum(s.bytes_sent for s in streams), sum(s.bytes_received for s in streams))

    def _ended(self, pipe: SocketPipe, source: str, reason: str) -> None:
        self._pipes.discard(pipe)
        self.traffic.ended(pipe.stream)
        self.connections -= 1
        self.touch()
        if pipe.stream is not None and pipe.stream.refused:
            log.warning("tunnel %s of %s: connection from %s to %s failed: %s", self.id,
                        self.client_id, source, self.remote, reason)
        elif reason:
            log.info("tunnel %s of %s: connection from %s to %s ended: %s", self.id,
                     self.client_id, source, self.remote, reason)

    async def close(self) -> None:
        """Stop listening at once (the port is free when this returns) and abort connections."""
        self.closed = True
        if self.proxy is not None:
            await self.proxy.close()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for pipe in list(self._pipes):
            pipe.abort("tunnel closed")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
