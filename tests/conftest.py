"""Fixtures: real rportd and rport processes on loopback ports chosen at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .procs import Agent, Server
from .services import Nats, PostgreSQL, ServiceUnavailable


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    """A PostgreSQL server for the whole session (skipped when it is not installed); take a
    fresh database per test with ``create_database()``."""
    try:
        server = PostgreSQL()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats() -> Iterator[Nats]:
    """A nats-server for the whole session (skipped when it is not installed)."""
    try:
        server = Nats()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:
    """``[database] url`` for the servers of a test: "" (the embedded SQLite in data_dir) unless
    the test is parametrised with ``services.both_databases``, which adds a run on a fresh
    PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("postgresql").create_database()
    return ""


@pytest.fixture
def make_server(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(name: str = "server", start: bool = True, **kwargs: Any) -> Server:
        if database_url:
            extra = kwargs.setdefault("extra", {}) or {}
            kwargs["extra"] = {**extra, "database": {"url": database_url, **extra.get("database", {})}}
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

    def make(server: Server, client_id: str, *, wait: bool = True, workdir: Path | None = None,
             **kwargs: Any) -> Agent:
        """An agent; ``workdir`` (its data directory's parent) to start one on the data of an
        earlier one."""
        workdir = workdir or tmp_path / f"agent-{client_id}-{len(agents)}"
        agent = Agent(workdir, server, client_id, **kwargs)
        agents.append(agent)
        if wait:
            server.wait_connected(client_id)
        return agent

    yield make
    for agent in agents:
        agent.stop()
