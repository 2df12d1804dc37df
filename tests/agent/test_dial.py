"""The agent's opening handshake (rport.agent.dial) against real TLS servers that answer it well
or badly: a real rportd, and raw servers written here byte for byte."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from rport.agent.dial import HandshakeError, open_websocket
from rport.core.pinning import client_ssl_context
from rport.core.protocol.websocket import SUBPROTOCOL

from ..procs import Server
from ..targets import ThreadedTcpServer
from ..web_targets import Pki

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_of(request: bytes) -> str:
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def tls_server(pki: Pki, answer: Callable[[bytes], bytes]) -> ThreadedTcpServer:
    """A TLS server that reads a request head and writes ``answer(head)``, then waits."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert_file, pki.key_file)

    def handle(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                head += chunk
            tls.sendall(answer(head))
            tls.recv(1)  # until the client goes

    return ThreadedTcpServer(handle)


def dial(port: int, host: str = "127.0.0.1") -> None:
    async def main() -> None:
        ws = await open_websocket(host, port, "/", ssl_context=client_ssl_context(),
                                  subprotocol=SUBPROTOCOL, timeout=10)
        ws.transport.abort()
    asyncio.run(main())


def test_handshake_with_rportd(server: Server) -> None:
    dial(server.agent_port)  # rportd (websockets' server) accepts it


def switching(accept: Callable[[bytes], str] = accept_of, extra: bytes = b"",
              protocol: bytes = SUBPROTOCOL.encode()) -> Callable[[bytes], bytes]:
    def answer(head: bytes) -> bytes:
        return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept(head).encode() + b"\r\n"
                b"Sec-WebSocket-Protocol: " + protocol + b"\r\n" + extra + b"\r\n")
    return answer


@pytest.mark.parametrize(("answer", "message"), [
    (lambda head: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "the server answered HTTP 404"),
    (lambda head: b"SSH-2.0-OpenSSH\r\n\r\n", "the server did not answer HTTP"),
    (switching(accept=lambda head: "bm90IHRoZSByaWdodCBrZXk="), "Sec-WebSocket-Accept does not match"),
    (switching(protocol=b"chat"), "did not accept the rport-py subprotocol"),
    (switching(extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"), "extensions"),
    (lambda head: b"HTTP/1.1 101 OK\r\nX-Long: " + b"a" * 20000, "too long"),
], ids=["404", "not-http", "wrong-accept", "wrong-subprotocol", "extension", "endless-head"])
def test_bad_answers_are_refused(tmp_path: Path, answer: Callable[[bytes], bytes], message: str) -> None:
    pki = Pki(tmp_path / "pki", "localhost", "127.0.0.1")
    with tls_server(pki, answer) as target:
        with pytest.raises(HandshakeError, match=message) as refused:
            dial(target.port)
    assert refused.value.status == (404 if "404" in message else 0)


def test_good_answer_by_name(tmp_path: Path) -> None:
    """By name (sent as SNI), a correct answer opens the link."""
    pki = Pki(tmp_path / "pki", "localhost", "127.0.0.1")
    with tls_server(pki, switching()) as target:
        dial(target.port, "localhost")


def test_a_head_nobody_awaits_any_more_is_not_reported_as_never_retrieved() -> None:
    """A connection that ends after its TLS handshake but before the opening was awaited (its
    timeout cancelled the dial): its error is not logged as "Future exception was never
    retrieved" (seen 11 times in a 10,000-agent storm)."""
    from rport.agent.dial import _Opening

    async def main() -> list[dict[str, object]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        for end in ("eof", "lost"):
            opening = _Opening(loop)
            if end == "eof":
                opening.eof_received()
            else:
                opening.connection_lost(ConnectionResetError("reset by peer"))
            assert opening.head.done()
            del opening
            await asyncio.sleep(0)  # the done callbacks run
        import gc
        gc.collect()
        return reported

    assert asyncio.run(main()) == []
