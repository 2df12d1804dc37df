"""Real web targets for the HTTPS tunnel proxy tests: one Starlette app served by uvicorn in a
background thread of the test process, plain HTTP or HTTPS (a self-signed certificate the proxy
does not verify), with HTTP routes and a WebSocket echo on one port; and a test PKI (trustme).

Routes:

* ``/echo-headers``: the request as JSON (method, path, query, headers as ``[name, value]`` pairs
  in order, the TCP peer, the scheme);
* ``/redirect``: 302 to ``http://<its own Host>/landed``; ``/redirect-relative``: 302 to
  ``/landed``; ``/landed``: ``landed``;
* ``/set-cookie``: ``plain=1`` without a Domain and ``scoped=2; Domain=<the Host's name>``;
* ``/chunked?n=N``: a streamed response of N chunks (no Content-Length: chunked encoding);
* ``/upload?key=K``: reads the streamed request body, answers its SHA-256 and length as JSON;
  ``received[K]`` counts the bytes received so far while it reads;
* ``/gated``: sends ``first``, then waits (up to 30 s) for ``gate`` to be set before it sends
  ``second`` and ends;
* ``/big?mb=N``: N MiB of deterministic bytes (:func:`big_chunk`), streamed, with Content-Length;
* ``/index.html``: a page whose JavaScript writes :data:`JS_TEXT` into the DOM once loaded, opens
  a WebSocket to ``/ws`` on its own origin and writes the echo of :data:`WS_TEXT` into the DOM;
* ``/ws``: a WebSocket echo (text and binary; the first offered subprotocol is accepted);
  ``/ws-close``: a WebSocket that closes with code 4001 after the first message.

Also :class:`HeadlessChromium`, a headless Chromium driven over the DevTools protocol.

Every HTTP request and WebSocket handshake the target receives is recorded in ``requests`` (with
its headers and TCP peer); ``peers`` holds the distinct TCP peers that sent requests, i.e. the
number of connections requests came on. The server listens (on a socket bound before the thread
starts) when the constructor returns; ``close()`` stops it and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.sync.client import connect as ws_connect

from .procs import wait_for

LOOPBACK = "127.0.0.1"
MIB = 1 << 20
JS_TEXT = "rendered-by-javascript-7f3a"
WS_TEXT = "hello-over-websocket-51c2"

# -- deterministic big bodies ------------------------------------------------------------------

_BLOCK = hashlib.shake_256(b"rport proxy test block").digest(MIB)


def big_chunk(i: int) -> bytes:
    """MiB number ``i`` of ``/big``: a fixed pseudo-random block whose first 8 bytes are ``i``."""
    return struct.pack(">Q", i) + _BLOCK[8:]


def big_sha256(mb: int) -> str:
    digest = hashlib.sha256()
    for i in range(mb):
        digest.update(big_chunk(i))
    return digest.hexdigest()


# -- PKI -----------------------------------------------------------------------------------------

class Pki:
    """A test CA (trustme) and a certificate for ``names`` issued by it, written as PEM files
    into ``directory``: ``ca_file``, ``cert_file`` (leaf and chain), ``key_file``."""

    def __init__(self, directory: Path, *names: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert(*(names or ("localhost", LOOPBACK)))
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "cert.pem"
        self.key_file = directory / "key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems))
        self.leaf.private_key_pem.write_to_path(str(self.key_file))

    @property
    def cert_der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.leaf.cert_chain_pems[0].bytes().decode())

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


# -- the app -----------------------------------------------------------------------------------

INDEX_HTML = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>rport proxy test page</title></head>
<body>
<h1>static part</h1>
<p id="js">js not run</p>
<p id="ws">no websocket echo</p>
<script>
window.addEventListener("load", function () {
  document.getElementById("js").textContent = "%(js)s";
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  var ws = new WebSocket(url);
  ws.onopen = function () { ws.send("%(ws)s"); };
  ws.onmessage = function (event) {
    document.getElementById("ws").textContent = "echo:" + event.data;
    ws.close();
  };
  ws.onerror = function () { document.getElementById("ws").textContent = "websocket error"; };
});
</script>
</body>
</html>
""" % {"js": JS_TEXT, "ws": WS_TEXT}


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # type: ignore[override]  # not the main thread
        yield


