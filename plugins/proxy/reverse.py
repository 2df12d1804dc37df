"""The reverse proxy of one tunnel, as an ASGI application.

Requests come in over TLS (uvicorn handles HTTP/1.1, keep-alive, chunked bodies and WebSocket
upgrades); they go to the raw tunnel on 127.0.0.1 with ``scheme`` (an https target's certificate
is not verified: it is usually a device's self-signed one). Bodies are streamed both ways, never
buffered whole. The tunnel's ACL (403) and optional basic auth (401) come first; Host is replaced
by ``host_header`` when set; X-Forwarded-For/-Proto/-Host are set; redirects and cookies that
name the target's host are rewritten to the proxy's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import ssl
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger("rport.plugins.proxy")

IDLE_POOL = 2.0  # seconds an idle proxy keeps its connections to the raw tunnel
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection"}
WS_SKIP = HOP_BY_HOP | {"host", "sec-websocket-key", "sec-websocket-version",
                        "sec-websocket-extensions", "sec-websocket-protocol", "content-length"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ReverseProxy:
    def __init__(self, *, scheme: str, raw_port: int, host_header: str, acl: Any,
                 auth_user: str, auth_password: str, on_activity: Callable[[], None]) -> None:
        self.scheme = scheme
        self.upstream = f"127.0.0.1:{raw_port}"
        self.host_header = host_header
        self.acl = acl
        self.auth = (auth_user, auth_password) if auth_user else None
        self.touch = on_activity
        self.closing = False  # set by ProxyListener.close: requests still running end quietly
        self.client = self._new_client()
        self._inflight = 0
        self._last_used = 0.0
        self._janitor = asyncio.create_task(self._expire_idle_pool())

    @staticmethod
    def _new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=False, follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(None, connect=15.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=32,
                                keepalive_expiry=IDLE_POOL))

    async def _expire_idle_pool(self) -> None:
        """httpx drops expired pooled connections only when the pool is used again; an idle
        proxy would keep its raw-tunnel connections (and so its tunnel) open for ever, never
        reaped and never deletable without force. Close the pool once nothing is in flight."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_POOL / 2)
            if self._last_used and not self._inflight and loop.time() - self._last_used >= IDLE_POOL:
                old, self.client, self._last_used = self.client, self._new_client(), 0.0
                await old.aclose()

    async def aclose(self) -> None:
        self._janitor.cancel()
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        try:
            await self._serve(scope, receive, send)
        except asyncio.CancelledError:
            if not self.closing:
                raise
            # The tunnel is closing (ProxyListener.close): the client's connection is already
            # aborted; ending here keeps the server from logging an error and sending a 500.
        except (httpx.HTTPError, OSError) as exc:
            if not self.closing:
                raise
            log.debug("proxy on %s: request ended as the tunnel closed: %s", self.upstream, exc)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = (scope.get("client") or ("?", 0))[0]
        if self.acl is not None and not self.acl.allows(source):
            log.info("proxy on %s: request from %s refused by the ACL", self.upstream, source)
            await self._deny(scope, send, 403, "Forbidden: your address is not allowed\n")
            return
        if self.auth is not None and not self._authorized(scope):
            await self._deny(scope, send, 401, "Unauthorized\n",
                             [(b"www-authenticate", b'Basic realm="rport tunnel"')])
            return
        self.touch()
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, source)
        else:
            await self._http(scope, receive, send, source)

    # -- checks ------------------------------------------------------------------------------------

    def _authorized(self, scope: Scope) -> bool:
        header = _header(scope, b"authorization")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        assert self.auth is not None
        return (hmac.compare_digest(user.encode(), self.auth[0].encode())
                & hmac.compare_digest(password.encode(), self.auth[1].encode()))

    async def _deny(self, scope: Scope, send: Send, status: int, text: str,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
        body = text.encode()
        if scope["type"] == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "websocket.http.response.start", "status": status, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()), *(headers or [])]})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

    # -- headers -----------------------------------------------------------------------------------

    def _forward_headers(self, scope: Scope, source: str, skip: set[str]) -> list[tuple[str, str]]:
        original_host = _header(scope, b"host")
        forwarded_for = _header(scope, b"x-forwarded-for")
        # The proxy's own basic auth is not the target's business.
        drop = skip | {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
        if self.auth is not None:
            drop.add("authorization")
        out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
               if k.decode("latin-1").lower() not in drop]
        out += [("Host", self.host_header or original_host),
                ("X-Forwarded-For", f"{forwarded_for}, {source}" if forwarded_for else source),
                ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", original_host)]
        return out

    def _rewrite_location(self, value: str, scope: Scope) -> str:
        parts = urlsplit(value)
        if not parts.netloc:
            return value
        targets = {self.upstream, self.host_header or _header(scope, b"host")}
        if parts.netloc in targets or parts.hostname in targets:
            return urlunsplit(("https", _header(scope, b"host"), parts.path, parts.query, parts.fragment))
        return value

    def _rewrite_cookie(self, value: str) -> str:
        if not self.host_header:
            return value
        kept = [p for p in value.split(";")
                if p.strip().lower() != f"domain={self.host_header.lower()}"
                and p.strip().lower() != f"domain=.{self.host_header.lower()}"]
        return ";".join(kept)

    # -- HTTP --------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send, source: str) -> None:
        url = f"{self.scheme}://{self.upstream}{scope.get('raw_path', scope['path'].encode()).decode('latin-1')}"
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = self._forward_headers(scope, source, HOP_BY_HOP)
        has_body = _header(scope, b"content-length") not in ("", "0") or bool(
            _header(scope, b"transfer-encoding"))
        extensions = {"sni_hostname": self.host_header} if self.host_header and self.scheme == "https" else {}
        client = self.client
        request = client.build_request(
            scope["method"], url, headers=headers,
            content=self._body(receive) if has_body else None, extensions=extensions)
        sent = {k.lower() for k, _ in headers}
        for default in ("accept", "accept-encoding", "user-agent"):  # httpx's, not the client's
            if default not in sent and default in request.headers:
                del request.headers[default]
        self._inflight += 1
        try:
            await self._exchange(client, request, scope, send)
        finally:
            self._inflight -= 1
            self._last_used = asyncio.get_running_loop().time()

    async def _exchange(self, client: httpx.AsyncClient, request: httpx.Request, scope: Scope,
                        send: Send) -> None:
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("proxy on %s: %s %s failed: %s", self.upstream, scope["method"], scope["path"], exc)
            await self._deny(scope, send, 502, f"Bad Gateway: {exc.__class__.__name__}\n")
            return
        try:
            out = []
            for key, value in response.headers.raw:
                name = key.decode("latin-1").lower()
                if name in HOP_BY_HOP:
                    continue
                text = value.decode("latin-1")
                if name == "location":
                    text = self._rewrite_location(text, scope)
                elif name == "set-cookie":
                    text = self._rewrite_cookie(text)
                out.append((key, text.encode("latin-1")))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                self.touch()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _body(self, receive: Receive) -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            if body:
                self.touch()
                yield body
            if not message.get("more_body", False):
                return

    # -- WebSocket ---------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, source: str) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        # The URI carries the Host the target must see; the socket goes to the raw tunnel.
        host = self.host_header or _header(scope, b"host") or self.upstream
        url = f"{'wss' if self.scheme == 'https' else 'ws'}://{host}{path}"
        headers = [(k, v) for k, v in self._forward_headers(scope, source, WS_SKIP)
                   if k.lower() not in ("host", "origin")]
        origin = _header(scope, b"origin") or None
        try:
            upstream = await ws_connect(
                url, additional_headers=headers, subprotocols=scope.get("subprotocols") or None,
                origin=origin, ssl=_unverified_context() if self.scheme == "https" else None,
                host="127.0.0.1", port=int(self.upstream.rsplit(":", 1)[1]),
                user_agent_header=None, compression=None, max_size=None, open_timeout=15,
                ping_interval=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else 502
            log.warning("proxy on %s: WebSocket %s failed: %s", self.upstream, path, exc)
            await send({"type": "websocket.http.response.start", "status": status, "headers": []}
                       if "websocket.http.response" in scope.get("extensions", {}) else
                       {"type": "websocket.close", "code": 1011})
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.body", "body": b""})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close(message.get("code", 1000))
                    return
                self.touch()
                data = message.get("bytes")
                await upstream.send(data if data is not None else message.get("text", ""))

        async def upstream_to_client() -> None:
            try:
                async for data in upstream:
                    self.touch()
                    await send({"type": "websocket.send", "bytes": data} if isinstance(data, bytes)
                               else {"type": "websocket.send", "text": data})
            except ConnectionClosed:
                pass
            code = upstream.close_code or 1000
            await send({"type": "websocket.close", "code": code if code != 1005 else 1000})

        tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
