"""Connections that have not authenticated yet, against a real rportd: idle, slow or greedy ones
cannot keep a real agent out; each is closed by the deadline or the caps with a logged reason.

The attackers are plain sockets in this process (bound to other loopback addresses where the
test needs several source addresses: Linux routes all of 127.0.0.0/8 to the loopback device);
the server and the agent are real ``rportd`` / ``rport`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from rport.core.keys import client_ssl_context

from ..attackers import enough_fds, idle_connections, is_closed, is_open, spread  # noqa: F401
from ..procs import Agent, Server, wait_for

TIMEOUT = 20.0  # bound on every wait for a condition; never reached when things work


def test_agent_connects_while_1000_idle_connections_are_open(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    # A long deadline, so that the attackers stay open for the whole test: the agent must get
    # in because idle connections hold nothing it needs, not because they were closed.
    server = make_server(extra={"server": {"handshake_timeout": "120s"}})
    with idle_connections(server.agent_port, spread(1000, 20)) as attackers:
        make_agent(server, "good")  # waits until the API lists it as connected
        assert all(map(is_open, attackers)), "the server closed idle connections under its caps"
    assert server.api is not None
    assert server.api.get("/status").status_code == 200


def test_stalled_tls_handshakes_do_not_keep_an_agent_out(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    server = make_server(extra={"server": {"handshake_timeout": "120s"}})
    # Each starts a TLS record (the first bytes of a ClientHello) and stalls: more of them than
    # there are TLS handshake slots.
    with idle_connections(server.agent_port, spread(200, 20, "127.0.2")) as attackers:
        for sock in attackers:
            sock.sendall(b"\x16\x03\x01\x02\x00")
        make_agent(server, "good")
        assert server.wait_connected("good")


def test_idle_connections_are_closed_at_the_deadline(make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"server": {"handshake_timeout": "1s"}})
    with idle_connections(server.agent_port, ["127.0.0.1"] * 3) as socks:
        wait_for(lambda: all(map(is_closed, socks)), TIMEOUT, "the server to close them")
    assert server.proc is not None
    server.proc.wait_log(r"agent connection from 127\.0\.0\.1 sent nothing within 1s "
                         r"\(server\.handshake_timeout\), closing")


def test_one_deadline_for_tls_upgrade_and_hello(make_server: Callable[..., Server]) -> None:
    """TLS done, then nothing: the WebSocket upgrade falls under the same deadline."""
    server = make_server(extra={"server": {"handshake_timeout": "1s"}})

    async def main() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.agent_port, ssl=client_ssl_context())
        try:
            # The server closes the connection; what it reads is b"" (or a TLS error).
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()

    asyncio.run(main())
    assert server.proc is not None
    server.proc.wait_log(r"agent connection from 127\.0\.0\.1 did not finish the WebSocket "
                         r"upgrade within 1s \(server\.handshake_timeout\), closing")


def test_opening_request_is_bounded(make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"server": {"handshake_timeout": "60s"}})

    async def main() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.agent_port, ssl=client_ssl_context())
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                for _ in range(100):  # 100 headers of 1 KiB, never a blank line
                    writer.write(b"X-Padding: " + b"a" * 1000 + b"\r\n")
                    await writer.drain()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()

    asyncio.run(main())
    assert server.proc is not None
    server.proc.wait_log(r"agent connection from 127\.0\.0\.1: WebSocket opening request larger "
                         r"than 16384 bytes, closing")


def test_per_address_cap_closes_the_oldest_idle(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    server = make_server(extra={"server": {"max_pending_per_address": 4,
                                           "handshake_timeout": "120s"}})
    with idle_connections(server.agent_port, ["127.0.0.1"] * 6) as socks:
        wait_for(lambda: is_closed(socks[0]) and is_closed(socks[1]), TIMEOUT,
                 "the two oldest to be closed")
        assert all(map(is_open, socks[2:]))
        # An agent from the same address still gets in: it pushes out another idle one.
        make_agent(server, "good")
        wait_for(lambda: is_closed(socks[2]), TIMEOUT, "the next oldest to be closed")
        assert all(map(is_open, socks[3:]))
    assert server.proc is not None
    server.proc.wait_log(r"agent connections from 127\.0\.0\.1: more than 4 in handshake, "
                         r"closing the oldest that sent nothing")


def test_total_cap_closes_the_oldest_of_the_most_represented_address(
        make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"server": {"max_pending_connections": 6,
                                           "handshake_timeout": "120s"}})
    sources = ["127.0.3.1"] * 2 + ["127.0.3.2"] * 3 + ["127.0.3.3"] + ["127.0.3.4"]
    with idle_connections(server.agent_port, sources) as socks:
        # The 7th connection is one too many: the oldest of 127.0.3.2 (3 pending) goes.
        wait_for(lambda: is_closed(socks[2]), TIMEOUT, "the oldest of 127.0.3.2 to be closed")
        assert all(is_open(s) for i, s in enumerate(socks) if i != 2)
    assert server.proc is not None
    server.proc.wait_log(r"pending agent connections: limit of 6 reached "
                         r"\(server\.max_pending_connections\), closing the oldest of 127\.0\.3\.2")


def client_hello() -> bytes:
    """A real TLS ClientHello (made by the ssl module, never finished)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_ssl_context().wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_at_the_total_cap_connections_on_their_way_are_not_pushed_out(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    """A fleet reconnecting at once, one connection per address, each with its handshake under
    way: the next connections wait for one of them to be done instead of closing one (whose
    agent would start again later, its work lost)."""
    server = make_server(extra={"server": {"max_pending_connections": 4,
                                           "handshake_timeout": "120s"}})
    with idle_connections(server.agent_port, spread(4, 1, "127.0.4")) as socks:
        hello = client_hello()
        for sock in socks:  # each gets the server's answer, and never finishes
            sock.sendall(hello)
        wait_for(lambda: all(_answered(sock) for sock in socks), TIMEOUT,
                 "the server to answer each ClientHello")
        agent = make_agent(server, "good", wait=False)
        assert server.proc is not None
        server.proc.wait_log(r"pending agent connections: limit of 4 reached "
                             r"\(server\.max_pending_connections\), the next ones wait")
        assert all(map(is_open, socks))
        socks[0].close()  # one is done: the agent's turn
        assert server.wait_connected("good")
        assert all(map(is_open, socks[1:]))
    assert "Traceback" not in agent.log()


def _answered(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def test_opening_requests_that_cannot_be_upgraded_get_an_http_answer(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    """RFC 6455 §4.2.1's checks, with websockets' status codes; the server goes on."""
    server = make_server()
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    good = {"Host": "x", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": "rport-py"}
    cases = [
        ("GET / HTTP/1.1", {"Host": "x"}, 426),  # a browser, or a health check
        ("POST / HTTP/1.1", good, 405),
        ("GET / HTTP/1.0", good, 505),
        ("GET / HTTP/1.1", {**good, "Upgrade": "h2c"}, 426),
        ("GET / HTTP/1.1", {**good, "Sec-WebSocket-Key": "short"}, 400),
        ("GET / HTTP/1.1", {**good, "Sec-WebSocket-Version": "8"}, 400),
        ("GET / HTTP/1.1", {k: v for k, v in good.items() if k != "Sec-WebSocket-Protocol"}, 400),
        ("GET / HTTP/1.1", {**good, "Sec-WebSocket-Protocol": "chat, other"}, 400),
        ("GET /any/path HTTP/1.1", {**good, "Sec-WebSocket-Protocol": "chat, rport-py",
                                    "Sec-WebSocket-Extensions": "permessage-deflate"}, 101),
    ]

    async def ask(line: str, headers: dict[str, str]) -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.agent_port, ssl=client_ssl_context())
        try:
            writer.write(("\r\n".join([line, *(f"{k}: {v}" for k, v in headers.items())])
                          + "\r\n\r\n").encode())
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        finally:
            writer.close()

    for line, headers, status in cases:
        answer = asyncio.run(ask(line, headers))
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (line, headers, answer)
        if status == 101:
            assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
            assert b"Sec-WebSocket-Protocol: rport-py\r\n" in answer
            assert b"Sec-WebSocket-Extensions" not in answer
    make_agent(server, "good")  # and agents still get in
    assert server.proc is not None
    assert "Traceback" not in server.proc.log()


def test_idle_connections_pushed_out_in_waves_leave_the_server_running(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    """Connections evicted while their socket is watched for a first byte: each socket is
    closed by its own task once no longer watched (closing a watched socket, whose number the
    next accepted connection then takes, brought rportd down without a word)."""
    server = make_server(extra={"server": {"max_pending_per_address": 4,
                                           "handshake_timeout": "120s"}})
    for _ in range(5):
        with idle_connections(server.agent_port, ["127.0.5.1"] * 40) as socks:
            wait_for(lambda: sum(map(is_open, socks)) <= 4, TIMEOUT, "the oldest to be closed")
    make_agent(server, "good")
    assert server.proc is not None and server.proc.alive()
