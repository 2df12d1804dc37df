"""Tunnels with rportd and the agent in the test's process, for orderings that real processes
produce only by chance.

A real server and a real agent (``create_server`` / ``create_agent``, TLS on 127.0.0.1), a real
TCP echo target, and the real API over HTTP; only the timing is in the test's hands.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from rport.agent.client import create_agent
from rport.agent.config import load_agent_config
from rport.core.config import load_server_config
from rport.core.events import ClientConnected
from rport.core.server import create_server

from ..targets import EchoServer, connect, recv_exactly

TIMEOUT = 20.0


async def until(predicate, what: str, timeout: float = TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def echo_through(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(b"still here")
        return recv_exactly(sock, 10)


def test_late_client_connected_keeps_tunnels_of_the_same_connection(tmp_path: Path) -> None:
    """The ClientConnected event of a connection may be handled after an API call has already
    created a tunnel on that connection (a test once connected to such a tunnel in that window
    and was refused). Handling it must not close that tunnel: only tunnels of an older
    connection are replaced."""

    async def main() -> None:
        echo = EchoServer()
        echo_port = echo.port
        config = load_server_config(overrides={
            "server": {"address": "127.0.0.1:0", "auth": "c1:pw", "data_dir": str(tmp_path / "rportd")},
            "api": {"address": "127.0.0.1:0", "auth": "admin:foobaz"},
        })
        server = create_server(config)
        await server.start()
        agent_task = None
        try:
            agent = create_agent(load_agent_config(overrides={"client": {
                "server": f"{server.agent_address.host}:{server.agent_address.port}", "auth": "c1:pw", "id": "c1",
                "fingerprint": server.identity.fingerprint, "data_dir": str(tmp_path / "agent")}}))
            agent_task = asyncio.create_task(agent.run())
            await until(lambda: server.clients.session("c1") is not None, "the agent to connect")
            service = server.state["tunnels"]
            await until(lambda: "c1" in service.tunnels, "the connect event to be handled")

            async with httpx.AsyncClient(base_url=f"http://{server.api_address}/api/v1",
                                         auth=("admin", "foobaz"), timeout=10) as api:
                resp = await api.put("/clients/c1/tunnels", params={"remote": echo_port})
                assert resp.status_code == 200, resp.text
                tunnel_id = resp.json()["data"]["id"]
                tunnel = service.tunnels["c1"][tunnel_id]
                lport = tunnel.lport

                # The event of this same connection, handled now: after the tunnel exists.
                server.bus.publish(ClientConnected("c1", server.clients.session("c1")))
                await asyncio.sleep(0.2)  # the subscriber has taken the client's lock by now...
                async with asyncio.timeout(TIMEOUT):
                    async with service.lock("c1"):  # ...and has released it: it is done
                        pass

                assert service.tunnels["c1"].get(tunnel_id) is tunnel, "the tunnel was replaced"
                assert not tunnel.closed
                assert await asyncio.to_thread(echo_through, lport) == b"still here"
                listed = (await api.get("/clients/c1")).json()["data"]["tunnels"]
                assert [t["id"] for t in listed] == [tunnel_id]
        finally:
            if agent_task is not None:
                agent_task.cancel()
                await asyncio.gather(agent_task, return_exceptions=True)
            await server.stop()
            echo.close()

    asyncio.run(main())
