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
)
from .frames import (
    T,
    decode,
    decode_credit,
    decode_json_object,
    encode,
    encode_credit,
    encode_json,
)

log = logging.getLogger("rport.session")


class TransportClosed(Exception):
    """The underlying transport is gone; ``str()`` says why."""


class MessageTransport(Protocol):
    """What the session needs from a transport: ordered, reliable binary messages."""

    async def send(self, data: bytes) -> None: ...  # raises TransportClosed
    async def recv(self) -> bytes: ...  # raises TransportClosed or ProtocolViolation
    async def close(self, reason: str = "", *, violation: bool = False) -> None: ...


@attrs.frozen
class Limits:
    """Per-session limits, set explicitly on both ends."""

    window: int = 1 << 20  # receive window per stream, bytes
    max_frame: int = 1 << 16  # largest DATA payload we send, bytes
    max_requests: int = 128  # requests from the peer handled at once
    max_streams: int = 4096  # streams open at once
    request_timeout: float = 30.0


class MuxStream(Stream):
    def __init__(self, session: "MuxSession", ident: int, kind: str, meta: dict[str, Any],
                 send_window: int, *, accepted: bool) -> None:
        self.kind = kind
        self.meta = meta
        self._session = session
        self._id = ident
        self._accepted = accepted
        self._send_credit = send_window
        self._recv: collections.deque[bytes] = collections.deque()
        self._recv_allowed = session.limits.window  # bytes the peer may still send
        self._unacked = 0  # consumed but not yet returned as credit
        self._recv_eof = False
        self._sent_eof = False
        self._reset: str | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._credit_waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Stream {self._id} {self.kind}>"

    # -- application side -------------------------------------------------------------------

    async def accept(self) -> None:
        """Confirm a stream the peer opened (stream handlers call this once they are ready)."""
        if not self._accepted:
            self._accepted = True
            await self._session._send(encode_json(T.OPEN_OK, self._id,
                                                  {"window": self._session.limits.window}))

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
        self._unacked += len(chunk)
        if self._unacked >= self._session.limits.window // 2 and not self._recv_eof:
            credit, self._unacked = self._unacked, 0
            self._recv_allowed += credit
            await self._session._send_quiet(encode_credit(self._id, credit))
        return chunk

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        max_frame = self._session.limits.max_frame
        while view:
            while self._send_credit <= 0:
                self._check_writable()
                self._credit_waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._credit_waiter
                finally:
                    self._credit_waiter = None
            self._check_writable()
            n = min(len(view), self._send_credit, max_frame)
            self._send_credit -= n
            await self._session._send(encode(T.DATA, self._id, view[:n]))
            view = view[n:]

    async def write_eof(self) -> None:
        if self._sent_eof or self._reset is not None:
            return
        self._sent_eof = True
        await self._session._send_quiet(encode(T.EOF, self._id))
        self._maybe_done()

    def reset(self, reason: str = "") -> None:
        if self._reset is not None:
            return
        if not self.done or not self._accepted:
            self._session._spawn_send(encode(T.RESET, self._id, reason.encode()[:1024]))
        self._on_reset(reason or "reset")

    @property
    def reset_reason(self) -> str | None:
        return self._reset

    @property
    def done(self) -> bool:
        return self._reset is not None or (self._sent_eof and self._recv_eof)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (never more than the window)."""
        return sum(map(len, self._recv))

    # -- session side -----------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._reset is not None:
            raise SessionClosed(f"stream reset: {self._reset}")
        if self._sent_eof:
            raise SessionClosed("write after EOF")

    def _feed(self, payload: bytes) -> None:
        if self._recv_eof:
            raise ProtocolViolation(f"DATA after EOF on stream {self._id}")
        if len(payload) > self._recv_allowed:
            raise ProtocolViolation(
                f"stream {self._id} sent {len(payload)} bytes with {self._recv_allowed} of credit")
        self._recv_allowed -= len(payload)
        if payload:
            self._recv.append(payload)
            self._wake_reader()

    def _feed_eof(self) -> None:
        self._recv_eof = True
        self._wake_reader()
        self._maybe_done()

    def _add_credit(self, credit: int) -> None:
        self._send_credit += credit
        if self._send_credit > 1 << 31:
            raise ProtocolViolation(f"stream {self._id} credit overflow")
        if self._credit_waiter is not None and not self._credit_waiter.done():
            self._credit_waiter.set_result(None)

    def _on_reset(self, reason: str) -> None:
        self._reset = reason
        self._recv.clear()
        self._wake_reader()
        if self._credit_waiter is not None and not self._credit_waiter.done():
            self._credit_waiter.set_result(None)
        self._session._forget(self._id)

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _maybe_done(self) -> None:
        if self._sent_eof and self._recv_eof:
            self._session._forget(self._id)


class MuxSession(Session):
    """One side of a session. ``initiator`` (the agent) opens odd stream ids, the server even."""

    def __init__(self, transport: MessageTransport, handlers: Handlers, *, initiator: bool,
                 limits: Limits | None = None, name: str = "") -> None:
        self.limits = limits or Limits()
        self.name = name
        self.handlers = handlers
        self._transport = transport
        self._next_request = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._opening: dict[int, tuple[asyncio.Future[MuxStream], str, dict[str, Any]]] = {}
        self._streams: dict[int, MuxStream] = {}
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
        self._check_open()
        if len(self._streams) + len(self._opening) >= self.limits.max_streams:
            raise StreamRefused(f"too many open streams ({self.limits.max_streams})")
        ident = self._next_stream
        self._next_stream += 2
        fut: asyncio.Future[MuxStream] = asyncio.get_running_loop().create_future()
        meta = meta or {}
        self._opening[ident] = (fut, kind, meta)
        try:
            await self._send(encode_json(T.OPEN, ident, {
                "kind": kind, "meta": meta, "window": self.limits.window}))
            # The stream is registered by the read loop as OPEN_OK arrives, so frames that follow
            # it at once (a server's banner, an EOF, a reset) find it.
            return await asyncio.wait_for(
                fut, self.limits.request_timeout if timeout is None else timeout)
        finally:
            self._opening.pop(ident, None)

    async def close(self, reason: str = "") -> None:
        if not self._closed.is_set():
            self._shutdown(reason or "closed")
            await self._transport.close(reason)

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

    # -- read loop --------------------------------------------------------------------------

    async def run(self) -> str:
        """Serve the session until it ends; returns why it ended."""
        reason = "closed"
        try:
            while not self._closed.is_set():
                message = await self._transport.recv()
                self._dispatch(*decode(message))
        except TransportClosed as exc:
            reason = str(exc) or "connection closed"
        except ProtocolViolation as exc:
            reason = f"protocol violation: {exc}"
            log.warning("%s: %s, disconnecting", self.name, reason)
            await self._transport.close(reason, violation=True)
        except asyncio.CancelledError:
            reason = "cancelled"
            await self._transport.close("shutting down")
            raise
        finally:
            self._shutdown(self._close_reason or reason)
        return self._close_reason

    def _dispatch(self, ftype: T, ident: int, payload: bytes) -> None:
        if ftype is T.DATA:
            stream = self._stream_for(ident)
            if stream is not None:
                stream._feed(payload)
        elif ftype is T.WINDOW:
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
            obj = decode_json_object(ftype, payload)
            opening = self._opening.get(ident)
            if opening is None or opening[0].done():
                ours = ident % 2 != self._peer_parity
                if not ours or ident >= self._next_stream or ident in self._streams:
                    raise ProtocolViolation(f"{ftype.name} for stream {ident}, which is not opening")
                if ftype is T.OPEN_OK:  # we gave up waiting (timeout): the peer must drop it
                    self._spawn_send(encode(T.RESET, ident, b"open timed out"))
                return
            fut, kind, meta = opening
            if ftype is T.OPEN_OK:
                window = obj.get("window")
                if not isinstance(window, int) or not 0 < window <= 1 << 30:
                    raise ProtocolViolation(f"OPEN_OK with invalid window {window!r}")
                stream = MuxStream(self, ident, kind, meta, window, accepted=True)
                self._streams[ident] = stream
                fut.set_result(stream)
            else:
                fut.set_exception(StreamRefused(str(obj.get("error", "refused"))))
        else:
            raise ProtocolViolation(f"unexpected {ftype.name} frame in an established session")

    def _stream_for(self, ident: int) -> MuxStream | None:
        stream = self._streams.get(ident)
        if stream is None:
            # Frames for a stream we already finished are in flight legitimately; ids that were
            # never opened are not.
            ours = ident % 2 != self._peer_parity
            if (ours and ident >= self._next_stream) or (not ours and ident > self._last_peer_stream):
                raise ProtocolViolation(f"frame for stream {ident}, which was never opened")
        return stream

    def _on_request(self, ident: int, obj: dict[str, Any]) -> None:
        name = obj["name"]
        handler = self.handlers.requests.get(name) if isinstance(name, str) else None
        if handler is None:
            self._spawn_send(encode_json(T.RESPONSE, ident, {
                "ok": False, "error": f"unknown request: {name}"}))
        elif self._requests_running >= self.limits.max_requests:
            self._spawn_send(encode_json(T.RESPONSE, ident, {
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
        await self._send_quiet(frame)

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
            self._spawn_send(encode_json(T.OPEN_FAIL, ident, {"error": f"unknown stream kind: {kind}"}))
            return
        if len(self._streams) >= self.limits.max_streams:
            self._spawn_send(encode_json(T.OPEN_FAIL, ident, {
                "error": f"too many open streams ({self.limits.max_streams})"}))
            return
        stream = MuxStream(self, ident, kind, meta, window, accepted=False)
        self._streams[ident] = stream
        self._spawn(self._serve_stream(stream, handler))

    async def _serve_stream(self, stream: MuxStream, handler: Any) -> None:
        try:
            await handler(self, stream)
            if not stream._accepted:
                raise StreamRefused("not accepted")
        except StreamRefused as exc:
            if not stream._accepted:
                stream._accepted = True
                self._forget(stream._id)
                await self._send_quiet(encode_json(T.OPEN_FAIL, stream._id, {"error": str(exc)}))
            else:
                stream.reset(str(exc))
        except SessionClosed:
            stream.reset("session closed")
        except Exception as exc:
            log.exception("%s: handler for stream %r of plugin %r failed", self.name, stream.kind,
                          self.handlers.owners.get(f"stream {stream.kind!r}", "?"))
            if not stream._accepted:
                stream._accepted = True
                self._forget(stream._id)
                await self._send_quiet(encode_json(T.OPEN_FAIL, stream._id, {
                    "error": f"{exc.__class__.__name__}: {exc}"}))
            else:
                stream.reset(f"{exc.__class__.__name__}: {exc}")

    # -- helpers ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise SessionClosed(self._close_reason or "session closed")

    async def _send(self, frame: bytes) -> None:
        self._check_open()
        try:
            await self._transport.send(frame)
        except TransportClosed as exc:
            raise SessionClosed(str(exc) or "connection closed") from None

    async def _send_quiet(self, frame: bytes) -> None:
        """Send a control frame whose loss only matters if the session is ending anyway."""
        try:
            await self._send(frame)
        except SessionClosed:
            pass

    def _spawn_send(self, frame: bytes) -> None:
        if len(self._tasks) > self.limits.max_requests + self.limits.max_streams:
            raise ProtocolViolation("peer is flooding the session faster than it reads replies")
        self._spawn(self._send_quiet(frame))

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
