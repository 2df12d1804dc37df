"""The proxy's data path, target side: one client connection's connection to the raw tunnel.

:class:`Upstream` is opened by a :class:`~.client.ClientConnection` for its first request and
closed with it (or when the target does not keep it alive). It sends the rewritten requests, reads
the target's responses with httptools' response parser and passes them on to the client: the
head rewritten (:mod:`.reverse`), the body as it arrives, re-chunked when the target's was
chunked or ended by its close; after ``101 Switching Protocols``, raw bytes both ways. An https
target is reached over TLS (not verified: devices have self-signed certificates).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httptools

from rport.core.plugin import SessionClosed, StreamRefused

from .reverse import Request
from .stream import StreamTransport, TunnelStreamError

if TYPE_CHECKING:
    from .client import ClientConnection

log = logging.getLogger("rport.plugins.proxy")

MAX_HEAD = 64 * 1024  # bytes of a request line (or status line) and headers
MAX_HEADERS = 256
CONNECT_TIMEOUT = 15.0  # to the raw tunnel (and, for https targets, its TLS handshake)


class BadResponse(Exception):
    """What the target sent is not an HTTP response the proxy can pass on."""


class _HeadResponseDone(Exception):
    """Raised from the response parser's callback after the head of a response to HEAD: llhttp
    would wait for the body its Content-Length announces."""


class Upstream(asyncio.Protocol):
    """The connection of one client connection to the raw tunnel (TLS for an https target)."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.proxy = conn.proxy
        self.transport: Any = None
        self.req: Request | None = None  # the request whose response comes next
        self.responses = 0
        self.relay = False
        self.closed = False
        self.head_sent = False  # the current response's head went to the client
        self.until_close = False
        self.close_client = False
        self._early: list[bytes] | None = []  # written before the connection was made
        self._task: asyncio.Task[Any] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reading_paused = False
        self._out: list[bytes] = []  # for the client, written at once after each read
        self._reset_response()

    def _reset_response(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_size = 0
        self._head_fed = 0
        self._in_head = True
        self._interim = False
        self._switching = False
        self._chunked = False
        self._keep_alive = True
        self.head_sent = False
        self.until_close = False
        self.close_client = False

    # -- connection --------------------------------------------------------------------------------

    def connect(self) -> None:
        """Over a stream of the tunnel's (at once), or to the raw tunnel's listener (a task);
        may report a failure (``upstream_lost``) before it returns."""
        proxy = self.proxy
        if proxy.open_stream is not None:
            try:
                stream = proxy.open_stream()
            except (SessionClosed, StreamRefused) as exc:
                self.closed = True
                self.conn.upstream_lost(self, f"the target cannot be reached: {exc}", retry=False)
                return
            if stream is not None:
                StreamTransport(stream, self, proxy.stream_ended).start()
                return
        self.conn._pause("connecting")
        self._task = self.conn.loop.create_task(self._connect())

    async def _connect(self) -> None:
        proxy = self.proxy
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.conn.loop.create_connection(
                    lambda: self, "127.0.0.1", proxy.raw_port, ssl=proxy.ssl,
                    server_hostname=proxy.server_hostname)
        except (OSError, TimeoutError) as exc:
            if not self.closed:
                self.closed = True
                what = "timed out" if isinstance(exc, TimeoutError) else (
                    exc.strerror or str(exc) or exc.__class__.__name__)
                self.conn.upstream_lost(self, f"cannot reach the tunnel: {what}", retry=False)
        finally:
            self._task = None

    def connection_made(self, transport: Any) -> None:
        if self.closed:
            transport.abort()
            return
        self.transport = transport
        early, self._early = self._early, None
        if early:
            transport.writelines(early)
        if self.conn.writing_paused:
            self.pause_reading()
        self.conn.upstream_ready()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if exc is None:
            reason = ("the target closed the connection before it answered" if not self.head_sent
                      else "the target closed the connection")
        elif isinstance(exc, TunnelStreamError) and exc.refused:
            reason = f"the target cannot be reached: {exc}"
        else:
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            reason = f"the connection through the tunnel failed: {what}"
        self.conn.upstream_lost(self, reason)

    def eof_received(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        elif self._early is not None:
            self._early.append(data)  # bounded: the client's reading is paused meanwhile

    def writelines(self, parts: Any) -> None:
        if self.transport is not None:
            self.transport.writelines(parts)
        elif self._early is not None:
            self._early.extend(parts)

    def pause_writing(self) -> None:
        self.conn.pause_for_upstream()

    def resume_writing(self) -> None:
        self.conn.resume_for_upstream()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Ours to end (the client's connection is going, or the target asked): no report. A
        relay ends gracefully (the target sees EOF after the last bytes); an HTTP connection is
        cut, so that nothing lingers behind it (no request is in flight on it, or its client
        is gone)."""
        if self.closed:
            return
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            if self.relay:
                self.transport.close()
            else:
                self.transport.abort()

    def abort(self) -> None:
        """Cut at once, relay or not (the proxy is closing): no report."""
        if self.closed:
            return
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, reason: str) -> None:
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.conn.upstream_lost(self, reason, retry=False)

    # -- responses ---------------------------------------------------------------------------------

    def begin(self, req: Request) -> None:
        self.req = req
        self._reset_response()

    def data_received(self, data: bytes) -> None:
        if self.relay:
            self.conn.transport.write(data)
            return
        if self.req is None:
            self._fail("the target sent data nobody asked for")
            return
        if self._in_head:
            self._head_fed += len(data)
        try:
            self._parser.feed_data(data)
            self._flush()
        except httptools.HttpParserUpgrade as exc:
            self._switched(bytes(data[exc.args[0]:]))
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadResponseDone):
                self._parser = httptools.HttpResponseParser(self)
                self._complete()
            elif isinstance(cause, BadResponse):
                self._fail(f"invalid response from the target: {cause}")
            else:
                log.error("proxy on %s: response failed", self.proxy.upstream, exc_info=cause or exc)
                self._fail("internal error")
            return
        except httptools.HttpParserError as exc:
            self._fail(f"invalid response from the target: {exc}")
            return
        if self._in_head and self._head_fed > MAX_HEAD:
            self._fail("invalid response from the target: its head is too large")

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer of a chunked body: not passed on
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD or len(self._headers) >= MAX_HEADERS:
            raise BadResponse("its head is too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        status = parser.get_status_code()
        req = self.req
        if req is None:
            raise BadResponse("a response nobody asked for")
        proxy = self.proxy
        if status < 200:
            if status == 101:
                if not req.upgrade:
                    raise BadResponse("101 Switching Protocols to a request without Upgrade")
                self._out.append(proxy.switching_head(status, self._reason, self._headers))
                self.head_sent = True
                self._switching = True
                return
            self._out.append(proxy.interim_head(status, self._reason, self._headers))
            self._interim = True
            return
        head_request = req.method == b"HEAD"
        head = proxy.response_head(req, status, self._reason, self._headers,
                                   no_body=head_request or status in (204, 304))
        self._chunked = head.chunked
        self.until_close = head.until_close
        self.close_client = head.close
        self._keep_alive = parser.should_keep_alive()
        self._out.append(head.data)  # with the body's first part, if it came in the same read
        self.head_sent = True
        if head_request:
            raise _HeadResponseDone

    def on_body(self, body: bytes) -> None:
        if self._chunked:
            self._out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self._out.append(body)

    def on_message_complete(self) -> None:
        if self._interim:  # the final response follows
            self._interim = False
            self._in_head, self._headers, self._reason = True, [], b""
            self._head_size = self._head_fed = 0
            return
        if self._switching:
            return  # HttpParserUpgrade follows
        self.end_body()
        self._complete()

    def end_body(self) -> None:
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self._flush()

    def _flush(self) -> None:
        """One write (one TLS record) for what one read of the target's produced: a small
        response's head and body go out together."""
        out = self._out
        if out:
            self._out = []
            self.conn.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _complete(self) -> None:
        self._flush()
        req, self.req = self.req, None
        assert req is not None
        self.responses += 1
        conn = self.conn
        if not self._keep_alive:
            if conn.upstream is self:
                conn.upstream = None
            self.close()
        conn.finish(req, self.close_client)

    def _switched(self, rest: bytes) -> None:
        self._flush()  # the 101
        req = self.req
        assert req is not None
        self.req = None
        self.relay = True
        self.conn.start_relay(req, self, rest)
