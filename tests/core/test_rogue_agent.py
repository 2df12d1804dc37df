"""Misbehaving agents against a real rportd: each rogue connection is closed with a logged reason,
while the API keeps answering and a well-behaved agent on the same server is never disturbed.

The rogues are bare websockets clients (TLS, subprotocol ``rport-py``) that send whatever bytes
the test wants; the server and the good agent are real ``rportd`` / ``rport`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from rport.core.keys import client_ssl_context
from rport.core.protocol.frames import (
    T,
    decode,
    decode_json_object,
    encode,
    encode_json,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from ..attackers import OP_BINARY, OP_CLOSE, OP_CONT, read_frame, ws_frame, ws_upgrade
from ..procs import Agent, Server

TIMEOUT = 20.0  # bound on every wait for a condition; never reached when things work
GARBAGE = b"\xde\xad\xbe\xef this is not an rport frame \x00\xff" * 4


def hello(client_id: str = "rogue") -> bytes:
    return encode_json(T.HELLO, 0, {
        "protocols": [1],
        "version": "rogue-test",
        "auth": {"id": "user1", "password": "1234"},
        "client": {"id": client_id, "name": "rogue agent"},
    })


@contextlib.asynccontextmanager
async def open_rogue(server: Server) -> AsyncIterator[ClientConnection]:
    """A bare websockets connection to the agent endpoint."""
    async with connect(f"wss://127.0.0.1:{server.agent_port}", ssl=client_ssl_context(),
                       subprotocols=["rport-py"], proxy=None, compression=None,
                       open_timeout=TIMEOUT, ping_interval=None, close_timeout=TIMEOUT) as ws:
        yield ws


async def closed_by_server(ws: ClientConnection) -> ConnectionClosed:
    """Read until the server closes the connection; returns how it was closed."""

    async def drain() -> ConnectionClosed:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc

    try:
        return await asyncio.wait_for(drain(), TIMEOUT)
    except TimeoutError:
        raise AssertionError("the server did not close the rogue connection") from None


async def recv_frame(ws: ClientConnection, ftype: T, ident: int | None = None) -> tuple[int, bytes]:
    """The next frame of type ``ftype`` (and id), skipping anything else the server sends."""
    while True:
        got, got_id, payload = decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if got is ftype and (ident is None or got_id == ident):
            return got_id, payload


async def say_hello(ws: ClientConnection, client_id: str = "rogue") -> None:
    """Complete a valid handshake."""
    await ws.send(hello(client_id))
    _, payload = await recv_frame(ws, T.WELCOME)
    assert decode_json_object(T.WELCOME, payload, "protocol")["client_id"] == client_id


async def until(predicate: Callable[[], Any], what: str) -> Any:
    """Wait (bounded) for a condition, e.g. a log line of the server process."""

    async def poll() -> Any:
        while not (value := predicate()):
            await asyncio.sleep(0.02)
        return value

    try:
        return await asyncio.wait_for(poll(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def count(server: Server, pattern: str) -> int:
    return len(re.findall(pattern, server.log()))


async def logged(server: Server, pattern: str, times: int = 1) -> None:
    await until(lambda: count(server, pattern) >= times, f"log line {pattern!r} x{times}")


def client_state(server: Server, client_id: str) -> str | None:
    client = server.client(client_id)
    return client["connection_state"] if client else None


def assert_undisturbed(server: Server, good: Agent) -> None:
    """The API answers, and the good agent is connected and was never disconnected."""
    assert server.api is not None
    status = server.api.get("/status")
    assert status.status_code == 200, status.text
    assert status.json()["data"]["clients_connected"] >= 1
    assert client_state(server, good.id) == "connected"
    log = server.log()
    assert len(re.findall(rf"client {good.id} \(.*\) connected from", log)) == 1, log[-4000:]
    assert f"client {good.id} disconnected" not in log
    assert good.proc.alive()
    assert "disconnected from" not in good.log()


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


@pytest.fixture
def good(server: Server, make_agent: Callable[..., Agent]) -> Iterator[Agent]:
    agent = make_agent(server, "good")
    server.proc.wait_log(r"client good \(.*\) connected from")
    yield agent


# -- before the handshake -----------------------------------------------------------------------


async def _send_garbage(ws: ClientConnection) -> None:
    await ws.send(GARBAGE)


async def _send_text(ws: ClientConnection) -> None:
    await ws.send('{"type": "hello", "note": "text, not a binary frame"}')


async def _send_oversized(ws: ClientConnection) -> None:
    try:
        await ws.send(encode(T.HELLO, 0, b"x" * (2 << 20)))
    except (ConnectionClosed, OSError):
        pass  # the server may hang up before it has read all of it


async def _send_data_first(ws: ClientConnection) -> None:
    await ws.send(encode(T.DATA, 1, b"data before hello"))


async def _send_hello_not_json(ws: ClientConnection) -> None:
    await ws.send(encode(T.HELLO, 0, b"protocols=1&auth=user1:1234"))


PRE_HELLO = {
    # case: (send, close code, the reason in the server log)
    "garbage": (_send_garbage, CloseCode.PROTOCOL_ERROR,
                r"protocol violation in handshake: unknown frame type 0xde"),
    "text-message": (_send_text, CloseCode.PROTOCOL_ERROR,
                     r"protocol violation in handshake: text message"),
    "oversized-message": (_send_oversized, CloseCode.MESSAGE_TOO_BIG,
                          r"protocol violation in handshake: message larger than"),
    "data-before-hello": (_send_data_first, CloseCode.PROTOCOL_ERROR,
                          r"protocol violation in handshake: expected HELLO, got DATA"),
    "hello-not-json": (_send_hello_not_json, CloseCode.PROTOCOL_ERROR,
                       r"protocol violation in handshake: HELLO frame with invalid JSON"),
}


@pytest.mark.parametrize("case", list(PRE_HELLO))
def test_rogue_before_hello(server: Server, good: Agent, case: str) -> None:
    send, code, reason = PRE_HELLO[case]

    async def main() -> None:
        async with open_rogue(server) as ws:
            await send(ws)
            closed = await closed_by_server(ws)
        if case == "oversized-message" and closed.rcvd is None:
            # The server fails the connection at once, closing TCP with most of our 2 MiB
            # unread: the kernel then resets the connection, which can overtake the close frame.
            assert closed.sent is None, "we did not close it, the server did"
        else:
            assert closed.rcvd is not None, f"the server sent no close frame: {closed!r}"
            assert closed.rcvd.code == code, closed
        await logged(server, rf"agent from 127\.0\.0\.1: {reason}.*disconnecting")
        assert "client rogue" not in server.log()
        assert_undisturbed(server, good)

    run(main)


def test_rogue_says_nothing(make_server: Callable[..., Server],
                            make_agent: Callable[..., Agent]) -> None:
    server = make_server("slow-hello", extra={"server": {"handshake_timeout": "1s"}})
    good_agent = make_agent(server, "good")
    server.proc.wait_log(r"client good \(.*\) connected from")

    async def main() -> None:
        async with open_rogue(server) as ws:
            closed = await closed_by_server(ws)  # we send nothing at all
        assert closed.rcvd is not None, closed
        assert closed.rcvd.code == CloseCode.PROTOCOL_ERROR
        assert "handshake timeout" in closed.rcvd.reason
        await logged(server, r"agent from 127\.0\.0\.1: no hello within 1s, disconnecting")
        assert_undisturbed(server, good_agent)

    run(main)


# -- after a valid handshake --------------------------------------------------------------------


def test_rogue_unknown_frame_after_hello(server: Server, good: Agent) -> None:
    async def main() -> None:
        async with open_rogue(server) as ws:
            await say_hello(ws)
            assert client_state(server, "rogue") == "connected"
            await ws.send(bytes([0x7F]) + (1).to_bytes(4, "big") + b"what is this")
            closed = await closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == CloseCode.PROTOCOL_ERROR, closed
        assert "unknown frame type 0x7f" in closed.rcvd.reason
        await logged(server, r"client rogue: protocol violation: unknown frame type 0x7f, "
                             r"disconnecting")
        await logged(server, r"client rogue disconnected: protocol violation: unknown frame "
                             r"type 0x7f")
        await until(lambda: client_state(server, "rogue") == "disconnected",
                    "the API to show the rogue disconnected")
        assert_undisturbed(server, good)

    run(main)


def test_rogue_unknown_request_is_answered_not_disconnected(server: Server, good: Agent) -> None:
    async def main() -> None:
        async with open_rogue(server) as ws:
            await say_hello(ws)
            assert client_state(server, "rogue") == "connected"
            for ident in (1, 2):
                await ws.send(encode_json(T.REQUEST, ident,
                                          {"name": "no-such-request", "body": {"x": 1}}))
                _, payload = await recv_frame(ws, T.RESPONSE, ident)
                answer = json.loads(payload)
                assert answer["ok"] is False
                assert "unknown request" in answer["error"]
                assert "no-such-request" in answer["error"]
            # Still connected: the API shows it, and nothing was logged against it.
            assert client_state(server, "rogue") == "connected"
            log = server.log()
            assert "client rogue disconnected" not in log
            assert "client rogue: protocol violation" not in log
            assert_undisturbed(server, good)
        await logged(server, r"client rogue disconnected")  # once we hang up ourselves
        assert "client rogue: protocol violation" not in server.log()
        assert_undisturbed(server, good)

    run(main)


# -- many at once -------------------------------------------------------------------------------


def test_twenty_concurrent_garbage_connections(server: Server, good: Agent) -> None:
    n = 20

    async def main() -> None:
        all_open = asyncio.Barrier(n)

        async def rogue() -> int:
            async with open_rogue(server) as ws:
                # All 20 are connected before any of them sends its garbage.
                await asyncio.wait_for(all_open.wait(), TIMEOUT)
                await ws.send(GARBAGE)
                closed = await closed_by_server(ws)
            assert closed.rcvd is not None, closed
            return closed.rcvd.code

        codes = await asyncio.gather(*(rogue() for _ in range(n)))
        assert codes == [CloseCode.PROTOCOL_ERROR] * n
        await logged(server, r"protocol violation in handshake: unknown frame type 0xde", n)
        assert count(server, r"protocol violation in handshake") == n
        assert_undisturbed(server, good)

    run(main)


# -- bounded buffers ------------------------------------------------------------------------------


def test_empty_fragments_after_hello_are_bounded(server: Server, good: Agent) -> None:
    async def main() -> None:
        reader, writer = await ws_upgrade(server.agent_port)
        writer.write(ws_frame(OP_BINARY, hello("fragments")))
        opcode, payload = await read_frame(reader)
        assert decode(payload)[0] is T.WELCOME
        # One message begun, then empty continuations without end (each used to cost memory).
        writer.write(ws_frame(OP_BINARY, b"", fin=False) + ws_frame(OP_CONT, b"", fin=False) * 5000)
        await writer.drain()
        while True:
            opcode, payload = await asyncio.wait_for(read_frame(reader), TIMEOUT)
            if opcode == OP_CLOSE:
                break
        assert int.from_bytes(payload[:2], "big") == CloseCode.PROTOCOL_ERROR
        assert b"message in more than 1024 fragments" in payload
        writer.close()
        await logged(server, r"client fragments: protocol violation: message in more than 1024 "
                             r"fragments, disconnecting")
        assert_undisturbed(server, good)

    run(main)


def test_hello_over_64_kib_is_refused(server: Server, good: Agent) -> None:
    """Until an agent is admitted its messages may be 64 KiB (a hello is about 1 KiB)."""
    big = json.loads(hello("big")[5:])
    big["client"]["facts"] = {"padding": "x" * (100 << 10)}

    async def main() -> None:
        async with open_rogue(server) as ws:
            await ws.send(encode_json(T.HELLO, 0, big))
            closed = await closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == CloseCode.MESSAGE_TOO_BIG, closed
        await logged(server, r"agent from 127\.0\.0\.1: protocol violation in handshake: "
                             r"message larger than the agreed maximum \(\d+ > 65536 bytes\)")
        assert "client big" not in server.log()
        assert_undisturbed(server, good)

    run(main)


# -- JSON and hello fields ------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [33, 30_000])
def test_deeply_nested_hello_is_a_protocol_violation(server: Server, good: Agent,
                                                     depth: int) -> None:
    payload = b'{"protocols": [1], "auth": {"id": "user1", "password": "1234"}, "x": ' + \
        nested(depth) + b"}"

    async def main() -> None:
        async with open_rogue(server) as ws:
            await ws.send(encode(T.HELLO, 0, payload))
            closed = await closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == CloseCode.PROTOCOL_ERROR, closed
        await logged(server, r"agent from 127\.0\.0\.1: protocol violation in handshake: HELLO "
                             r"frame with JSON nested more than 32 levels deep, disconnecting")
        assert "Traceback" not in server.log()
        assert_undisturbed(server, good)

    run(main)


def test_deeply_nested_request_after_hello_is_a_protocol_violation(server: Server,
                                                                   good: Agent) -> None:
    async def main() -> None:
        async with open_rogue(server) as ws:
            await say_hello(ws, "deep")
            await ws.send(encode(T.REQUEST, 1, b'{"name": "x", "body": ' + nested(100_000) + b"}"))
            closed = await closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == CloseCode.PROTOCOL_ERROR, closed
        await logged(server, r"client deep: protocol violation: REQUEST frame with JSON nested "
                             r"more than 32 levels deep, disconnecting")
        assert "Traceback" not in server.log()
        assert_undisturbed(server, good)

    run(main)


REMOTE = {"local_host": "0.0.0.0", "local_port": None, "remote_host": "127.0.0.1",
          "remote_port": 22, "protocol": "tcp"}
MISTYPED = {
    # case: (the hello's changes, the reason logged and sent back)
    "protocols-bool": ({"protocols": [True]}, r"invalid hello: protocols must be a list of integers"),
    "tunnels-not-object": ({"plugins": {"tunnels": ["2222:22"]}},
                           r"invalid hello: plugins\.tunnels must be an object \(plugin tunnels\)"),
    "remotes-not-list": ({"plugins": {"tunnels": {"remotes": "2222:22"}}},
                         r"invalid hello: plugins\.tunnels\.remotes must be a list"),
    "remote-port-string": ({"plugins": {"tunnels": {"remotes": [{**REMOTE, "remote_port": "22"}]}}},
                           r"invalid hello: plugins\.tunnels\.remotes\[0\]\.remote_port must be a "
                           r"port number"),
    "local-host-number": ({"plugins": {"tunnels": {"remotes": [REMOTE, {**REMOTE, "local_host": 5}]}}},
                          r"invalid hello: plugins\.tunnels\.remotes\[1\]\.local_host must be a "
                          r"non-empty string"),
}


@pytest.mark.parametrize("case", list(MISTYPED))
def test_mistyped_hello_fields_are_refused_with_a_reason(server: Server, good: Agent,
                                                         case: str) -> None:
    changes, reason = MISTYPED[case]
    body = {**json.loads(hello("typed")[5:]), **changes}

    async def main() -> None:
        async with open_rogue(server) as ws:
            await ws.send(encode_json(T.HELLO, 0, body))
            _, payload = await recv_frame(ws, T.REFUSED)
            assert re.search(reason, decode_json_object(T.REFUSED, payload, "reason")["reason"])
            await closed_by_server(ws)
        await logged(server, rf"agent from 127\.0\.0\.1 refused: {reason}")
        assert "Traceback" not in server.log()
        assert client_state(server, "typed") is None
        assert_undisturbed(server, good)

    run(main)


# -- failed logins ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def rogue_from(server: Server, source: str) -> AsyncIterator[ClientConnection]:
    """A bare websockets connection from the loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.agent_port))
    async with connect(f"wss://127.0.0.1:{server.agent_port}", sock=sock,
                       ssl=client_ssl_context(), server_hostname="rportd",
                       subprotocols=["rport-py"], proxy=None, compression=None,
                       open_timeout=TIMEOUT, ping_interval=None, close_timeout=TIMEOUT) as ws:
        yield ws


