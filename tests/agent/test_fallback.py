"""``fallback_servers`` and ``server_switchback_interval`` (RPort's keys): an agent whose main
server is down connects to a fallback at once, and goes back to the main server when it is up
again."""

from __future__ import annotations

from pathlib import Path

from ..procs import Agent, Server, wait_for
from ..targets import free_port


def test_fallback_then_switch_back(tmp_path: Path) -> None:
    main_port = free_port(host="127.0.0.1")  # nothing listens there yet
    fallback = Server(tmp_path / "fallback").start()
    main = Server(tmp_path / "main", agent_port=main_port)  # the same key seed: one fingerprint
    agent = None
    try:
        agent = Agent(tmp_path / "agent", fallback, "roamer", config={"client": {
            "server": f"127.0.0.1:{main_port}", "fallback_servers": [fallback.agent_url],
            "server_switchback_interval": "1s"}})
        fallback.wait_connected("roamer")
        assert f"cannot connect to wss://127.0.0.1:{main_port}/" in agent.log()
        main.start()
        main.wait_connected("roamer")
        wait_for(lambda: "switching back to it" in agent.log(), what="the agent's log line")
        fallback.wait_disconnected("roamer")
    finally:
        if agent is not None:
            agent.stop()
        main.stop()
        fallback.stop()
