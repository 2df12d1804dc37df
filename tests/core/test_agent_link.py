"""The agent link end to end, with real rportd and rport processes: reconnection across a server
restart, fingerprint pinning, credentials and their throttling, duplicate ids, dead peers, and
protocol version negotiation."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
from typing import Any, Callable

import pytest
from rport.core.confload import HostPort
from rport.core.keys import client_ssl_context
from rport.core.protocol import SUPPORTED_PROTOCOLS
from rport.core.protocol.frames import T, decode, encode, encode_json
from rport.core.server import _bind
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from ..procs import Agent, Server, wait_for
from ..services import both_databases

MakeAgent = Callable[..., Agent]


def status(server: Server) -> dict[str, Any]:
    resp = server.api.get("/status")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def listed_ids(server: Server) -> list[str]:
    resp = server.api.get("/clients")
    assert resp.status_code == 200, resp.text
    return [c["id"] for c in resp.json()["data"]]


@both_databases
def test_server_restart_keeps_clients_and_agents_reconnect(server: Server,
                                                           make_agent: MakeAgent) -> None:
    stayer = make_agent(server, "stayer")
    quitter = make_agent(server, "quitter", args=["--tag", "persisted", "--label", "k: v",
                                                  "--name", "Quitter"])
    quitter.stop()
    before = server.wait_disconnected("quitter")
    assert isinstance(before["disconnected_at"], str)

    server.stop()
    stayer.proc.wait_log(r"disconnected from ")
    # Both sides say why: the server closed the link itself, before its WebSocket server's close.
    assert "client stayer disconnected: server stopping" in server.log()
    assert "peer closed the connection (1000: server stopping)" in stayer.log(), stayer.log()
    server.start()

    # The running agent comes back by itself; the stopped one is restored from SQLite.
    server.wait_connected("stayer")
    after = server.client("quitter")
    assert after is not None
    assert after["connection_state"] == "disconnected"
    assert after["disconnected_at"] == before["disconnected_at"]
    assert (after["name"], after["tags"], after["labels"]) == ("Quitter", ["persisted"], {"k": "v"})
    st = status(server)
    assert (st["clients_connected"], st["clients_disconnected"]) == (1, 1)
    assert sorted(listed_ids(server)) == ["quitter", "stayer"]
    # (The server may list it a moment before the agent logs its side of the handshake.)
    wait_for(lambda: len(re.findall(r"connected to \S+ as client stayer", stayer.log())) == 2,
             what="the agent's second connection in its log")
    assert "2 disconnected client(s) restored from the store" in server.log()  # both, then one came back


def test_fingerprint_pinning(server: Server, make_agent: MakeAgent) -> None:
    wrong = make_agent(server, "wrong-fp", fingerprint="aa:bb:cc:dd:ee:ff:00:11", wait=False)
    short = make_agent(server, "short-fp", fingerprint=server.fingerprint[:7], wait=False)
    wrong.proc.wait_log(r"server fingerprint mismatch: expected aa:bb:cc:dd:ee:ff:00:11")
    short.proc.wait_log(r"server fingerprint mismatch")  # fewer than 8 characters never match
    assert server.fingerprint in wrong.log()  # the log names the key actually presented

    st = status(server)
    assert st["fingerprint"] == server.fingerprint
    assert st["fingerprint_sha256"].startswith("SHA256:")
    make_agent(server, "sha-fp", fingerprint=st["fingerprint_sha256"])
    make_agent(server, "prefix-fp", fingerprint=server.fingerprint[:8])
    make_agent(server, "upper-fp", fingerprint=server.fingerprint[:17].upper())
    unpinned = make_agent(server, "no-fp", fingerprint=None)
    assert "no fingerprint given" in unpinned.log()
    assert server.fingerprint in unpinned.log()  # the warning says what to pin

    # Retries keep failing, and the mismatching agents never sent a credential: the server saw
    # no hello from them at all.
    wait_for(lambda: wrong.log().count("fingerprint mismatch") >= 2, what="a second attempt")
    assert sorted(listed_ids(server)) == ["no-fp", "prefix-fp", "sha-fp", "upper-fp"]
    log = server.log()
    for cid in ("wrong-fp", "short-fp"):
        assert f"client {cid} " not in log
    assert "connected from" in log  # (the good ones did connect)
    assert "authentication failed" not in log
    assert not re.search(r"agent from \S+ refused", log)
    assert "no hello within" not in log
    assert "authentication failed" not in wrong.log()


def test_bad_credentials_refused(server: Server, make_agent: MakeAgent) -> None:
    bad = make_agent(server, "badpass", auth="user1:wrong", wait=False)
    bad.proc.wait_log(r"the server refused this agent: authentication failed for id 'user1'")
    bad.stop()
    server.proc.wait_log(r"agent from 127\.0\.0\.1 refused: authentication failed for id 'user1'")
    unknown = make_agent(server, "unknown-id", auth="nobody:1234", wait=False)
    unknown.proc.wait_log(r"authentication failed for id 'nobody'")
    unknown.stop()
    assert listed_ids(server) == []
    # The default client_login_wait is short: once it has passed, the right password works.
    make_agent(server, "goodpass")
    assert listed_ids(server) == ["goodpass"]
    assert "badpass" not in listed_ids(server)


def test_failed_login_throttles_even_correct_credentials(make_server: Callable[..., Server],
                                                          make_agent: MakeAgent) -> None:
    server = make_server(extra={"server": {"client_login_wait": "30s"}})
    bad = make_agent(server, "badpass", auth="user1:wrong", wait=False)
    bad.proc.wait_log(r"authentication failed for id 'user1'")
    bad.stop()

    late = make_agent(server, "latecomer", auth="user1:1234", wait=False)
    late.proc.wait_log(r"the server refused this agent: a login from 127\.0\.0\.1 failed just "
                       r"now \(server\.client_login_wait\); try again in \d+s")
    server.proc.wait_log(r"refused: a login from 127\.0\.0\.1 failed just now")
    # The agent honours the server's retry_after instead of hammering it.
    late.proc.wait_log(r"reconnecting in (2\d|30)\.\ds")
    assert listed_ids(server) == []
    assert "connected to" not in late.log()


def test_duplicate_id_refused(server: Server, make_agent: MakeAgent) -> None:
    first = make_agent(server, "twin", args=["--name", "First"])
    second = make_agent(server, "twin", args=["--name", "Second"], wait=False)
    second.proc.wait_log(r"the server refused this agent: client is already connected: First \[twin\]")
    client = server.client("twin")
    assert client["connection_state"] == "connected" and client["name"] == "First"
    assert "disconnected from" not in first.log()
    assert first.proc.alive()
    st = status(server)
    assert (st["clients_connected"], st["clients_disconnected"]) == (1, 0)


@pytest.mark.parametrize("client_id, shown", [("a/b", "'/'"), ("two\nlines", "'\\n'"),
                                              ("what?", "'?'")])
def test_client_id_that_is_no_path_segment_is_refused(server: Server, make_agent: MakeAgent,
                                                        client_id: str, shown: str) -> None:
    """An id the API could not address (/clients/{id}) or that would split a log line."""
    agent = make_agent(server, client_id, wait=False)
    agent.proc.wait_log(r"the server refused this agent: invalid hello: client id .* has the character "
                        + re.escape(shown))
    assert status(server)["clients_connected"] == 0
    agent.stop()


def test_long_name_is_refused_with_its_reason(server: Server, make_agent: MakeAgent) -> None:
    agent = make_agent(server, "longname", args=["--name", "N" * 1025], wait=False)
    agent.proc.wait_log(r"invalid hello: client\.name longer than 1024 characters")
    agent.stop()


def test_killed_agent_is_noticed(server: Server, make_agent: MakeAgent) -> None:
    killed = make_agent(server, "killed")
    survivor = make_agent(server, "survivor")
    killed.stop(signal.SIGKILL)
    gone = wait_for(lambda: (c := server.client("killed")) and c["connection_state"] == "disconnected"
                    and isinstance(c["disconnected_at"], str) and c,
                    timeout=30, what="killed to be disconnected with its disconnected_at")
    assert gone["disconnected_at"].endswith("Z")
    assert server.client("survivor")["connection_state"] == "connected"
    assert survivor.proc.alive() and "disconnected from" not in survivor.log()
    st = status(server)
    assert (st["clients_connected"], st["clients_disconnected"]) == (1, 1)


async def _welcomed_links(server: Server, ids: list[str]) -> list[Any]:
    """Raw agent links (a HELLO answered by WELCOME) for each id."""
    async def one(cid: str) -> Any:
        ws = await ws_connect(f"wss://{server.agent_url}/", ssl=client_ssl_context(),
                              subprotocols=["rport-py"], open_timeout=10)
        hello = _hello([1])
        hello["client"].update(id=cid, session_id=f"session-{cid}")
        await ws.send(encode_json(T.HELLO, 0, hello))
        ftype, _, _ = decode(await asyncio.wait_for(ws.recv(), 10))
        assert ftype is T.WELCOME
        return ws
    return list(await asyncio.gather(*(one(cid) for cid in ids)))


def test_disconnected_clients_always_have_disconnected_at(server: Server) -> None:
    """While agents drop off (their TCP connections die, as with kill -9), every answer of the
    API is consistent: a client reported "disconnected" has its disconnected_at. The moment in
    which that could go wrong is short, so many links die at once while many requests are in
    flight."""
    host, port = server.api_url.rsplit("//", 1)[1].rsplit(":", 1)
    auth = base64.b64encode(b"admin:foobaz").decode()
    request = (f"GET /api/v1/clients HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
               "Connection: close\r\n\r\n").encode()
    observed: list[tuple[str, str, Any]] = []

    async def get_clients() -> list[dict[str, Any]]:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(request)
            raw = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return json.loads(body)["data"]

    async def poller(stop: asyncio.Event) -> int:
        polls = 0
        while not stop.is_set():
            docs = await get_clients()
            observed.extend((d["id"], d["connection_state"], d["disconnected_at"]) for d in docs)
            polls += 1
        return polls

    async def all_gone(ids: list[str]) -> bool:
        docs = {d["id"]: d for d in await get_clients()}
        return all(docs[cid]["connection_state"] == "disconnected"
                   and isinstance(docs[cid]["disconnected_at"], str) for cid in ids)

    async def drop_links(ids: list[str]) -> None:
        links = await _welcomed_links(server, ids)
        stop = asyncio.Event()
        pollers = [asyncio.create_task(poller(stop)) for _ in range(24)]
        try:
            start = len(observed)
            while len(observed) < start + 48 * len(ids):  # until the pollers are all busy
                await asyncio.sleep(0.005)
            for ws in links:
                ws.transport.abort()  # the connection dies without a close handshake
            deadline = asyncio.get_running_loop().time() + 30
            while not await all_gone(ids):
                assert asyncio.get_running_loop().time() < deadline, "links not noticed as gone"
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.gather(*pollers)
            for ws in links:
                await asyncio.wait_for(ws.wait_closed(), 10)

    ids: list[str] = []
    for batch in range(10):
        batch_ids = [f"link-{batch}-{n}" for n in range(10)]
        ids += batch_ids
        asyncio.run(drop_links(batch_ids))
    inconsistent = [o for o in observed if o[1] == "disconnected" and o[2] is None]
    assert not inconsistent, (f"{len(inconsistent)} of {len(observed)} client documents said "
                              f"disconnected with disconnected_at null: {inconsistent[:3]}")
    st = status(server)
    assert (st["clients_connected"], st["clients_disconnected"]) == (0, len(ids))


def test_frozen_agent_is_dropped_by_keepalive(make_server: Callable[..., Server],
                                              make_agent: MakeAgent) -> None:
    # A frozen agent keeps its TCP connection open: only the server's keepalive pings can find
    # out that it is gone. Short intervals keep the test quick.
    server = make_server(extra={"server": {"keep_alive": "1s", "keep_alive_timeout": "2s"}})
    frozen = make_agent(server, "frozen")
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        server.wait_disconnected("frozen", timeout=30)
        server.proc.wait_log(r"client frozen disconnected: keepalive timeout")
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    # Once it runs again it finds its link closed and reconnects by itself.
    server.wait_connected("frozen", timeout=30)
    st = status(server)
    assert (st["clients_connected"], st["clients_disconnected"]) == (1, 0)


def test_agent_notices_a_frozen_server_by_keepalive(make_server: Callable[..., Server],
                                                  make_agent: MakeAgent) -> None:
    # The other side: a frozen server keeps the TCP connection open; only the agent's own
    # pings (connection.keep_alive / keep_alive_timeout) can tell that it is gone.
    server = make_server()
    agent = make_agent(server, "watcher", config={"connection": {
        "keep_alive": "1s", "keep_alive_timeout": "2s"}})
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        agent.proc.wait_log(r"disconnected from wss://\S+: keepalive timeout", timeout=30)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    # The server thaws, and the agent is back by itself.
    agent.proc.wait_log(r"(?s)keepalive timeout.*connected to wss://", timeout=30)
    server.wait_connected("watcher", timeout=30)


async def _raw_hello(server: Server, payload: Any, *, raw_frame: bytes | None = None
                     ) -> tuple[T | None, dict[str, Any] | None, int | None]:
    """Send one first frame as an agent would; return the answer frame type, its JSON and the
    close code."""
    url = f"wss://{server.agent_url}/"
    async with ws_connect(url, ssl=client_ssl_context(), subprotocols=["rport-py"],
                          open_timeout=10) as ws:
        await ws.send(raw_frame if raw_frame is not None else encode_json(T.HELLO, 0, payload))
        ftype, obj = None, None
        try:
            ftype, _, body = decode(await asyncio.wait_for(ws.recv(), 10))
            obj = json.loads(body)
        except ConnectionClosed:
            pass
        if ftype is T.WELCOME:
            await ws.close()
        await asyncio.wait_for(ws.wait_closed(), 10)
        return ftype, obj, ws.close_code


def _hello(protocols: Any, password: str = "1234") -> dict[str, Any]:
    return {"protocols": protocols, "version": "9.9.9",
            "auth": {"id": "user1", "password": password},
            "client": {"id": "raw-client", "session_id": "s-1", "name": "raw", "tags": [],
                       "labels": {}, "facts": {}},
            "capabilities": [], "plugins": {}}


def test_protocol_version_negotiation(server: Server, make_agent: MakeAgent) -> None:
    assert SUPPORTED_PROTOCOLS == (1,)
    ftype, obj, code = asyncio.run(_raw_hello(server, _hello([99])))
    assert ftype is T.REFUSED, (ftype, obj)
    reason = obj["reason"]
    assert "incompatible protocol" in reason
    assert "version 99" in reason and "version 1" in reason
    assert code == 1000

    ftype, obj, _ = asyncio.run(_raw_hello(server, _hello("1")))
    assert ftype is T.REFUSED and "protocols must be a list of integers" in obj["reason"]

    # A first frame that is not a HELLO is a protocol violation (close code 1002), no answer.
    ftype, obj, code = asyncio.run(_raw_hello(server, None, raw_frame=encode(T.DATA, 0, b"x")))
    assert ftype is None and code == 1002

    # A raw client speaking version 1 with good credentials is welcome; then it leaves.
    ftype, obj, _ = asyncio.run(_raw_hello(server, _hello([1, 99])))
    assert ftype is T.WELCOME and obj["protocol"] == 1 and obj["client_id"] == "raw-client"

    # The server still serves a normal agent.
    agent = make_agent(server, "normal")
    agent.proc.wait_log(r"connected to \S+ as client normal \(protocol 1,")
    server.proc.wait_log(r"incompatible protocol: the agent speaks version 99")
    # Only the hello that matched a version was admitted (and is now disconnected).
    assert sorted(listed_ids(server)) == ["normal", "raw-client"]
    assert server.wait_disconnected("raw-client")["version"] == "9.9.9"


def test_accepted_connections_have_nodelay() -> None:
    """rportd binds its listening sockets itself (for the agent endpoint and the API) and hands
    them to websockets and uvicorn. Connections accepted on them must have TCP_NODELAY, or Nagle
    plus delayed ACKs hold back the second small write of every exchange (an HTTP response's
    body after its headers on a keep-alive connection, a frame after a frame on the agent link).
    asyncio only sets it on accepted sockets whose listening socket was created with
    proto=IPPROTO_TCP."""

    async def accepted_nodelay() -> int:
        sock = _bind(HostPort("127.0.0.1", 0))
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(accepted, 10)
            writer.close()
            await writer.wait_closed()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