class WebTarget:
    """The target app on 127.0.0.1:<port chosen by the OS>, HTTPS when ``tls`` (cert, key); it
    closes connections idle for ``keep_alive`` seconds."""

    def __init__(self, tls: tuple[Path, Path] | None = None, *, keep_alive: float = 60) -> None:
        self.scheme = "https" if tls else "http"
        self.requests: list[dict[str, Any]] = []
        self.peers: set[tuple[str, int]] = set()
        self.gate = threading.Event()  # /gated's second part waits for it
        self.received: dict[str, int] = {}  # /upload?key=K: bytes of K's body received so far
        app = Starlette(routes=[
            Route("/echo-headers", self._echo_headers, methods=["GET", "POST", "PUT", "HEAD"]),
            Route("/redirect", self._redirect),
            Route("/redirect-relative", lambda r: RedirectResponse("/landed", 302)),
            Route("/landed", lambda r: PlainTextResponse("landed")),
            Route("/set-cookie", self._set_cookie),
            Route("/chunked", self._chunked),
            Route("/upload", self._upload, methods=["POST", "PUT"]),
            Route("/big", self._big),
            Route("/gated", self._gated),
            Route("/held", self._held),
            Route("/index.html", lambda r: HTMLResponse(INDEX_HTML)),
            Route("/small", lambda r: PlainTextResponse("x" * 100)),
            WebSocketRoute("/ws", self._ws),
            WebSocketRoute("/ws-close", self._ws_close),
        ])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(512)
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(
            self._recording(app), log_config=None, access_log=False, lifespan="off",
            ws="websockets-sansio", http="h11", loop="asyncio", server_header=False,
            timeout_keep_alive=keep_alive, timeout_graceful_shutdown=2, proxy_headers=False,
            ssl_certfile=str(tls[0]) if tls else None, ssl_keyfile=str(tls[1]) if tls else None)
        self.server = _ThreadServer(config)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"web-target-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the web target did not start: {self._error!r}")
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # reported by the constructor or close(), not the thread
            self._error = exc

    @property
    def url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recording ---------------------------------------------------------------------------------

    def _recording(self, app: Any) -> Any:
        async def recorded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                client = tuple(scope.get("client") or ("?", 0))
                self.peers.add(client)  # type: ignore[arg-type]
                self.requests.append({
                    "type": scope["type"], "path": scope["path"], "client": client,
                    "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]})
            await app(scope, receive, send)
        return recorded

    def last(self, path: str) -> dict[str, Any]:
        return next(r for r in reversed(self.requests) if r["path"] == path)

    # -- routes ------------------------------------------------------------------------------------

    async def _echo_headers(self, request: Request) -> Response:
        return JSONResponse({
            "method": request.method, "path": request.url.path, "query": request.url.query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "client": list(request.scope.get("client") or ()), "scheme": request.scope["scheme"]})

    async def _redirect(self, request: Request) -> Response:
        return RedirectResponse(f"http://{request.headers['host']}/landed", 302)

    async def _set_cookie(self, request: Request) -> Response:
        host = request.headers["host"].rsplit(":", 1)[0] if not request.headers["host"].endswith("]") \
            else request.headers["host"]
        response = PlainTextResponse("cookies set")
        response.set_cookie("plain", "1", path="/")
        response.set_cookie("scoped", "2", path="/", domain=host)
        return response

    async def _chunked(self, request: Request) -> Response:
        n = int(request.query_params.get("n", "5"))

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(n):
                yield f"chunk {i} of {n}\n".encode()
                await asyncio.sleep(0.01)  # separate writes, so separate chunks on the wire
        return StreamingResponse(chunks(), media_type="text/plain")

    async def _upload(self, request: Request) -> Response:
        digest, total = hashlib.sha256(), 0
        key = request.query_params.get("key", "")
        async for chunk in request.stream():
            digest.update(chunk)
            total += len(chunk)
            self.received[key] = total
        return JSONResponse({"sha256": digest.hexdigest(), "length": total,
                             "content_length": request.headers.get("content-length"),
                             "transfer_encoding": request.headers.get("transfer-encoding")})

    async def _gated(self, request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"first\n"
            deadline = time.monotonic() + 30
            while not self.gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            yield b"second\n" if self.gate.is_set() else b"gate never opened\n"
        return StreamingResponse(body(), media_type="text/plain")

    async def _held(self, request: Request) -> Response:
        """Answers only once the gate opens (at most 30 s): a request still waiting on the
        target, before any byte of its response."""
        deadline = time.monotonic() + 30
        while not self.gate.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return PlainTextResponse("held")

    async def _big(self, request: Request) -> Response:
        mb = int(request.query_params.get("mb", "1"))

        async def body() -> AsyncIterator[bytes]:
            for i in range(mb):
                yield big_chunk(i)
        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"content-length": str(mb * MIB)})

    async def _ws(self, websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=offered[0] if offered else None)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
                else:
                    await websocket.send_text(message.get("text") or "")
        except WebSocketDisconnect:
            return


    async def _ws_close(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.close(code=4001, reason="done")


# -- a browser -----------------------------------------------------------------------------------

def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class HeadlessChromium:
    """Headless Chromium driven over the DevTools protocol (a WebSocket to the page), so that a
    test can wait for what a page renders instead of sleeping. ``extra_args`` are added to the
    command line (e.g. the certificate options)."""

    def __init__(self, binary: str, profile: Path, extra_args: Iterable[str] = ()) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = profile.parent / f"{profile.name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             *extra_args, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        self._cdp: Any = None
        try:
            port_file = profile / "DevToolsActivePort"  # Chromium writes its port there

            def port() -> int | None:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chromium exited ({self.proc.returncode}): "
                                       f"{self.log_path.read_text(errors='replace')[-2000:]}")
                text = port_file.read_text() if port_file.exists() else ""
                return int(text.split()[0]) if text.strip() else None
            devtools = wait_for(port, 60, "chromium's DevTools port")
            pages = wait_for(lambda: [t for t in httpx.get(f"http://127.0.0.1:{devtools}/json/list",
                                                           timeout=10, trust_env=False).json()
                                      if t["type"] == "page"], 30, "chromium's page")
            self._cdp = self._stack.enter_context(
                ws_connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        except BaseException:
            self.close()
            raise

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are skipped."""
        call_id = next(self._ids)
        self._cdp.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._cdp.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def headers_of(echoed: dict[str, Any]) -> dict[str, list[str]]:
    """The headers of an ``/echo-headers`` answer, by lower-case name."""
    out: dict[str, list[str]] = {}
    for name, value in echoed["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def json_of(text: str | bytes) -> Any:
    return json.loads(text)
