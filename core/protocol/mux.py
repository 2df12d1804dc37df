"""A multiplexed session over a message transport: requests both ways and flow-controlled streams.

Each stream has its own credit window, as SSH channels do: a sender may have at most ``window``
unacknowledged bytes in flight; the receiver returns credit (WINDOW frames) as its application
*consumes* data, so a stalled reader stalls only its own stream, and no receive buffer can grow
past the window. The read loop never awaits a send (that could deadlock two peers that are both
writing), so control messages keep flowing while streams are stalled.

Limits are explicit: frame size, window, concurrent requests and open streams per session. A peer
that breaks them, or sends a malformed frame, ends the session with a logged reason.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any, Callable, Protocol

import attrs

from ..session import (
    Handlers,
    ProtocolViolation,
    RemoteError,
    Session,
    SessionClosed,
    Stream,
    StreamRefused,
    StreamSink,
)
from .frames import (
    HEADER,
    T,
    decode,
    decode_credit,
    decode_json_object,
    encode,
    encode_credit,
    encode_json,
)

from .websocket import TransportClosed

log = logging.getLogger("rport.session")


class MessageTransport(Protocol):
    """What the session needs from its link (:class:`~.websocket.WebSocketLink`): ordered,
    reliable binary messages, delivered by callback and written without waiting."""

    paused: bool  # writers of bulk data wait (drain) while set
    on_writable: Callable[[], None] | None  # called when ``paused`` clears
    on_closing: Callable[[], None] | None  # called once, as the link starts to end
    violation: bool  # it ended because the peer broke the protocol

    @property
    def reason(self) -> str: ...
    def set_receiver(self, receiver: Callable[[Any], None]) -> None: ...
    def write(self, message: bytes) -> None: ...  # raises TransportClosed
    def write2(self, head: bytes, payload: Any) -> None: ...  # raises TransportClosed
    async def drain(self) -> None: ...  # raises TransportClosed
    def fail(self, reason: str) -> None: ...  # a protocol violation by the peer
    async def close(self, reason: str = "", *, violation: bool = False) -> None: ...
    async def wait_lost(self) -> str: ...


@attrs.frozen
class Limits:
    """Per-session limits, set explicitly on both ends."""

    window: int = 1 << 20  # receive window per stream, bytes
    max_frame: int = 1 << 16  # largest DATA payload we send, bytes
    max_requests: int = 128  # requests from the peer handled at once
    max_streams: int = 4096  # streams open at once
    request_timeout: float = 30.0


def valid_window(value: Any) -> int | None:
    """A window announced by the peer (in HELLO or WELCOME), or None if absent or invalid."""
    return value if type(value) is int and 0 < value <= 1 << 30 else None


class MuxStream(Stream):
    def __init__(self, session: "MuxSession", ident: int, kind: str, meta: dict[str, Any],
                 send_window: int, *, accepted: bool, optimistic: bool = False) -> None:
        self.kind = kind
        self.meta = meta
        self._session = session
        self._id = ident
        self._data_head = HEADER.pack(T.DATA, ident)
        self._accepted = accepted
        self._optimistic = optimistic  # opened without waiting for OPEN_OK; credit is a guess
        self._refused = False
        self._silent_accept = False  # opened optimistically by the peer: accept without OPEN_OK
        self._send_credit = send_window
        self._recv: collections.deque[Any] = collections.deque()
        self._recv_allowed = session.limits.window  # bytes the peer may still send
        self._unacked = 0  # consumed but not yet returned as credit
        self._half_window = session.limits.window // 2  # credit is returned in this much
        self._credit_held = False
        self._recv_eof = False
        self._sent_eof = False
        self._reset: str | None = None
        self._sink: StreamSink | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._want_writable = False
        self.bytes_sent = 0  # data bytes, counted once per call (not per frame): for metrics
        self.bytes_received = 0

    def __repr__(self) -> str:
        return f"<Stream {self._id} {self.kind}>"

    # -- application side -------------------------------------------------------------------

    async def accept(self) -> None:
        """Confirm a stream the peer opened (stream handlers call this once they are ready)."""
        self.accept_nowait()

    def accept_nowait(self) -> None:
        if not self._accepted:
            self._accepted = True
            if not self._silent_accept:  # an optimistic opener needs no OPEN_OK
                self._session._write_quiet(HEADER.pack(T.OPEN_OK, self._id) + self._session._open_ok)

    async def read(self) -> bytes:
        while not self._recv:
            if self._reset is not None:
                raise SessionClosed(f"stream reset: {self._reset}")
            if self._recv_eof:
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        chunk = self._recv.popleft()
        self._consumed(len(chunk))
        return chunk if type(chunk) is bytes else bytes(chunk)

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = self.write_nowait(view)
            view = view[n:]
            if view:
                self._write_waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._write_waiter
                finally:
                    self._write_waiter = None
        if self._session._link.paused:
            try:
                await self._session._link.drain()
            except TransportClosed as exc:
                raise SessionClosed(str(exc) or "connection closed") from None

    def write_nowait(self, data: bytes | memoryview) -> int:
        total, size = 0, len(data)
        if self._reset is not None:
            raise SessionClosed(f"stream reset: {self._reset}")
        if self._sent_eof:
            raise SessionClosed("write after EOF")
        session = self._session
        link = session._link
        max_frame = session.limits.max_frame
        try:
            while total < size and self._send_credit > 0 and not link.paused:
                n = min(size - total, self._send_credit, max_frame)
                link.write2(self._data_head, data[total:total + n] if n < size else data)
                self._send_credit -= n
                total += n
        except TransportClosed as exc:
            raise SessionClosed(str(exc) or "connection closed") from None
        self.bytes_sent += total
        if total < size:
            self._want_writable = True
            if link.paused:
                session._blocked.add(self)
        return total

    async def write_eof(self) -> None:
        self.write_eof_nowait()

    def write_eof_nowait(self) -> None:
        if self._sent_eof or self._reset is not None:
            return
        self._sent_eof = True
        self._session._write_quiet(encode(T.EOF, self._id))
        self._maybe_done()

    def reset(self, reason: str = "") -> None:
        if self._reset is not None:
            return
        if not self.done or not self._accepted:
            self._session._write_quiet(encode(T.RESET, self._id, reason.encode()[:1024]))
        self._on_reset(reason or "reset")

    def attach(self, sink: StreamSink) -> None:
        self._sink = sink
        while self._recv:
            chunk = self._recv.popleft()
            sink.stream_data(chunk)
            self._consumed(len(chunk))
        if self._reset is not None:
            sink.stream_reset(self._reset)
        elif self._recv_eof:
            sink.stream_eof()

    def hold_credit(self, hold: bool) -> None:
        self._credit_held = hold
        if not hold and self._unacked and self._reset is None and not self._recv_eof:
            self._return_credit()

    @property
    def reset_reason(self) -> str | None:
        return self._reset

    @property
    def refused(self) -> bool:
        return self._refused

    @property
    def done(self) -> bool:
        return self._reset is not None or (self._sent_eof and self._recv_eof)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (never more than the window)."""
        return sum(map(len, self._recv))

    # -- session side -----------------------------------------------------------------------

    def _consumed(self, n: int) -> None:
        self._unacked += n
        if (self._unacked >= self._half_window and not self._credit_held
                and not self._recv_eof and self._reset is None):
            self._return_credit()

    def _return_credit(self) -> None:
        credit, self._unacked = self._unacked, 0
        self._recv_allowed += credit
        self._session._write_quiet(encode_credit(self._id, credit))

    def _feed(self, payload: Any) -> None:
        n = len(payload)
        if self._recv_eof:
            raise ProtocolViolation(f"DATA after EOF on stream {self._id}")
        if n > self._recv_allowed:
            raise ProtocolViolation(
                f"stream {self._id} sent {n} bytes with {self._recv_allowed} of credit")
        self._recv_allowed -= n
        if not n:
            return
        self.bytes_received += n
        sink = self._sink
        if sink is not None:
            sink.stream_data(payload)
            self._consumed(n)
        else:
            self._recv.append(payload)
            self._wake_reader()

    def _feed_eof(self) -> None:
        self._recv_eof = True
        if self._sink is not None:
            self._sink.stream_eof()
        else:
            self._wake_reader()
        self._maybe_done()

    def _add_credit(self, credit: int) -> None:
        self._send_credit += credit
        if self._send_credit > 1 << 31:
            raise ProtocolViolation(f"stream {self._id} credit overflow")
        if self._send_credit > 0:
            self._wake_writer()

    def _wake_writer(self) -> None:
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)
        if self._want_writable and self._sink is not None:
            self._want_writable = False
            self._sink.stream_writable()

    def _on_reset(self, reason: str) -> None:
        self._reset = reason
        self._recv.clear()
        self._session._forget(self._id)
        self._session._blocked.discard(self)
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)
        if self._sink is not None:
            self._sink.stream_reset(reason)
        else:
            self._wake_reader()

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _maybe_done(self) -> None:
        if self._sent_eof and self._recv_eof:
            self._session._forget(self._id)


