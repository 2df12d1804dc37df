"""The WebSocket link to an agent: RFC 6455 binary messages inside TLS.

The opening handshake (HTTP Upgrade, subprotocol) is the agent's :mod:`rport.agent.dial` on one
side and rportd's :mod:`.opening` on the other; then the connection is moved to
:class:`WebSocketLink`, our own framing on the same transport (:func:`take_over`). The link is
an ``asyncio.Protocol``: each message received is handed to the session *synchronously*, from
the transport's callback, and a message is sent by one ``transport.write``. A tunnelled byte therefore crosses each process without a task switch,
a queue or a lock (websockets' per-message machinery cost a third of a round trip through a
tunnel; see docs/performance.md).

What the link keeps of WebSocket: binary messages (fragmented ones are reassembled), masking of
the agent's frames, ping/pong keepalive, and the closing handshake with its codes, so that a
TLS-terminating reverse proxy in front of rportd still sees a well-formed WebSocket.

Every buffer is bounded and a peer that breaks a bound is disconnected with the reason: a
message (and its fragments, in number too), what is queued before the session starts, and what
we have written that the peer does not read. Until the server has admitted the agent, tighter
bounds apply (``hello_max_message``, ``hello_max_unsent``). The work done for one connection in
one event-loop iteration is bounded too: at most ``MAX_FRAMES_PER_READ`` frames are handled per
call, the rest after the loop has served others, and a burst of pings gets one pong.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib.util
import logging
import random
import struct
import sys
from importlib.machinery import ExtensionFileLoader, PathFinder
from typing import Any, Callable

import enum

from ..session import ProtocolViolation


def _load_apply_mask() -> Callable[[Any, Any], bytes]:
    """websockets' masking function, in C (200 times the speed of Python's on 64 KiB).

    Imported as ``websockets.speedups`` it first runs the package's ``__init__``, whose version
    module imports ``importlib.metadata``, with ``email``, ``zipfile`` and more: memory that an
    agent would hold for as long as it runs (docs/performance.md, "Agent memory"). Where the
    package is not loaded yet, the extension is loaded from its file alone (it imports nothing
    of its package); anything unexpected falls back to the plain import."""
    if "websockets" not in sys.modules:
        try:
            package = importlib.util.find_spec("websockets")  # finds it; runs nothing
            locations = list(package.submodule_search_locations or ()) if package else []
            spec = PathFinder.find_spec("websockets.speedups", locations) if locations else None
            if spec is not None and isinstance(spec.loader, ExtensionFileLoader):
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module.apply_mask  # type: ignore[no-any-return]
        except (ImportError, OSError, AttributeError, ValueError):
            pass
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # pragma: no cover - the pure Python fallback of websockets
        from websockets.utils import apply_mask
    return apply_mask


apply_mask = _load_apply_mask()

log = logging.getLogger("rport.link")


class CloseCode(enum.IntEnum):
    """RFC 6455 §7.4 close codes, named as in ``websockets.frames`` (whose module the agent
    does not need to load for them: it pulls in websockets' HTTP and extension modules)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015

SUBPROTOCOL = "rport-py"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HDR16 = struct.Struct("!BBH")
_HDR64 = struct.Struct("!BBQ")
_CLOSE = struct.Struct("!H")
_FIN_BINARY = 0x80 | OP_BINARY
FAIL_CLOSE_TIMEOUT = 0.5
"""A link failed because of its peer waits at most this long for its close frame to leave before
the connection is aborted (a peer that keeps sending could otherwise keep its TLS state alive
for close_timeout, and one reconnecting in a loop would pile such connections up)."""
MAX_FRAMES_PER_READ = 256
"""Frames handled in one call before the link yields to the event loop (a peer sending tiny
frames must not hold the loop for seconds)."""


class TransportClosed(Exception):
    """The link is gone; ``str()`` says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class LinkSettings:
    """Explicit limits of one link, identical on both ends (see docs/operations.md)."""

    max_message: int  # largest message accepted (control JSON and DATA frames)
    ping_interval: float | None  # keepalive: a ping this often...
    ping_timeout: float | None  # ...and the peer is dead without a pong within this
    write_limit: int = 1 << 20  # send buffer above which writers wait (transport high-water)
    max_queue: int = 16  # messages held before a receiver is set (handshake) before reading pauses
    close_timeout: float = 2.0  # a dead peer is not waited for long when closing
    max_unsent: int = 4 << 20
    """A peer that lets this much of our output pile up while it keeps sending (pings, requests
    that are answered at once) is not reading: it is disconnected rather than buffered for."""
    max_fragments: int = 1024  # fragments of one message (each costs memory, even an empty one)
    hello_max_message: int = 0
    """Until :meth:`WebSocketLink.admitted` (the server, before it knows the agent): largest
    message, in place of ``max_message``; 0 means no separate handshake limits."""
    hello_max_unsent: int = 64 << 10  # ... and ``max_unsent``

    def connection_options(self) -> dict[str, Any]:
        """Options for websockets' ``serve``/``connect``, which only do the opening handshake:
        its keepalive is off (the link pings), and the handshake's messages are the link's."""
        return {
            "max_size": self.max_message,
            "ping_interval": None,
            "ping_timeout": None,
            "write_limit": self.write_limit,
            "close_timeout": self.close_timeout,
            "compression": None,  # no per-message compression: data is often compressed already
        }


def take_over(ws: Any, settings: LinkSettings, *, client: bool) -> "WebSocketLink":
    """Move websockets' connection ``ws`` (opening handshake done, or about to be answered) to
    a :class:`WebSocketLink` on the same transport. No message may have been exchanged on it:
    the agent takes over as soon as ``connect()`` returns (the server says nothing before the
    agent's hello), the server in ``process_response``, before its 101 is even sent."""
    link = WebSocketLink(ws, settings, client=client)
    ws.transport.set_protocol(link)
    link.start()
    return link


def server_process_response(settings: LinkSettings) -> Callable[[Any, Any, Any], None]:
    """A ``process_response`` for websockets' ``serve``: every accepted connection is taken over
    before the agent can send its first frame; the handler finds it as ``ws.rport_link``."""
    def process_response(connection: Any, request: Any, response: Any) -> None:
        if response.status_code == 101:
            connection.rport_link = take_over(connection, settings, client=False)
    return process_response


class WebSocketLink(asyncio.Protocol):
    """One end of the link. ``client`` is the agent's end (it masks what it sends)."""

    def __init__(self, ws: Any, settings: LinkSettings, *, client: bool) -> None:
        # websockets' connection (in tests): told when the transport is gone, for its books
        self._on_lost: Callable[[Exception | None], None] | None = getattr(
            ws, "connection_lost", None)
        self._transport: Any = ws.transport
        self._loop = asyncio.get_running_loop()
        self._settings = settings
        self._client = client
        self._handshake = bool(settings.hello_max_message) and not client
        self._max = settings.hello_max_message if self._handshake else settings.max_message
        self._max_unsent = settings.hello_max_unsent if self._handshake else settings.max_unsent
        self._buf = bytearray()  # an incomplete frame, or frames left for the next iteration
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._receiver: Callable[[Any], None] | None = None
        self._queue: collections.deque[bytes] = collections.deque()  # until a receiver is set
        self._queued = 0  # bytes in _queue
        self._queue_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False  # for the queue: it is full until the receiver takes it
        self._deferred = False  # frames are left in _buf for the next iteration: reading paused
        self._pong: Any = None  # payload of the last ping of this read, answered after it
        self.paused = False  # the transport's buffer is above write_limit: writers wait
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.on_writable: Callable[[], None] | None = None  # called when ``paused`` clears
        self.on_closing: Callable[[], None] | None = None  # called once the link starts to end
        self._close_sent = False
        self._close_rcvd: tuple[int, str] | None = None
        self._reason = ""  # why the link ended (or is ending)
        self.violation = False  # it ended because the peer broke the protocol
        self._failing = False  # ended by _fail: abort soon
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._gone = False  # the transport is lost (= self._lost.done(), cheaper)
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._rng = random.Random() if client else None  # masks (the agent's frames only)

    # -- setup ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._transport.set_write_buffer_limits(high=self._write_high())
        self._schedule_ping()

    def _write_high(self) -> int:
        return min(self._settings.write_limit, self._max_unsent // 4)

    def admitted(self) -> None:
        """The peer is known now (the server admitted the agent): the handshake's tighter
        limits give way to the session's."""
        if self._handshake:
            self._handshake = False
            self._max = self._settings.max_message
            self._max_unsent = self._settings.max_unsent
            if not self._gone:
                self._transport.set_write_buffer_limits(high=self._write_high())

    def set_receiver(self, receiver: Callable[[Any], None]) -> None:
        """From now on every message is passed to ``receiver`` (bytes or a memoryview of bytes)
        as it arrives; messages queued meanwhile first. ``receiver`` may raise
        :class:`ProtocolViolation`, which fails the link."""
        self._receiver = receiver
        while self._queue and not self._close_sent:
            self._deliver(self._queue.popleft())
        self._queued = 0
        if self._gone:
            self._receiver = None  # (see connection_lost)
        elif self._reading_paused:
            self._reading_paused = False
            self._resume_reading()

    @property
    def reason(self) -> str:
        return self._reason

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    # -- receiving ------------------------------------------------------------------------------

    async def recv(self) -> bytes:
        """The next message, before a receiver is set (the handshake). Raises
        :class:`TransportClosed` or :class:`ProtocolViolation`."""
        while not self._queue:
            if self._lost.done() or self._close_sent or self._close_rcvd:
                if self.violation:
                    raise ProtocolViolation(self._reason)
                raise TransportClosed(self._reason or "connection closed")
            self._queue_waiter = self._loop.create_future()
            try:
                await self._queue_waiter
            finally:
                self._queue_waiter = None
        message = self._queue.popleft()
        self._queued -= len(message)
        if (self._reading_paused and len(self._queue) < self._settings.max_queue // 2
                and self._queued < self._max // 2):
            self._reading_paused = False
            self._resume_reading()
        return message

    def _resume_reading(self) -> None:
        if not (self._reading_paused or self._deferred or self._gone):
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        # Fast path: exactly one whole binary message (what an interactive exchange sends).
        if (not self._buf and not self._fragments and self._receiver is not None
                and not self._close_sent and not self._deferred):
            size = len(data)
            if size > 2 and data[0] == _FIN_BINARY:
                b1 = data[1]
                length, head = b1 & 0x7F, 2
                if length == 126:
                    length, head = (data[2] << 8) | data[3], 4
                if length < 127 or head == 4:
                    if self._client:
                        if not b1 & 0x80 and size == head + length and length <= self._max:
                            self._receiver(data[head:] if length < 4096 else memoryview(data)[head:])
                            return
                    elif b1 & 0x80 and size == head + 4 + length and length <= self._max:
                        self._receiver(apply_mask(data[head + 4:], data[head:head + 4]))
                        return
        if self._failing:
            return  # the link failed: what the peer still sends is dropped, not buffered
        if self._buf:
            self._buf += data
            data = self._buf
        if not self._deferred:
            self._process(data)

    def _process(self, data: Any) -> None:
        try:
            end, more = self._parse(data)
        except ProtocolViolation as exc:
            self._fail(CloseCode.PROTOCOL_ERROR, str(exc))
            return
        except _TooBig as exc:
            self._fail(CloseCode.MESSAGE_TOO_BIG, str(exc), reason="message larger than the "
                       f"agreed maximum ({exc})")
            return
        if self._failing:
            return  # failed by the receiver meanwhile: the rest is dropped
        if data is self._buf:
            del self._buf[:end]
        elif end < len(data):
            self._buf = bytearray(memoryview(data)[end:])
        if self._pong is not None:
            payload, self._pong = self._pong, None
            if not self._close_sent and not self._gone and not (self.paused and self._unread()):
                self._write_frame(0x80 | OP_PONG, payload)
        if more and not self._deferred and not self._gone and not self._close_sent:
            # More whole frames than one call may handle: the rest after the loop has run
            # others; reading waits until they are done, so the buffer does not grow meanwhile.
            self._deferred = True
            self._transport.pause_reading()
            self._loop.call_soon(self._continue)

    def _continue(self) -> None:
        self._deferred = False
        if self._gone or self._close_sent:
            return
        if self._buf:
            self._process(self._buf)
        if not self._deferred:
            self._resume_reading()

    def _parse(self, data: Any) -> tuple[int, bool]:
        """Handle the complete frames in ``data``, at most ``MAX_FRAMES_PER_READ``; returns where
        the rest starts, and whether the rest holds another complete frame (a frame header, at
        least) left for later.

        Large payloads of an immutable ``bytes`` chunk are passed on as memoryviews of it (no
        copy); those of our reassembly buffer are copied out, as it is reused."""
        pos, size, view = 0, len(data), memoryview(data)
        immutable = type(data) is bytes
        budget = MAX_FRAMES_PER_READ
        try:
            while (size - pos >= 2 and self._close_rcvd is None and not self._gone
                   and not self._failing):
                if budget == 0:
                    return pos, True
                budget -= 1
                b0, b1 = data[pos], data[pos + 1]
                length, head = b1 & 0x7F, pos + 2
                if length == 126:
                    if size - pos < 4:
                        break
                    length, head = _U16.unpack_from(data, head)[0], head + 2
                elif length == 127:
                    if size - pos < 10:
                        break
                    length, head = _U64.unpack_from(data, head)[0], head + 8
                if b0 & 0x70:
                    raise ProtocolViolation("reserved bits set in a WebSocket frame")
                opcode = b0 & 0x0F
                if opcode >= 0x8:
                    if length > 125 or not b0 & 0x80:
                        raise ProtocolViolation("invalid WebSocket control frame")
                elif self._fragments_size + length > self._max:
                    raise _TooBig(f"{self._fragments_size + length} > {self._max} bytes")
                masked = b1 & 0x80
                if masked:
                    if self._client:
                        raise ProtocolViolation("masked frame from the server")
                    head += 4
                elif not self._client:
                    raise ProtocolViolation("unmasked frame from the agent")
                end = head + length
                if end > size:
                    break
                if masked:
                    payload: Any = apply_mask(view[head:end], view[head - 4:head])
                elif immutable and length >= 4096:
                    payload = view[head:end]
                else:
                    payload = bytes(view[head:end])
                pos = end
                if opcode == OP_BINARY and b0 & 0x80 and not self._fragments:
                    self._deliver(payload)
                else:
                    self._frame(b0 & 0x80, opcode, payload)
        finally:
            if not immutable:
                view.release()  # the buffer is resized next
        return pos, False

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY or opcode == OP_CONT:
            if (opcode == OP_BINARY) == bool(self._fragments):
                raise ProtocolViolation("WebSocket fragments out of order")
            if len(self._fragments) >= self._settings.max_fragments:
                raise ProtocolViolation(f"message in more than {self._settings.max_fragments} "
                                        "fragments")
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            if fin:
                message = b"".join(self._fragments)
                self._fragments, self._fragments_size = [], 0
                self._deliver(message)
        elif opcode == OP_PING:
            self._pong = payload  # answered once this read is handled: one pong for a burst
        elif opcode == OP_PONG:
            self._on_pong()
        elif opcode == OP_CLOSE:
            self._on_close_frame(payload)
        elif opcode == OP_TEXT:
            raise ProtocolViolation("text message on the agent link (only binary frames are "
                                    "allowed)")
        else:
            raise ProtocolViolation(f"unknown WebSocket opcode 0x{opcode:x}")

    def _deliver(self, message: Any) -> None:
        if self._close_sent:
            return  # we are closing: what the peer still sends is dropped
        if self._receiver is not None:
            self._receiver(message)
            return
        self._queue.append(message)
        self._queued += len(message)
        if self._queue_waiter is not None and not self._queue_waiter.done():
            self._queue_waiter.set_result(None)
        if ((len(self._queue) >= self._settings.max_queue or self._queued >= self._max)
                and not self._reading_paused):
            self._reading_paused = True
            self._transport.pause_reading()

    def _on_close_frame(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise ProtocolViolation("invalid close frame")
        code = _CLOSE.unpack_from(payload)[0] if payload else CloseCode.NO_STATUS_RCVD
        text = bytes(payload[2:]).decode(errors="replace")
        self._close_rcvd = (code, text)
        if not self._reason:
            if code == CloseCode.MESSAGE_TOO_BIG:
                self._reason = "message too big"
            elif code == CloseCode.INTERNAL_ERROR and "keepalive" in text:
                self._reason = "keepalive timeout: the peer did not answer pings"
            else:
                self._reason = f"peer closed the connection ({code}{': ' + text if text else ''})"
        if not self._close_sent:
            self._send_close(code if code != CloseCode.NO_STATUS_RCVD else CloseCode.NORMAL_CLOSURE, "")
        self._wake_reader()
        self._notify_closing()
        self._transport.close()  # both close frames are out: end TLS and TCP

    # -- sending --------------------------------------------------------------------------------

    def write(self, message: bytes) -> None:
        """Send one binary message now (no waiting: writers of bulk data check ``paused`` and
        ``await drain()``). Raises :class:`TransportClosed` once the link is closing."""
        self.write2(message, b"")

    def write2(self, head: bytes, payload: Any) -> None:
        """Send the message ``head + payload`` with one copy of ``payload`` (the hot path of
        every tunnelled chunk: kept flat)."""
        if self._close_sent or self._gone:
            raise TransportClosed(self._reason or "connection closed")
        if self.paused and self._unread():
            raise TransportClosed(self._reason)
        if self._client:
            self._write_frame(_FIN_BINARY, head, payload)
            return
        length = len(head) + len(payload)
        if length < 126:
            header = bytes((_FIN_BINARY, length))
        elif length < 65536:
            header = _HDR16.pack(_FIN_BINARY, 126, length)
        else:
            header = _HDR64.pack(_FIN_BINARY, 127, length)
        self._transport.write(b"".join((header, head, payload)))

    def _unread(self) -> bool:
        """True (and the link failed) if the peer lets more than ``max_unsent`` of our output
        pile up: checked while writing is paused, on what the peer's own frames make us send."""
        if self._transport.get_write_buffer_size() <= self._max_unsent:
            return False
        self._fail(CloseCode.POLICY_VIOLATION, "peer does not read",
                   reason="the peer sends but does not read")
        return True

    def _write_frame(self, b0: int, head: Any, payload: Any = b"") -> None:
        length = len(head) + len(payload)
        mask_bit = 0x80 if self._client else 0
        if length < 126:
            header = bytes((b0, mask_bit | length))
        elif length < 65536:
            header = _HDR16.pack(b0, mask_bit | 126, length)
        else:
            header = _HDR64.pack(b0, mask_bit | 127, length)
        if self._client:
            mask = self._rng.getrandbits(32).to_bytes(4, "big")  # type: ignore[union-attr]
            body = apply_mask(b"".join((head, payload)) if payload else head, mask)
            self._transport.write(b"".join((header, mask, body)))
        else:
            self._transport.write(b"".join((header, head, payload)))

    async def drain(self) -> None:
        """Wait while the transport's buffer is above the write limit."""
        while self.paused:
            if self._lost.done():
                raise TransportClosed(self._reason or "connection closed")
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._lost.done() or self._close_sent:
            raise TransportClosed(self._reason or "connection closed")

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.on_writable is not None:
            self.on_writable()

    # -- keepalive --------------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self._settings.ping_interval
        if interval and not self._lost.done():
            self._ping_timer = self._loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self._close_sent or self._lost.done():
            return
        self._write_frame(0x80 | OP_PING, b"rport")
        self._awaiting_pong = True
        if self._settings.ping_timeout:
            self._pong_timer = self._loop.call_later(self._settings.ping_timeout,
                                                     self._pong_missing)

    def _on_pong(self) -> None:
        if self._awaiting_pong:  # else unsolicited: allowed, and ignored
            self._awaiting_pong = False
            if self._pong_timer is not None:
                self._pong_timer.cancel()
                self._pong_timer = None
            self._schedule_ping()

    def _pong_missing(self) -> None:
        self._pong_timer = None
        self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout",
                   reason="keepalive timeout: the peer did not answer pings", violation=False)

    # -- closing --------------------------------------------------------------------------------

    async def close(self, reason: str = "", *, violation: bool = False,
                    quick: bool = False) -> None:
        """The closing handshake: a close frame, then the peer's, then TLS and TCP are closed
        (after ``close_timeout`` the connection is aborted). ``violation`` (code 1002) and
        ``quick`` (a refused agent) wait at most ``FAIL_CLOSE_TIMEOUT`` for the peer."""
        if not self._lost.done():
            if not self._close_sent:
                code = CloseCode.PROTOCOL_ERROR if violation else CloseCode.NORMAL_CLOSURE
                self._reason = self._reason or reason or "closed"
                self._failing = self._failing or violation or quick
                self._send_close(code, reason)
            await self.wait_lost()

    async def wait_lost(self) -> str:
        """Wait until the transport is gone; returns why the link ended."""
        await asyncio.shield(self._lost)
        return self._reason

    def fail(self, text: str) -> None:
        """The peer broke the protocol (found by the session): close with code 1002."""
        self._fail(CloseCode.PROTOCOL_ERROR, text)

    def _notify_closing(self) -> None:
        callback, self.on_closing = self.on_closing, None
        if callback is not None:
            callback()

    def _fail(self, code: int, text: str, *, reason: str = "", violation: bool = True) -> None:
        """End the link because of the peer: our close frame, then the connection, without
        waiting for an answer."""
        if not self._reason:
            self._reason = reason or text
            self.violation = violation
        self._failing = True
        self._buf, self._fragments, self._fragments_size = bytearray(), [], 0
        if not self._close_sent and not self._lost.done():
            self._send_close(code, text)
        self._wake_reader()
        if not self._lost.done():
            self._transport.close()
            self._arm_close_timer()

    def _send_close(self, code: int, text: str) -> None:
        self._close_sent = True
        body = _CLOSE.pack(code) + text.encode()[:120]
        try:
            self._write_frame(0x80 | OP_CLOSE, body)
        except Exception:  # the transport is already closing
            pass
        self._arm_close_timer()
        self._wake_writers()
        self._notify_closing()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self._lost.done():
            delay = self._settings.close_timeout
            if self._failing:
                delay = min(delay, FAIL_CLOSE_TIMEOUT)
            self._close_timer = self._loop.call_later(delay, self._transport.abort)

    def _wake_reader(self) -> None:
        if self._queue_waiter is not None and not self._queue_waiter.done():
            self._queue_waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._reason:
            self._reason = "connection lost"
        for timer in (self._ping_timer, self._pong_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self.paused = False
        self._gone = True
        self._lost.set_result(None)
        self._wake_reader()
        self._wake_writers()
        self._notify_closing()
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost(exc)
        # The session's callbacks refer to the session, which refers to this link: without
        # them, a link and its session that are done are freed at once (rportd's garbage
        # collector no longer walks them, see core/gcpolicy.py).
        self._receiver = self.on_writable = None
        self._ping_timer = self._pong_timer = self._close_timer = None

    def eof_received(self) -> bool:
        return False  # the transport closes itself


class _TooBig(Exception):
    pass