async def try_hello(server: Server, source: str, password: str, client_id: str) -> dict[str, Any]:
    """One hello from ``source``: the WELCOME or REFUSED body, with "type"."""
    body = json.loads(hello(client_id)[5:])
    body["auth"]["password"] = password
    async with rogue_from(server, source) as ws:
        await ws.send(encode_json(T.HELLO, 0, body))
        ftype, _, payload = decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
        return {"type": ftype, **json.loads(payload)}


def test_failed_logins_ban_the_address_not_the_auth_id(make_server: Callable[..., Server]) -> None:
    """RPort's rules: five wrong passwords from one address ban that address for ban_time; the
    auth id only waits client_login_wait, so agents elsewhere that share it still get in."""
    server = make_server(extra={"server": {"client_login_wait": "0.2s", "ban_time": "1h"}})

    async def main() -> None:
        failures = 0
        while failures < 5:  # max_failed_login: the default
            answer = await try_hello(server, "127.0.0.7", "guess", "attacker")
            assert answer["type"] is T.REFUSED
            failures += "authentication failed" in answer["reason"]
        answer = await try_hello(server, "127.0.0.7", "1234", "attacker")
        assert answer["type"] is T.REFUSED, answer
        assert answer["reason"].startswith("too many failed logins from 127.0.0.7; try again in")
        assert answer["retry_after"] > 3000

        async def elsewhere() -> dict[str, Any]:
            while (answer := await try_hello(server, "127.0.0.8", "1234", "honest"))["type"] \
                    is T.REFUSED:
                assert "failed just now (server.client_login_wait)" in answer["reason"], answer
            return answer
        answer = await asyncio.wait_for(elsewhere(), TIMEOUT)
        assert answer["type"] is T.WELCOME and answer["client_id"] == "honest"

    run(main)


