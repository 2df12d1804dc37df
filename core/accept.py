"""Accepting agent connections: one deadline and bounded resources until the agent is known.

Before an agent has authenticated, it costs us a socket, and soon TLS state: an attacker who
opens connections and then says nothing, or says it slowly, must not be able to keep real agents
out or exhaust the server. So every connection accepted on the agent endpoint is *pending*
until its hello has been answered, and while pending:

- **One deadline** (``handshake_timeout``) covers the whole phase, from the TCP accept through
  TLS, the WebSocket upgrade and the hello. A connection that has not got that far by then is
  closed, whatever stage it is stuck in.
- **Caps**: at most ``max_pending`` pending connections in all, at most ``per_address`` from one
  source address (IPv6 addresses count per /64). A new connection over the per-address cap
  evicts that address's oldest connection that has not sent a byte yet, or is refused if there
  is none (those further on are making progress). At the total cap, the oldest pending
  connection of the address with the most is closed for the next one, or else the oldest that
  has sent nothing; when each address has one and each is on its way (a fleet reconnecting
  after a restart), the next connections wait in the kernel's accept queue (its backlog is the
  system's maximum, ``net.core.somaxconn``) until one is done, rather than push out one that
  has done half its work. One log line per burst says so.
- **TLS handshakes start in small slices**: when a thousand agents come back at once (a server
  restart), the event loop would otherwise run hundreds of handshakes in one iteration and the
  API, on the same loop, would stall. A connection takes one of ``tls_slots`` only once it has
  sent its first byte (an idle one holds nothing), and gives it back when its handshake is done
  or after ``TLS_SLOT_HOLD`` seconds, by which time the expensive part (answering the
  ClientHello) is over: a peer that stalls mid-handshake holds its slot only briefly.
- **Bytes**: the WebSocket opening request may be at most ``max_request_bytes`` (the agent's is
  a few hundred bytes); the hello and everything after it are bounded by the link
  (:mod:`.protocol.websocket`).

The opening request is checked and answered by :mod:`.protocol.opening`, and the connection
goes to a :class:`~.protocol.websocket.WebSocketLink` before the 101 is written. The acceptor
hands link and :class:`Pending` to the agent endpoint, which reads the hello within what is
left of the deadline and says when the connection is no longer pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from typing import Any, Callable

from .logs import BurstLog
from .protocol.opening import OpeningError, answer
from .protocol.websocket import SUBPROTOCOL, LinkSettings, WebSocketLink

log = logging.getLogger("rport.server")

TLS_SLOT_HOLD = 0.5
"""Seconds a TLS handshake keeps its slot at most (the costly part is done by then)."""

IDLE, TLS, UPGRADE, HELLO, CLOSED = "idle", "tls", "upgrade", "hello", "closed"
_STALLED = {
    IDLE: "sent nothing",
    TLS: "did not finish the TLS handshake",
    UPGRADE: "did not finish the WebSocket upgrade",
    HELLO: "sent no hello",
    CLOSED: "was closed",
}


def source_key(address: str) -> str:
    """What the per-address cap counts: the IPv4 address, or the /64 of an IPv6 address (one
    host usually has a whole /64). An IPv4-mapped IPv6 address counts as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class Pending:
    """One connection on the agent endpoint that has not been admitted yet."""

    __slots__ = ("address", "key", "deadline", "stage", "task", "transport", "received",
                 "conn", "_timer", "_acceptor")

    def __init__(self, acceptor: "BoundedAcceptor", address: str, deadline: float) -> None:
        self._acceptor = acceptor
        self.address = address
        self.key = source_key(address)
        self.deadline = deadline
        self.stage = IDLE
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.received = 0
        self.conn: socket.socket | None = None  # until its task starts
        self._timer: asyncio.TimerHandle | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def reading_hello(self) -> None:
        """The agent endpoint has the connection: from now on it enforces the deadline itself
        (it answers a late hello with a close frame and a reason)."""
        if self.stage != CLOSED:
            self.stage = HELLO

    def done(self) -> None:
        """The connection is no longer pending (admitted, refused or gone)."""
        self._acceptor._forget(self)

    def _abort(self) -> None:
        stage, self.stage = self.stage, CLOSED  # (a handshake finishing right now sees it)
        if self.conn is not None:  # its task has not started (accepted in a burst): no
            self.conn.close()      # reader is on the socket, and the task will not close it
            self.conn = None
        if self.task is not None and not self.task.done() and stage in (IDLE, TLS):
            self.task.cancel()  # (closes the socket at TLS)
        elif self.transport is not None:
            self.transport.abort()


