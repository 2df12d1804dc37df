"""A cluster's configuration is checked before anything starts (exit 2, every problem named),
and what nodes send each other is signed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rport.core.api.routing import RouteTable
from rport.core.cluster.wire import BadMessage, pack, signing_key, unpack

from ..procs import write_toml


def _rportd(tmp_path: Path, config: dict) -> subprocess.CompletedProcess[str]:
    conf = write_toml(tmp_path / "rportd.conf", {
        "server": {"address": "127.0.0.1:0", "data_dir": str(tmp_path / "data"), "auth": "a:b"},
        "api": {"address": "127.0.0.1:0", "auth": "admin:foobaz"}, **config})
    return subprocess.run([sys.executable, "-m", "rport.core.cli", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_a_cluster_on_sqlite_is_refused(tmp_path: Path) -> None:
    result = _rportd(tmp_path, {"cluster": {"nats_url": "nats://127.0.0.1:4222", "node_id": "a",
                                            "secret": "s" * 32},
                                "api": {"address": "127.0.0.1:0", "auth": "admin:foobaz",
                                        "jwt_secret": "j" * 32}})
    assert result.returncode == 2, result.stderr
    assert 'cluster.nats_url: a cluster needs [database] url = "postgresql://..."' in result.stderr
    assert "Traceback" not in result.stderr


def test_every_problem_of_a_cluster_section(tmp_path: Path) -> None:
    result = _rportd(tmp_path, {
        "database": {"url": "postgresql://u:p@127.0.0.1:1/db"},
        "cluster": {"nats_url": "http://x", "node_id": "a.b", "secret": "short",
                    "heartbeat_interval": "2s", "node_timeout": "3s"}})
    assert result.returncode == 2
    for expected in ("cluster.nats_url: 'http://x' is not a NATS URL",
                     "cluster.node_id: letters, digits, - and _ only",
                     "cluster.secret: required, at least 16 characters",
                     "api.jwt_secret: required in a cluster",
                     "cluster.node_timeout: must be at least twice heartbeat_interval"):
        assert expected in result.stderr, result.stderr


def test_messages_are_signed() -> None:
    key, other = signing_key("the cluster's secret"), signing_key("another secret")
    data = pack(key, {"op": "ping"}, b"body")
    assert unpack(key, data) == ({"op": "ping"}, b"body")
    with pytest.raises(BadMessage, match="bad signature"):
        unpack(other, data)
    tampered = data[:-1] + b"x"
    with pytest.raises(BadMessage):
        unpack(key, tampered)


def test_an_agent_route_names_its_client() -> None:
    async def endpoint(request: object) -> None:
        return None

    register = RouteTable().registrar("example")
    register("/clients/{client_id}/things", endpoint, ["POST"], agent=True)
    with pytest.raises(ValueError, match=r"agent=True needs a \{client_id\} in the path"):
        register("/things", endpoint, ["POST"], agent=True)
