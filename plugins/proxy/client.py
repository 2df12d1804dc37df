"""The proxy's data path, client side: a client's TLS connection and its requests.

:class:`ClientConnection` is the ``asyncio.Protocol`` of a client's connection. httptools (the
llhttp parser, in C) reads its requests; each is checked (ACL, basic auth), its head rewritten
(:mod:`.reverse`) and sent with its body to the target over :class:`Upstream`, a keep-alive
connection to the raw tunnel on 127.0.0.1 opened for this client connection and closed with it.
The target's response is read by httptools' response parser, its head rewritten and passed on
with its body as it arrives (re-chunked when the target's was chunked or ended by its close).
After a ``101 Switching Protocols`` (WebSockets) both connections are relayed as raw bytes.

Requests are handled one at a time, in order; pipelined requests wait, and reading from the
client pauses until they become active. Everything moves in callbacks, without a task per
request. Nothing is buffered without bound: reading from the client pauses while the upstream's
send buffer is full (or it is still connecting), reading from the upstream while the client's is
full; what the parser holds is bounded by ``MAX_HEAD`` plus one read.

Errors are answered with the right status and a plain-text body: 400 for a malformed request,
414/431 for oversized ones (then the connection closes), 502 when the target cannot be reached
or answers something that is not HTTP. A response cut in the middle cuts the client's connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import httptools

from .reverse import Request, ReverseProxy, local_response
from .upstream import MAX_HEAD, MAX_HEADERS, Upstream

log = logging.getLogger("rport.plugins.proxy")

KEEP_ALIVE = 5.0  # an idle client connection (and its upstream) is closed after this
HEAD_TIMEOUT = 30.0  # a request head must arrive within this
RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


class _Refusal(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


class Home:
    """What the connections of one listener share: their set, and whether the listener closed."""

    def __init__(self, proxy: ReverseProxy) -> None:
        self.proxy = proxy
        self.connections: set[ClientConnection] = set()
        self.closed = False


class ClientConnection(asyncio.Protocol):
    def __init__(self, home: Home, loop: asyncio.AbstractEventLoop) -> None:
        self.home = home
        self.proxy = home.proxy
        self.loop = loop
        self.transport: Any = None
        self.source = "?"
        self.allowed = True
        self.upstream: Upstream | None = None
        self.idle_since = loop.time()
        self.writing_paused = False
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[Request] = collections.deque()
        self._parsing: Request | None = None
        self._head_size = 0
        self._in_head = True  # between requests, or in a request's head
        self._head_fed = 0  # bytes fed to the parser since the head began
        self._pauses: set[str] = set()
        self._relay = False
        self._closing = False

    # -- the client's transport ----------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.home.closed:
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else "?"
        self.allowed = self.proxy.allows(self.source)
        self.home.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.home.connections.discard(self)
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def eof_received(self) -> bool:
        return False  # TLS cannot half-close: the client is done

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._relay:
            upstream = self.upstream
            if upstream is not None:
                upstream.write(data)
            return
        if self._in_head:
            self._head_fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            req = self._parsing
            rest = bytes(data[exc.args[0]:])
            if req is not None and req in self._queue:
                req.early = rest
                self._pause("upgrade")  # nothing more is read until the target answers
            elif rest and not self._closing:
                self.data_received(rest)  # refused already: finish() made a new parser
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refusal):
                self._broken(cause.status, cause.text)
            else:
                log.error("proxy on %s: request from %s failed", self.proxy.upstream, self.source,
                          exc_info=cause or exc)
                self._broken(500, "Internal Server Error\n")
            return
        except httptools.HttpParserError as exc:
            self._broken(400, f"Bad Request: {exc}\n")
            return
        if self._in_head and self._head_fed > MAX_HEAD:
            self._broken(431, "Request Header Fields Too Large\n")

    # -- the request parser's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        req = Request()
        self._parsing = req
        self._queue.append(req)
        self._head_size = 0
        if len(self._queue) > 1:
            self._pause("pipelined")

    def on_url(self, url: bytes) -> None:
        req = self._parsing
        assert req is not None
        req.url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _Refusal(414, "URI Too Long\n")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._parsing
        assert req is not None
        if req.head_done:
            return  # a trailer of a chunked body: not passed on
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD or len(req.headers) >= MAX_HEADERS:
            raise _Refusal(431, "Request Header Fields Too Large\n")
        req.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self._parsing
        assert req is not None
        parser = self._parser
        req.head_done = True
        req.method = parser.get_method()
        req.keep_alive = parser.should_keep_alive()
        req.upgrade = parser.should_upgrade()
        req.http10 = parser.get_http_version() == "1.0"
        self._in_head = False
        if req is self._queue[0]:
            self._start(req)

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        assert req is not None
        if req.forwarding:
            self._send_body(req, body)
        elif not req.discard:
            req.body.append(body)  # pipelined: at most what one read held (reading paused)

    def on_message_complete(self) -> None:
        req = self._parsing
        assert req is not None
        req.complete = True
        self._in_head = True
        self._head_fed = 0
        if req.forwarding and req.chunked and self.upstream is not None:
            self.upstream.write(b"0\r\n\r\n")

    # -- requests ----------------------------------------------------------------------------------

    def _start(self, req: Request) -> None:
        """``req`` became the active request: answer it or send it to the target."""
        if self._closing:
            return
        proxy = self.proxy
        if req.error is not None:
            self._respond(req, *req.error, close=True)
            return
        if not self.allowed:
            log.info("proxy on %s: request from %s refused by the ACL", proxy.upstream, self.source)
            self._respond(req, 403, "Forbidden: your address is not allowed\n")
            return
        if proxy.auth is not None and not proxy.authorized(req.headers):
            self._respond(req, 401, "Unauthorized\n",
                          extra=((b"www-authenticate", b'Basic realm="rport tunnel"'),))
            return
        if req.method == b"CONNECT":
            self._respond(req, 405, "Method Not Allowed: CONNECT is not proxied\n", close=True)
            return
        proxy.touch()
        head = proxy.request_head(req, self.source)
        upstream = self.upstream
        fresh = upstream is None
        if upstream is None:
            upstream = self.upstream = Upstream(self)
        upstream.begin(req)
        upstream.write(head)  # held until a fresh upstream is connected
        req.forwarding = True
        if req.body:
            parts, req.body = req.body, []
            for part in parts:
                self._send_body(req, part)
        if req.complete and req.chunked:
            upstream.write(b"0\r\n\r\n")
        if len(self._queue) <= 1:
            self._unpause("pipelined")
        if fresh:
            upstream.connect()  # last: a failure answers req (502) before it returns

    def _send_body(self, req: Request, body: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        req.body_sent = True
        if req.chunked:
            upstream.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            upstream.write(body)

    def _respond(self, req: Request, status: int, text: str, *, close: bool = False,
                 extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer ``req`` with the proxy's own response; the connection closes after it if the
        client asked, or if the request's body is not all read (it is not read further)."""
        close = close or not req.keep_alive or not req.complete
        if not req.complete:
            req.discard = True
        if self.transport is not None and not self._closing:
            self.transport.write(local_response(status, text, head_only=req.method == b"HEAD",
                                                close=close, extra=extra))
        self.finish(req, close)

    def finish(self, req: Request, close: bool) -> None:
        """``req`` has been answered: go on with the next one, or close."""
        queue = self._queue
        if queue and queue[0] is req:
            queue.popleft()
        self.idle_since = self.loop.time()
        if close or self._closing:
            self.close()
            return
        if req.upgrade:
            # Not switched: the parser stopped at the upgrade; a new one reads what follows.
            self._parser = httptools.HttpRequestParser(self)
            self._in_head, self._head_fed = True, 0
            early, req.early = req.early, b""
            self._unpause("upgrade")
            if early:
                self.data_received(early)
                return
        if len(queue) <= 1:
            self._unpause("pipelined")
        if queue and queue[0].head_done:
            self._start(queue[0])

    def _broken(self, status: int, text: str) -> None:
        """A malformed or oversized request: nothing more is read; it is answered in its turn
        (after the responses to the requests before it), then the connection closes."""
        self._pause("broken")
        req = self._parsing
        if req is not None and req.forwarding and not req.complete:
            # Broken in the middle of a body the target is reading: both are cut.
            log.info("proxy on %s: request from %s cut: %s", self.proxy.upstream, self.source,
                     text.strip())
            self.abort()
            return
        if req is None or req.complete or req not in self._queue:
            req = Request()
            self._queue.append(req)
        self._parsing = None
        req.error = (status, text)
        req.head_done = req.complete = True
        req.keep_alive = False
        if req is self._queue[0]:
            self._start(req)

    # -- relay (after 101 Switching Protocols) -----------------------------------------------------

    def start_relay(self, req: Request, upstream: Upstream, rest: bytes) -> None:
        self._relay = True
        queue = self._queue
        if queue and queue[0] is req:
            queue.popleft()
        if rest:
            self.transport.write(rest)
        if req.early:
            upstream.write(req.early)
            req.early = b""
        self._pauses.clear()
        if not self._closing:
            self.transport.resume_reading()

    # -- the upstream's end ------------------------------------------------------------------------

    def upstream_ready(self) -> None:
        self._unpause("connecting")

    def upstream_lost(self, upstream: Upstream, reason: str, *, retry: bool = True) -> None:
        """The connection to the raw tunnel ended (or could not be made) while it was ours."""
        if self.upstream is upstream:
            self.upstream = None
        self._unpause("connecting")
        self._unpause("upstream")
        if self._closing:
            return
        if self._relay:
            self.close()
            return
        req = upstream.req
        if req is None:
            return  # idle: the next request opens another
        upstream.req = None
        if upstream.head_sent:
            if upstream.until_close:  # the target's body ended with its connection
                upstream.end_body()
                self.finish(req, upstream.close_client)
                return
            log.info("proxy on %s: response to %s %s cut: %s", self.proxy.upstream,
                     req.method.decode("latin-1"), req.url.decode("latin-1")[:200], reason)
            self.abort()
            return
        if (retry and upstream.responses and not req.retried and not req.body_sent
                and not req.upgrade and req.method in RETRYABLE):
            # The target closed an idle keep-alive connection as the request went out on it.
            req.retried = True
            req.forwarding = False
            self._start(req)
            return
        log.warning("proxy on %s: %s %s from %s failed: %s", self.proxy.upstream,
                    req.method.decode("latin-1"), req.url.decode("latin-1")[:200], self.source,
                    reason)
        self._respond(req, 502, f"Bad Gateway: {reason}\n")

    # -- flow control and closing --------------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if not self._pauses and not self._closing:
            self.transport.pause_reading()
        self._pauses.add(reason)

    def _unpause(self, reason: str) -> None:
        if reason in self._pauses:
            self._pauses.discard(reason)
            if not self._pauses and not self._closing:
                self.transport.resume_reading()

    def pause_for_upstream(self) -> None:
        self._pause("upstream")

    def resume_for_upstream(self) -> None:
        self._unpause("upstream")

    def close(self) -> None:
        """Close after what was written has gone out."""
        self._closing = True
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None

    def check_idle(self, now: float) -> None:
        """Close a connection idle between requests for KEEP_ALIVE, or one whose request head
        takes longer than HEAD_TIMEOUT to arrive (called about once a second)."""
        if self._relay or self._closing:
            return
        queue = self._queue
        if not queue:
            if now - self.idle_since > KEEP_ALIVE:
                self.close()
        elif not queue[0].head_done and now - self.idle_since > HEAD_TIMEOUT:
            log.info("proxy on %s: request head from %s too slow, closing", self.proxy.upstream,
                     self.source)
            self.close()


