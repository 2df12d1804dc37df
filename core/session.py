"""The agent session interface, independent of the wire format.

Plugins talk to an agent (on the server) or to the server (on the agent) only through
:class:`Session` and :class:`Stream`: request/response messages in both directions and byte
streams with flow control and half-close. :mod:`rport.core.protocol.mux` implements them over any
message transport (a WebSocket today); another transport can be added without touching plugins.
"""

from __future__ import annotations

import abc
from typing import Any, Awaitable, Callable, Protocol

import attrs


class SessionError(Exception):
    """Base class of session failures."""


class SessionClosed(SessionError):
    """The session ended (the peer went away, or it was closed) before the operation finished."""


class RemoteError(SessionError):
    """The peer answered a request with an error; ``str(err)`` is the peer's message."""


class StreamRefused(SessionError):
    """The peer refused to open a stream; ``str(err)`` is its reason."""


class ProtocolViolation(SessionError):
    """The peer broke the protocol (bad frame, oversized message, flow-control breach...)."""


class StreamSink(Protocol):
    """Takes a stream's incoming data by callback, once attached with :meth:`Stream.attach`
    (e.g. :class:`rport.core.plugin.SocketPipe`, which writes it to a TCP connection). The
    callbacks run in the link's receive path: they must not block or await."""

    def stream_data(self, data: bytes | memoryview) -> None:
        """Data from the peer (a memoryview must not be kept past the call unless it is only
        written to a transport, which copies or holds the immutable bytes behind it)."""

    def stream_eof(self) -> None:
        """The peer half-closed its side."""

    def stream_reset(self, reason: str) -> None:
        """The stream was reset (by either side, or the session ended)."""

    def stream_writable(self) -> None:
        """:meth:`Stream.write_nowait` took less than it was given; it may be called again."""