def test_malformed_answers_to_the_server_are_refusals_not_tracebacks(server: Server,
                                                                    good: Agent) -> None:
    """An agent that answers the tunnels plugin's checks with something that is not an object
    gets its tunnel refused, not a 500 and a traceback."""
    async def main() -> None:
        async with open_rogue(server) as ws:
            await say_hello(ws, "answers")
            assert server.api is not None
            put = asyncio.create_task(asyncio.to_thread(
                server.api.put, "/clients/answers/tunnels", params={"remote": "22"}))
            while True:  # (the commands plugin asks for the agent's jobs too)
                ident, payload = await recv_frame(ws, T.REQUEST)
                if json.loads(payload)["name"] == "check_tunnel_allowed":
                    break
            await ws.send(encode_json(T.RESPONSE, ident, {"ok": True, "body": ["yes"]}))
            resp = await asyncio.wait_for(put, TIMEOUT)
        assert resp.status_code == 400, resp.text
        assert resp.json()["errors"][0]["code"] == "ERR_CODE_TUNNEL_NOT_ALLOWED"
        assert "Traceback" not in server.log()
        assert_undisturbed(server, good)

    run(main)


def test_an_address_whose_agent_broke_the_protocol_waits(make_server: Callable[..., Server]) -> None:
    """An admitted agent that breaks the protocol is disconnected; the next hello from its
    address must wait client_login_wait (so that reconnecting to break it again is slow), while
    other addresses are not affected."""
    server = make_server(extra={"server": {"client_login_wait": "30s"}})

    async def main() -> None:
        async with rogue_from(server, "127.0.0.9") as ws:
            await say_hello(ws, "breaker")
            await ws.send(bytes([0x7F]) + (1).to_bytes(4, "big"))
            await closed_by_server(ws)
        await logged(server, r"client breaker disconnected: protocol violation")
        answer = await try_hello(server, "127.0.0.9", "1234", "breaker")
        assert answer["type"] is T.REFUSED, answer
        assert answer["reason"].startswith("an agent from 127.0.0.9 broke the protocol just now; "
                                           "try again in ")
        assert (await try_hello(server, "127.0.0.10", "1234", "other"))["type"] is T.WELCOME

    run(main)


