"""Fixtures: real rportd and rport processes on loopback ports chosen at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .procs import Agent, Server


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(name: str = "server", start: bool = True, **kwargs: Any) -> Server:
        server = Server(tmp_path / name, **kwargs)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(server: Server, client_id: str, *, wait: bool = True, **kwargs: Any) -> Agent:
        agent = Agent(tmp_path / f"agent-{client_id}-{len(agents)}", server, client_id, **kwargs)
        agents.append(agent)
        if wait:
            server.wait_connected(client_id)
        return agent

    yield make
    for agent in agents:
        agent.stop()