class MuxSession(Session):
    """One side of a session. ``initiator`` (the agent) opens odd stream ids, the server even.

    ``peer_window`` is the receive window the peer announced in the handshake: with it, streams
    may be opened optimistically (data sent right after OPEN, before OPEN_OK)."""

    def __init__(self, link: MessageTransport, handlers: Handlers, *, initiator: bool,
                 limits: Limits | None = None, name: str = "",
                 peer_window: int | None = None) -> None:
        self.limits = limits or Limits()
        self.name = name
        self.handlers = handlers
        self._link = link
        self._peer_window = peer_window
        self._open_ok = json.dumps({"window": self.limits.window}).encode()  # every OPEN_OK's body
        self._next_request = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._opening: dict[int, tuple[asyncio.Future[MuxStream], str, dict[str, Any]]] = {}
        self._streams: dict[int, MuxStream] = {}
        self._blocked: set[MuxStream] = set()  # writers waiting for the link to drain
        self._next_stream = 1 if initiator else 2
        self._peer_parity = 0 if initiator else 1
        self._last_peer_stream = 0
        self._requests_running = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._close_reason = ""
        self.context: dict[str, Any] = {}  # the owner's per-session data (e.g. the client id)
        self.on_close: Callable[[str], None] | None = None
        """Called synchronously, once, the moment the session ends (before anyone can observe
        it closed), so the owner's state never lags behind."""
        link.on_writable = self._on_link_writable
        link.on_closing = self._on_link_closing

    # -- Session interface ------------------------------------------------------------------

    async def request(self, name: str, body: Any = None, *, timeout: float | None = None) -> Any:
        self._check_open()
        ident = self._next_request
        self._next_request += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        try:
            await self._send(encode_json(T.REQUEST, ident, {"name": name, "body": body}))
            return await asyncio.wait_for(
                fut, self.limits.request_timeout if timeout is None else timeout)
        finally:
            self._pending.pop(ident, None)

    async def open_stream(self, kind: str, meta: dict[str, Any] | None = None, *,
                          timeout: float | None = None) -> Stream:
        ident, frame = self._new_stream(kind, meta)
        fut: asyncio.Future[MuxStream] = asyncio.get_running_loop().create_future()
        self._opening[ident] = (fut, kind, meta or {})
        try:
            await self._send(frame)
            # The stream is registered as OPEN_OK arrives (in the link's callback), so frames
            # that follow it at once (a server's banner, an EOF, a reset) find it.
            return await asyncio.wait_for(
                fut, self.limits.request_timeout if timeout is None else timeout)
        finally:
            self._opening.pop(ident, None)

    def open_stream_nowait(self, kind: str, meta: dict[str, Any] | None = None) -> Stream | None:
        if not self._peer_window:
            return None
        # The peer's window for a new stream is known from the handshake: data may follow OPEN
        # at once. A refusal (OPEN_FAIL) then resets the stream with the peer's reason.
        ident, frame = self._new_stream(kind, meta, optimistic=True)
        stream = MuxStream(self, ident, kind, meta or {}, self._peer_window, accepted=True,
                           optimistic=True)
        self._streams[ident] = stream
        try:
            self._link.write(frame)
        except TransportClosed as exc:
            self._forget(ident)
            raise SessionClosed(str(exc) or "connection closed") from None
        return stream

    def _new_stream(self, kind: str, meta: dict[str, Any] | None, *,
                    optimistic: bool = False) -> tuple[int, bytes]:
        self._check_open()
        if len(self._streams) + len(self._opening) >= self.limits.max_streams:
            raise StreamRefused(f"too many open streams ({self.limits.max_streams})")
        ident = self._next_stream
        self._next_stream += 2
        body: dict[str, Any] = {"kind": kind, "meta": meta or {}, "window": self.limits.window}
        if optimistic:
            # The peer then sends no OPEN_OK: its first frame on the stream says it accepted.
            body["optimistic"] = True
        return ident, encode_json(T.OPEN, ident, body)

    async def close(self, reason: str = "") -> None:
        if not self._closed.is_set():
            self._shutdown(reason or "closed")
        await self._link.close(reason)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> str:
        return self._close_reason

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- receiving ----------------------------------------------------------------------------

    async def run(self) -> str:
        """Serve the session until it ends; returns why it ended. Messages are handled as they
        arrive, in the link's callback; this only waits for the end."""
        self._link.set_receiver(self._on_message)
        try:
            await self._link.wait_lost()
        except asyncio.CancelledError:
            self._shutdown("cancelled")
            await self._link.close("shutting down")
            raise
        finally:
            self._on_link_closing()
        return self._close_reason

    def _on_link_closing(self) -> None:
        if self._closed.is_set():
            return
        link = self._link
        reason = link.reason or "connection closed"
        if link.violation:
            reason = f"protocol violation: {reason}"
            log.warning("%s: %s, disconnecting", self.name, reason)
        self._shutdown(reason)

    def _on_message(self, message: Any) -> None:
        try:
            if len(message) < HEADER.size:
                raise ProtocolViolation(f"frame of {len(message)} bytes is shorter than its header")
            code, ident = HEADER.unpack_from(message)
            if code == T.DATA:  # the hot path
                stream = self._stream_for(ident)
                if stream is not None:
                    stream._feed(message[HEADER.size:])
            else:
                ftype, ident, payload = decode(message)
                self._dispatch(ftype, ident, payload if type(payload) is bytes else bytes(payload))
        except ProtocolViolation as exc:
            if not self._closed.is_set():
                self._link.fail(str(exc))

    def _dispatch(self, ftype: T, ident: int, payload: bytes) -> None:
        if ftype is T.WINDOW:
            stream = self._stream_for(ident)
            if stream is not None:
                stream._add_credit(decode_credit(payload))
        elif ftype is T.EOF:
            stream = self._stream_for(ident)
            if stream is not None:
                stream._feed_eof()
        elif ftype is T.RESET:
            stream = self._stream_for(ident)
            if stream is not None:
                stream._on_reset(payload.decode(errors="replace") or "reset by peer")
            elif ident in self._opening and not self._opening[ident][0].done():
                self._opening[ident][0].set_exception(StreamRefused("reset by peer"))
        elif ftype is T.REQUEST:
            self._on_request(ident, decode_json_object(ftype, payload, "name"))
        elif ftype is T.RESPONSE:
            self._on_response(ident, decode_json_object(ftype, payload, "ok"))
        elif ftype is T.OPEN:
            self._on_open(ident, decode_json_object(ftype, payload, "kind", "window"))
        elif ftype in (T.OPEN_OK, T.OPEN_FAIL):
            self._on_open_answer(ftype, ident, decode_json_object(ftype, payload))
        else:
            raise ProtocolViolation(f"unexpected {ftype.name} frame in an established session")

    def _on_open_answer(self, ftype: T, ident: int, obj: dict[str, Any]) -> None:
        window = obj.get("window")
        if ftype is T.OPEN_OK and (not isinstance(window, int) or not 0 < window <= 1 << 30):
            raise ProtocolViolation(f"OPEN_OK with invalid window {window!r}")
        stream = self._streams.get(ident)
        if stream is not None and stream._optimistic:
            stream._optimistic = False
            if ftype is T.OPEN_OK:
                stream._add_credit(window - (self._peer_window or 0))
            else:
                self._forget(ident)
                stream._refused = True
                stream._on_reset(str(obj.get("error", "refused")))
            return
        opening = self._opening.get(ident)
        if opening is None or opening[0].done():
            ours = ident % 2 != self._peer_parity
            if not ours or ident >= self._next_stream or stream is not None:
                raise ProtocolViolation(f"{ftype.name} for stream {ident}, which is not opening")
            if ftype is T.OPEN_OK:  # we gave up waiting, or reset it: the peer must drop it
                self._write_quiet(encode(T.RESET, ident, b"open abandoned"))
            return
        fut, kind, meta = opening
        if ftype is T.OPEN_OK:
            stream = MuxStream(self, ident, kind, meta, window, accepted=True)
            self._streams[ident] = stream
            fut.set_result(stream)
        else:
            fut.set_exception(StreamRefused(str(obj.get("error", "refused"))))

    def _stream_for(self, ident: int) -> MuxStream | None:
        stream = self._streams.get(ident)
        if stream is None:
            # Frames for a stream we already finished (or refused) are in flight legitimately;
            # ids that were never opened are not.
            ours = ident % 2 != self._peer_parity
            if (ours and ident >= self._next_stream) or (not ours and ident > self._last_peer_stream):
                raise ProtocolViolation(f"frame for stream {ident}, which was never opened")
        return stream

    def _on_request(self, ident: int, obj: dict[str, Any]) -> None:
        name = obj["name"]
        handler = self.handlers.requests.get(name) if isinstance(name, str) else None
        if handler is None:
            self._write_quiet(encode_json(T.RESPONSE, ident, {
                "ok": False, "error": f"unknown request: {name}"}))
        elif self._requests_running >= self.limits.max_requests:
            self._write_quiet(encode_json(T.RESPONSE, ident, {
                "ok": False, "error": f"too many concurrent requests ({self.limits.max_requests})"}))
        else:
            self._requests_running += 1
            self._spawn(self._serve_request(ident, name, handler, obj.get("body")))

    async def _serve_request(self, ident: int, name: str, handler: Any, body: Any) -> None:
        try:
            result = await handler(self, body)
            reply = {"ok": True, "body": result}
        except RemoteError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a handler's bug must not end the session
            log.exception("%s: handler for request %r of plugin %r failed", self.name, name,
                          self.handlers.owners.get(f"request {name!r}", "?"))
            reply = {"ok": False, "error": f"{name} failed: {exc.__class__.__name__}: {exc}"}
        finally:
            self._requests_running -= 1
        try:
            frame = encode_json(T.RESPONSE, ident, reply)
        except (TypeError, ValueError) as exc:
            log.error("%s: the answer of handler %r is not JSON: %s", self.name, name, exc)
            frame = encode_json(T.RESPONSE, ident, {
                "ok": False, "error": f"{name} failed: its answer cannot be sent ({exc})"})
        try:
            await self._send(frame)
        except SessionClosed:
            pass

    def _on_response(self, ident: int, obj: dict[str, Any]) -> None:
        fut = self._pending.get(ident)
        if fut is None:
            if ident >= self._next_request:
                raise ProtocolViolation(f"response to request {ident}, which was never sent")
            return  # the request timed out meanwhile
        if fut.done():
            return
        if obj["ok"] is True:
            fut.set_result(obj.get("body"))
        else:
            fut.set_exception(RemoteError(str(obj.get("error") or "request failed")))

    def _on_open(self, ident: int, obj: dict[str, Any]) -> None:
        if ident % 2 != self._peer_parity or ident <= self._last_peer_stream:
            raise ProtocolViolation(f"OPEN with invalid stream id {ident}")
        self._last_peer_stream = ident
        kind, window, meta = obj["kind"], obj["window"], obj.get("meta") or {}
        if not isinstance(window, int) or not 0 < window <= 1 << 30 or not isinstance(meta, dict):
            raise ProtocolViolation(f"OPEN of stream {ident} with an invalid window or meta")
        handler = self.handlers.streams.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self._write_quiet(encode_json(T.OPEN_FAIL, ident, {"error": f"unknown stream kind: {kind}"}))
            return
        if len(self._streams) >= self.limits.max_streams:
            self._write_quiet(encode_json(T.OPEN_FAIL, ident, {
                "error": f"too many open streams ({self.limits.max_streams})"}))
            return
        stream = MuxStream(self, ident, kind, meta, window, accepted=False)
        stream._silent_accept = obj.get("optimistic") is True
        self._streams[ident] = stream
        self._spawn(self._serve_stream(stream, handler))

    async def _serve_stream(self, stream: MuxStream, handler: Any) -> None:
        try:
            await handler(self, stream)
            if not stream._accepted:
                raise StreamRefused("not accepted")
        except StreamRefused as exc:
            self._refuse(stream, str(exc))
        except SessionClosed:
            stream.reset("session closed")
        except Exception as exc:
            log.exception("%s: handler for stream %r of plugin %r failed", self.name, stream.kind,
                          self.handlers.owners.get(f"stream {stream.kind!r}", "?"))
            self._refuse(stream, f"{exc.__class__.__name__}: {exc}")

    def _refuse(self, stream: MuxStream, reason: str) -> None:
        if stream._accepted:
            stream.reset(reason)
            return
        stream._accepted = True
        self._forget(stream._id)
        if stream._reset is None:
            stream._reset = reason
            self._write_quiet(encode_json(T.OPEN_FAIL, stream._id, {"error": reason}))

    # -- sending ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise SessionClosed(self._close_reason or "session closed")

    async def _send(self, frame: bytes) -> None:
        """Send a frame; waits while the link's buffer is full."""
        self._check_open()
        try:
            self._link.write(frame)
            if self._link.paused:
                await self._link.drain()
        except TransportClosed as exc:
            raise SessionClosed(str(exc) or "connection closed") from None

    def _write_quiet(self, frame: bytes) -> None:
        """Send a control frame now, from a callback (never waits: the receiving side must not
        block on sending, or two peers that both write could deadlock). Its loss only matters if
        the session is ending anyway."""
        if self._closed.is_set():
            return
        try:
            self._link.write(frame)
        except TransportClosed:
            pass

    def _on_link_writable(self) -> None:
        blocked, self._blocked = self._blocked, set()
        for stream in blocked:
            stream._wake_writer()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, ident: int) -> None:
        self._streams.pop(ident, None)

    def _shutdown(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        if self.on_close is not None:
            self.on_close(reason)
        for fut in [*self._pending.values(), *(o[0] for o in self._opening.values())]:
            if not fut.done():
                fut.set_exception(SessionClosed(reason))
        for stream in list(self._streams.values()):
            stream._on_reset(f"session closed: {reason}")
        for task in list(self._tasks):
            task.cancel()