# -- an agent that fails a request the API waits on ---------------------------------------------


@pytest.mark.parametrize("how", ["refuses", "hangs up"])
def test_cancel_answered_by_a_failing_agent_is_a_clear_error(server: Server, good: Agent,
                                                            how: str) -> None:
    """A job of an agent that refuses the cancel (an error answer: 409 ``client error: ...``)
    or hangs up on it (500 ``Failed to cancel the job.``): a documented error, not a generic
    500, and the server goes on."""
    assert server.api is not None
    api = server.api

    async def answer(ws: ClientConnection, name: str, reply: dict[str, Any]) -> None:
        while True:  # (the server may ask other things first: those stay unanswered)
            ident, payload = await recv_frame(ws, T.REQUEST)
            if json.loads(payload)["name"] == name:
                await ws.send(encode_json(T.RESPONSE, ident, reply))
                return

    async def main() -> None:
        async with open_rogue(server) as ws:
            await say_hello(ws, "rogue-jobs")
            run = asyncio.create_task(asyncio.to_thread(
                api.post, "/clients/rogue-jobs/commands", json={"command": "/usr/bin/date"}))
            await answer(ws, "run_cmd", {"ok": True, "body": {
                "pid": 4242, "started_at": "2026-12-03T10:00:00.000000Z", "error": ""}})
            resp = await run
            assert resp.status_code == 200, resp.text
            jid = resp.json()["data"]["jid"]
            cancel = asyncio.create_task(asyncio.to_thread(
                api.post, f"/clients/rogue-jobs/commands/{jid}/cancel"))
            if how == "refuses":
                await answer(ws, "cancel_cmd", {"ok": False, "error": "no cancel here"})
                resp = await cancel
                assert resp.status_code == 409, resp.text
                assert resp.json()["errors"][0]["code"] == "ERR_CODE_CLIENT_ERROR"
                assert resp.json()["errors"][0]["title"] == "client error: no cancel here"
            else:
                while json.loads((await recv_frame(ws, T.REQUEST))[1])["name"] != "cancel_cmd":
                    pass
                await ws.close()
                resp = await cancel
                assert resp.status_code == 500, resp.text
                error = resp.json()["errors"][0]
                assert (error["code"], error["title"]) == ("ERR_CODE_CANCEL_FAILED",
                                                           "Failed to cancel the job.")
                assert error["detail"], error
            job = api.get(f"/clients/rogue-jobs/commands/{jid}").json()["data"]
            assert job["status"] == "running" and job["pid"] == 4242, job
        assert f"route POST /api/v1/clients/rogue-jobs/commands/{jid}/cancel" not in server.log()
        assert_undisturbed(server, good)

    run(main)