class Stream(abc.ABC):
    """One flow-controlled byte stream inside a session (e.g. one tunnelled TCP connection).

    ``read`` returns ``b""`` once the peer has half-closed its side; ``write_eof`` half-closes
    ours. A stream whose reader stops reading stalls only itself: the peer runs out of credit.
    """

    kind: str
    meta: dict[str, Any]
    bytes_sent: int = 0
    """Data bytes this side has sent on the stream so far (taken by ``write``/``write_nowait``)."""
    bytes_received: int = 0
    """Data bytes received from the peer so far."""

    @abc.abstractmethod
    async def accept(self) -> None:
        """Confirm a stream the peer opened; a stream handler calls it once it is ready (raising
        :class:`StreamRefused` before it refuses the stream with a reason). No-op on streams this
        side opened."""

    @abc.abstractmethod
    def accept_nowait(self) -> None:
        """:meth:`accept`, from a callback (e.g. the ``connection_made`` of the connection the
        stream is about to be attached to)."""

    @abc.abstractmethod
    async def read(self) -> bytes:
        """Next chunk of data, ``b""`` at EOF. Raises :class:`SessionClosed` after a reset."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send data, waiting for credit from the peer when the window is used up."""

    @abc.abstractmethod
    async def write_eof(self) -> None:
        """Half-close: no more data from this side."""

    @abc.abstractmethod
    def reset(self, reason: str = "") -> None:
        """Abort both directions at once, telling the peer why."""

    # The callback interface, for data paths that cannot afford a task switch per chunk (a
    # tunnelled connection: see SocketPipe). Not to be mixed with read()/write() on one stream.

    @abc.abstractmethod
    def attach(self, sink: StreamSink) -> None:
        """Deliver incoming data, EOF and reset to ``sink`` from now on (what was received
        before is passed on at once) instead of :meth:`read`."""

    @abc.abstractmethod
    def write_nowait(self, data: bytes | memoryview) -> int:
        """Send what the peer's window and the link's buffer allow now; returns how many bytes
        were taken. If fewer than ``len(data)``, the attached sink's ``stream_writable`` is
        called when more can be sent. Raises :class:`SessionClosed` after a reset or EOF."""

    @abc.abstractmethod
    def write_eof_nowait(self) -> None:
        """:meth:`write_eof` from a callback."""

    @abc.abstractmethod
    def hold_credit(self, hold: bool) -> None:
        """While held, data handed to the sink is not acknowledged to the peer, so it sends at
        most one more window: hold it while the sink's own output is backed up."""

    @property
    @abc.abstractmethod
    def reset_reason(self) -> str | None:
        """Why the stream was reset (by either side), or None."""

    @property
    def refused(self) -> bool:
        """True if the peer refused a stream opened with :meth:`Session.open_stream_nowait`
        (``reset_reason`` is then the peer's reason)."""
        return False

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True once both directions are finished or the stream was reset."""


RequestHandler = Callable[["Session", Any], Awaitable[Any]]
StreamHandler = Callable[["Session", Stream], Awaitable[None]]


@attrs.define
class Handlers:
    """What one side serves to its peer: request handlers and stream handlers, by name.

    Filled by plugins through the registration hooks; the owner (plugin name) of each entry is
    kept so that a duplicate fails at start-up naming both plugins.
    """

    requests: dict[str, RequestHandler] = attrs.field(factory=dict)
    streams: dict[str, StreamHandler] = attrs.field(factory=dict)
    owners: dict[str, str] = attrs.field(factory=dict)

    def add_request(self, name: str, handler: RequestHandler, owner: str) -> None:
        self._claim(f"request {name!r}", owner)
        self.requests[name] = handler

    def add_stream(self, kind: str, handler: StreamHandler, owner: str) -> None:
        self._claim(f"stream {kind!r}", owner)
        self.streams[kind] = handler

    def _claim(self, key: str, owner: str) -> None:
        if key in self.owners:
            raise ValueError(f"{key} handler registered twice: by {self.owners[key]!r} and {owner!r}")
        self.owners[key] = owner

    def registrar(self, owner: str) -> "HandlerRegistrar":
        return HandlerRegistrar(self, owner)

    @property
    def capabilities(self) -> list[str]:
        return sorted(self.requests) + sorted(f"stream:{k}" for k in self.streams)


class HandlerRegistrar:
    """The ``register`` callback of ``rport_register_handlers``: ``register.request(name, fn)``
    and ``register.stream(kind, fn)``, recorded under the registering plugin's name."""

    def __init__(self, handlers: Handlers, owner: str) -> None:
        self._handlers, self._owner = handlers, owner

    def request(self, name: str, handler: RequestHandler) -> None:
        self._handlers.add_request(name, handler, self._owner)

    def stream(self, kind: str, handler: StreamHandler) -> None:
        self._handlers.add_stream(kind, handler, self._owner)


class Session(abc.ABC):
    """A live, authenticated link to one peer."""

    @abc.abstractmethod
    async def request(self, name: str, body: Any = None, *, timeout: float | None = 30.0) -> Any:
        """Ask the peer to run its handler ``name``; returns its answer or raises
        :class:`RemoteError`, :class:`SessionClosed` or :class:`TimeoutError`."""

    @abc.abstractmethod
    async def open_stream(self, kind: str, meta: dict[str, Any] | None = None, *,
                          timeout: float | None = 30.0) -> Stream:
        """Open a stream served by the peer's stream handler ``kind``; raises
        :class:`StreamRefused` with the peer's reason."""

    @abc.abstractmethod
    def open_stream_nowait(self, kind: str, meta: dict[str, Any] | None = None) -> Stream | None:
        """Open a stream optimistically, from a callback: the stream is returned at once and
        data may be written to it before the peer has accepted it, saving a round trip (what a
        new tunnelled connection needs). A refusal then resets the stream with the peer's
        reason. Returns None if the peer did not announce its window in the handshake (then use
        :meth:`open_stream`); raises :class:`StreamRefused` or :class:`SessionClosed`."""

    @abc.abstractmethod
    async def close(self, reason: str = "") -> None:
        """End the session; pending requests and open streams fail with :class:`SessionClosed`."""

    @abc.abstractmethod
    async def wait_closed(self) -> None:
        """Return once the session has ended."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @property
    @abc.abstractmethod
    def close_reason(self) -> str: ...

    @property
    @abc.abstractmethod
    def open_streams(self) -> int:
        """How many streams are open now (for metrics and tests)."""