class BoundedAcceptor:
    """Accepts agent connections on ``sock`` within the caps and the deadline, does TLS with
    ``context`` and the WebSocket opening (:mod:`.protocol.opening`), and hands each opened
    connection to ``on_open(link, pending)``, a :class:`WebSocketLink` with ``settings``."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext,
                 on_open: Callable[[WebSocketLink, Pending], None], settings: LinkSettings, *,
                 handshake_timeout: float, max_pending: int = 1024, per_address: int = 64,
                 tls_slots: int = 64, max_request_bytes: int = 16384) -> None:
        self.sock, self.context = sock, context
        self.on_open = on_open
        self.settings = settings
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self.per_address = per_address
        self.max_request_bytes = max_request_bytes
        self._slots = asyncio.Semaphore(tls_slots)
        self._by_key: dict[str, dict[Pending, None]] = {}  # insertion order: oldest first
        self._count = 0
        self._shared = 0  # addresses with more than one pending connection
        self._idle: dict[Pending, None] = {}  # those that sent nothing yet, oldest first
        self._room = asyncio.Event()  # set when the count falls below max_pending
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._evicted = BurstLog(log, logging.WARNING)
        self._expired = BurstLog(log, logging.INFO)
        self._refused = BurstLog(log, logging.INFO)
        self._accept_failed = BurstLog(log, logging.ERROR)
        self._full = BurstLog(log, logging.INFO)

    @property
    def pending(self) -> int:
        """Connections accepted and not yet admitted."""
        return self._count

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept_loop(), name="accept")

    def is_serving(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        accepted = 0
        while True:
            if self._count >= self.max_pending:
                await _wait_readable(self.sock.fileno())  # room is made for one that waits
            if self._count >= self.max_pending and not self._make_room():
                # Every pending connection is on its way and from an address of its own (a
                # fleet coming back at once): the next ones wait in the kernel's queue, rather
                # than push out a connection that has done half its work.
                self._full.note("pending agent connections: limit of %d reached "
                                "(server.max_pending_connections), the next ones wait",
                                self.max_pending)
                self._room.clear()
                await self._room.wait()
                continue
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                await _wait_readable(self.sock.fileno())  # (a reader only between bursts)
                continue
            except OSError as exc:  # e.g. out of file descriptors: back off, keep serving
                self._accept_failed.note("accepting an agent connection failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            accepted += 1
            if accepted % 64 == 0:
                await asyncio.sleep(0)  # a burst of accepts must not hold the loop
            address = peer[0] if isinstance(peer, tuple) else str(peer)
            entry = Pending(self, address, loop.time() + self.handshake_timeout)
            entry.conn = conn
            if not self._register(entry):
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            entry._timer = loop.call_at(entry.deadline, self._expire, entry)
            entry.task = task = loop.create_task(self._handshake(entry, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- the caps ---------------------------------------------------------------------------------

    def _register(self, entry: Pending) -> bool:
        peers = self._by_key.get(entry.key)
        if peers is not None and len(peers) >= self.per_address:
            victim = next((p for p in peers if p.stage == IDLE), None)
            if victim is None:
                self._evicted.note("agent connections from %s: more than %d in handshake, "
                                   "refusing new ones", entry.key, self.per_address)
                return False
            self._evict(victim, "agent connections from %s: more than %d in handshake, closing "
                        "the oldest that sent nothing", entry.key, self.per_address)
            peers = self._by_key.get(entry.key)
        if peers is None:
            peers = self._by_key[entry.key] = {}
        elif len(peers) == 1:
            self._shared += 1
        peers[entry] = None
        self._idle[entry] = None
        self._count += 1
        return True

    def _make_room(self) -> bool:
        """At ``max_pending``: close one pending connection for the next, the oldest of the
        address that has the most, or else the oldest that has sent nothing. False if there is
        none to close (each address has one, and each is on its way)."""
        if self._shared:
            crowded = max(self._by_key.values(), key=len)
            victim = next(iter(crowded))
            self._evict(victim, "pending agent connections: limit of %d reached "
                        "(server.max_pending_connections), closing the oldest of %s, which "
                        "has the most", self.max_pending, victim.key)
            return True
        victim = next(iter(self._idle), None)
        if victim is None:
            return False
        self._evict(victim, "pending agent connections: limit of %d reached "
                    "(server.max_pending_connections), closing the oldest that sent nothing "
                    "(from %s)", self.max_pending, victim.key)
        return True

    def _forget(self, entry: Pending) -> None:
        if entry._timer is not None:
            entry._timer.cancel()
            entry._timer = None
        self._idle.pop(entry, None)
        peers = self._by_key.get(entry.key)
        if peers is not None and entry in peers:
            del peers[entry]
            self._count -= 1
            if not peers:
                del self._by_key[entry.key]
            elif len(peers) == 1:
                self._shared -= 1
            if self._count < self.max_pending:
                self._room.set()

    def _evict(self, entry: Pending, message: str, *args: Any) -> None:
        self._evicted.note(message, *args)
        self._forget(entry)
        entry._abort()

    def _expire(self, entry: Pending) -> None:
        entry._timer = None
        if entry.stage == HELLO:
            return  # the agent endpoint answers a late hello itself
        self._expired.note("agent connection from %s %s within %gs (server.handshake_timeout), "
                           "closing", entry.address, _STALLED[entry.stage], self.handshake_timeout)
        self._forget(entry)
        entry._abort()

    # -- one connection ---------------------------------------------------------------------------

    async def _handshake(self, entry: Pending, conn: socket.socket) -> None:
        entry.conn = None  # this task closes it from now on (never while a reader is on it)
        loop = asyncio.get_running_loop()
        try:
            await _readable(conn)  # an idle connection holds no TLS slot
            entry.stage = TLS
            self._idle.pop(entry, None)
            await self._slots.acquire()
            held = True

            def release() -> None:
                nonlocal held
                if held:
                    held = False
                    self._slots.release()
            timer = loop.call_later(TLS_SLOT_HOLD, release)
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: _Opening(self, entry), conn, ssl=self.context,
                    ssl_handshake_timeout=max(0.1, entry.remaining()))
            finally:
                timer.cancel()
                release()
            if entry.stage == TLS:
                entry.stage = UPGRADE
                entry.transport = transport
            else:  # evicted or expired as its handshake finished
                transport.abort()
        except asyncio.CancelledError:
            conn.close()
            raise
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("TLS handshake with an agent from %s failed: %s", entry.address, exc)
            conn.close()
            self._forget(entry)
        finally:
            entry.task = None  # (no cycle through the finished task)

    def _opened(self, opening: "_Opening", head: bytes, rest: bytes) -> None:
        """The opening request ``head`` of ``opening``'s connection: answered, and the
        connection handed to a link (``rest``, what followed the request, is its first data)."""
        entry, transport = opening.entry, opening.transport
        if entry.stage not in (TLS, UPGRADE):
            return  # evicted or expired meanwhile: its transport is aborted
        try:
            response = answer(head, SUBPROTOCOL)
        except OpeningError as exc:
            self._refused.note("agent connection from %s: WebSocket opening refused (HTTP %d): "
                               "%s", entry.address, exc.status, exc)
            self._forget(entry)
            entry.stage = CLOSED
            transport.write(exc.response)
            transport.close()
            return
        # The link takes the connection over before the 101 leaves: the agent's first frame
        # (its hello) can only reach the link.
        link = WebSocketLink(_Opened(transport), self.settings, client=False)
        transport.set_protocol(link)
        link.start()
        transport.write(response)
        entry.transport = transport
        self.on_open(link, entry)
        if rest:
            link.data_received(rest)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        for peers in list(self._by_key.values()):
            for entry in list(peers):
                self._forget(entry)
                entry._abort()


class _Opening(asyncio.Protocol):
    """A connection from its TLS handshake to the end of its opening request (at most
    ``max_request_bytes``); then :meth:`BoundedAcceptor._opened`."""

    __slots__ = ("acceptor", "entry", "transport", "buf")

    def __init__(self, acceptor: BoundedAcceptor, entry: Pending) -> None:
        self.acceptor, self.entry = acceptor, entry
        self.transport: Any = None
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        entry, acceptor = self.entry, self.acceptor
        if entry.stage == CLOSED:
            return
        entry.received += len(data)
        if entry.received > acceptor.max_request_bytes:
            acceptor._evict(entry, "agent connection from %s: WebSocket opening request larger "
                            "than %d bytes, closing", entry.address, acceptor.max_request_bytes)
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end >= 0:
            head, rest, self.buf = self.buf[:end], self.buf[end + 4:], b""
            acceptor._opened(self, head, rest)

    def eof_received(self) -> bool:
        return False  # the transport closes itself: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.acceptor._forget(self.entry)


class _Opened:
    """What :class:`WebSocketLink` needs of the opened connection."""

    __slots__ = ("transport",)

    def __init__(self, transport: Any) -> None:
        self.transport = transport


async def _readable(sock: socket.socket) -> None:
    """Until ``sock`` has something to read (or its peer closed it)."""
    try:
        # Most agents have sent their ClientHello by the time they are accepted: no reader
        # to add and remove for them (a poll handle each, in uvloop). (The accepted socket is
        # non-blocking: data, or b"" at the peer's end, or BlockingIOError.)
        sock.recv(1, socket.MSG_PEEK)
        return
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        return  # reset: the handshake finds out
    await _wait_readable(sock.fileno())


async def _wait_readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)
    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
