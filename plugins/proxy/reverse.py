"""The rules of one tunnel's reverse proxy: who may use it, and how heads are rewritten.

Requests come in over TLS; they go to the raw tunnel on 127.0.0.1 with ``scheme`` (an https
target's certificate is not verified: it is usually a device's self-signed one). The tunnel's ACL
(403) and optional basic auth (401) come first; Host is replaced by ``host_header`` when set;
X-Forwarded-For/-Proto/-Host are set; hop-by-hop headers are dropped (and those the Connection
header names); redirects and cookies that name the target's host are rewritten to the proxy's.

Plain functions of bytes: :mod:`.client` and :mod:`.upstream` parse and moves the data, this module only decides
what the heads say, so that it can be tested alone.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import attrs

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection"})
# Request headers the proxy sets itself.
_REPLACED = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_CONNECTION_KEYWORDS = frozenset({b"close", b"keep-alive", b"upgrade"})


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class Request:
    """One request from the client, as parsed (:mod:`.client` fills it in)."""

    __slots__ = ("method", "url", "headers", "keep_alive", "upgrade", "http10", "head_done",
                 "complete", "chunked", "forwarding", "body_sent", "discard", "retried", "body",
                 "early", "error", "host")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True  # the client's: HTTP/1.1 without "Connection: close"
        self.upgrade = False  # an upgrade request (WebSocket)
        self.http10 = False
        self.head_done = False
        self.complete = False  # the whole request (body included) has been read
        self.chunked = False  # the body goes to the target in chunked encoding
        self.forwarding = False  # sent to the target: body parts follow it at once
        self.body_sent = False  # some of its body went to the target (no retry then)
        self.discard = False  # answered by the proxy: body parts are dropped
        self.retried = False
        self.body: list[bytes] = []  # parts read before it became the active request
        self.early = b""  # bytes after an upgrade request: the relay's first, or the next request
        self.error: tuple[int, str] | None = None  # malformed: answered with this, then closed
        self.host = b""  # the client's Host


@attrs.frozen
class Head:
    """A response head for the client and how its body is framed."""

    data: bytes
    chunked: bool  # re-chunk the body (the target's was chunked or delimited by its close)
    until_close: bool  # the target's body ends when it closes the connection
    close: bool  # close the client's connection after this response


class ReverseProxy:
    """One tunnel's proxy settings and rules."""

    def __init__(self, *, scheme: str, raw_port: int, host_header: str, acl: Any,
                 auth_user: str, auth_password: str, on_activity: Callable[[], None],
                 open_stream: Callable[[], Any] | None = None,
                 stream_ended: Callable[[Any], None] | None = None) -> None:
        """``open_stream()`` (with ``stream_ended(stream)`` once it is over): a stream of the
        tunnel's to the target, used instead of a connection to the raw tunnel's listener on
        ``raw_port`` when the target speaks plain HTTP."""
        self.scheme = scheme
        self.open_stream = open_stream if scheme != "https" else None
        self.stream_ended = stream_ended or (lambda stream: None)
        self.raw_port = raw_port
        self.upstream = f"127.0.0.1:{raw_port}"
        self.host_header = host_header
        self._host_header = host_header.encode("latin-1")
        self.acl = acl
        self.auth = (auth_user.encode(), auth_password.encode()) if auth_user else None
        self.touch = on_activity
        self.ssl: ssl.SSLContext | None = None
        if scheme == "https":
            # No CA store is loaded (it would cost 20 ms and a megabyte): nothing is verified.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
            self.ssl = ctx
        # SNI towards an https target: host_header when set (an IP address sends none).
        self.server_hostname = host_header if host_header and self.ssl else ("" if self.ssl else None)

    # -- checks ------------------------------------------------------------------------------------

    def allows(self, source: str) -> bool:
        return self.acl is None or self.acl.allows(source)

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Basic auth against auth_user/auth_password, in constant time (both compared always)."""
        assert self.auth is not None
        value = b""
        for name, v in headers:
            if name.lower() == b"authorization":
                value = v
                break
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return (hmac.compare_digest(user, self.auth[0])
                & hmac.compare_digest(password, self.auth[1]))

    # -- request -----------------------------------------------------------------------------------

    def request_head(self, req: Request, source: str) -> bytes:
        """The head sent to the target. Sets ``req.chunked`` for a body in chunked encoding."""
        host = forwarded = b""
        tokens: set[bytes] = set()
        upgrade = b""
        kept: list[tuple[bytes, bytes, bytes]] = []
        drop_auth = self.auth is not None
        for name, value in req.headers:
            lname = name.lower()
            if lname in _REPLACED:
                if lname == b"host":
                    host = host or value
                elif lname == b"x-forwarded-for":
                    forwarded = forwarded + b", " + value if forwarded else value
            elif lname in HOP_BY_HOP:
                if lname == b"connection":
                    tokens.update(t.strip().lower() for t in value.split(b","))
                elif lname == b"upgrade":
                    upgrade = value
                elif lname == b"transfer-encoding":
                    req.chunked = True
                    kept.append((lname, name, value))  # its codings stand; chunked is redone
            elif lname == b"authorization" and drop_auth:
                continue  # the proxy's own credentials are not the target's business
            else:
                kept.append((lname, name, value))
        tokens -= _CONNECTION_KEYWORDS
        req.host = host
        out = [req.method, b" ", req.url, b" HTTP/1.1\r\nHost: ", self._host_header or host, b"\r\n"]
        for lname, name, value in kept:
            if tokens and lname in tokens:
                continue
            out += (name, b": ", value, b"\r\n")
        out += (b"X-Forwarded-For: ", forwarded + b", " + source.encode() if forwarded else source.encode(),
                b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ", host, b"\r\n")
        if req.upgrade and upgrade:
            out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    # -- response ----------------------------------------------------------------------------------

    def response_head(self, req: Request, status: int, reason: bytes,
                      headers: list[tuple[bytes, bytes]], *, no_body: bool) -> Head:
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
        tokens: set[bytes] = set()
        length = chunked = False
        kept: list[tuple[bytes, bytes, bytes]] = []
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"connection":
                    tokens.update(t.strip().lower() for t in value.split(b","))
                elif lname == b"transfer-encoding":
                    chunked = True
                continue
            if lname == b"content-length":
                length = True
            elif lname == b"location":
                value = self.rewrite_location(value, req.host)
            elif lname == b"set-cookie" and self.host_header:
                value = self.rewrite_cookie(value)
            kept.append((lname, name, value))
        tokens -= _CONNECTION_KEYWORDS
        for lname, name, value in kept:
            if tokens and lname in tokens:
                continue
            if chunked and lname == b"content-length":
                continue  # both: the length is the chunks' (RFC 9112 §6.3)
            out += (name, b": ", value, b"\r\n")
        rechunk = close = False
        if not no_body and (chunked or not length):
            # A chunked body, or one delimited by the target's close: chunked to the client,
            # whose connection stays open; an HTTP/1.0 client gets it delimited by our close.
            if req.http10:
                close = True
            else:
                rechunk = True
                out.append(b"Transfer-Encoding: chunked\r\n")
        if not req.keep_alive:
            close = True
        if close:
            out.append(b"Connection: close\r\n")
        elif req.http10:
            out.append(b"Connection: keep-alive\r\n")
        out.append(b"\r\n")
        return Head(b"".join(out), rechunk, not no_body and not chunked and not length, close)

    def switching_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """A 101 answer to an upgrade request, as the target sent it."""
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
        for name, value in headers:
            out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def interim_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        """A 1xx answer (100 Continue, 103 Early Hints) passed on before the final one."""
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))]
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def rewrite_location(self, value: bytes, client_host: bytes) -> bytes:
        text = value.decode("latin-1")
        parts = urlsplit(text)
        if not parts.netloc:
            return value
        host = client_host.decode("latin-1")
        targets = {self.upstream, self.host_header or host}
        if parts.netloc in targets or parts.hostname in targets:
            return urlunsplit(("https", host, parts.path, parts.query, parts.fragment)).encode("latin-1")
        return value

    def rewrite_cookie(self, value: bytes) -> bytes:
        host = self._host_header.lower()
        kept = [p for p in value.split(b";")
                if p.strip().lower() not in (b"domain=" + host, b"domain=." + host)]
        return b";".join(kept)


def local_response(status: int, text: str, *, head_only: bool = False, close: bool = False,
                   extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """An answer of the proxy's own (an error, a refusal), plain text."""
    body = text.encode()
    out = [b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
           % (status, reason_phrase(status), len(body))]
    for name, value in extra:
        out += (name, b": ", value, b"\r\n")
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    if not head_only:
        out.append(body)
    return b"".join(out)
