"""The API's connections against a real rportd: idle and slow ones are closed, their number is
capped with a logged reason, and the open-files limit is raised so that a thousand idle
connections cannot stop the API."""

from __future__ import annotations

import re
import resource
import shlex
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from ..procs import PY, Proc, Server, wait_for, write_toml
from ..attackers import enough_fds, idle_connections, is_closed, is_open  # noqa: F401

TIMEOUT = 20.0


def api_port(server: Server) -> int:
    return int(server.api_url.rsplit(":", 1)[1])


def test_idle_and_slow_api_connections_are_closed(make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"api": {"read_timeout": "1s"}})
    port = api_port(server)
    with idle_connections(port, ["127.0.0.1"] * 3) as idle, \
            idle_connections(port, ["127.0.0.1"]) as (slow,):
        slow.send(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        wait_for(lambda: all(map(is_closed, [*idle, slow])), TIMEOUT, "the server to close them")
    assert server.proc is not None
    server.proc.wait_log(r"API connection from 127\.0\.0\.1: no complete request within 1s "
                         r"\(api\.read_timeout\), closing")
    # A keep-alive connection that is used keeps working.
    assert server.api is not None
    for _ in range(3):
        assert server.api.get("/status").status_code == 200


def test_connection_cap_closes_the_oldest_idle_connection(
        make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"api": {"max_connections": 5, "read_timeout": "120s"}})
    with idle_connections(api_port(server), ["127.0.0.1"] * 5) as idle:
        with httpx.Client(base_url=server.api_url, auth=("admin", "foobaz"), timeout=10) as api:
            assert api.get("/api/v1/status").status_code == 200
        wait_for(lambda: is_closed(idle[0]), TIMEOUT, "the oldest idle connection to be closed")
        assert all(map(is_open, idle[1:]))
    assert server.proc is not None
    server.proc.wait_log(r"API connections: limit of 5 reached \(api\.max_connections\), "
                         r"closing the oldest idle one \(from 127\.0\.0\.1\)")


def test_https_handshakes_are_bounded_too(make_server: Callable[..., Server],
                                          tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "api.crt", tmp_path / "api.key"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    server = make_server(extra={"api": {"cert_file": str(cert_file), "key_file": str(key_file),
                                        "read_timeout": "1s"}})
    with idle_connections(api_port(server), ["127.0.0.1"] * 3) as idle:
        wait_for(lambda: all(map(is_closed, idle)), TIMEOUT, "the server to close them")


@pytest.fixture
def low_soft_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-files limit ({hard}) leaves no room for the test")
    yield 256


def test_a_thousand_idle_api_connections_under_a_low_soft_limit(
        tmp_path: Path, low_soft_limit: int) -> None:
    """rportd started with a soft limit of 256 (as systemd's 1,024, only smaller) still answers
    the API while 1,000 idle connections are open: it raised its limit at start."""
    conf = write_toml(tmp_path / "rportd.conf", {
        "server": {"address": "127.0.0.1:0", "auth": "user1:1234", "key_seed": "test-seed",
                   "data_dir": str(tmp_path / "data")},
        "api": {"address": "127.0.0.1:0", "auth": "admin:foobaz", "read_timeout": "120s"},
    })
    command = f"ulimit -Sn {low_soft_limit} && exec {shlex.quote(PY)} -m rport.core.cli " \
              f"-c {shlex.quote(str(conf))}"
    proc = Proc(["sh", "-c", command], tmp_path / "rportd.log")
    try:
        found = proc.wait_log(r"API listening on http://127\.0\.0\.1:(\d+)")
        assert re.search(rf"open files limit raised from {low_soft_limit} to \d+", proc.log())
        port = int(found.group(1))
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()
        assert soft == hard
        with idle_connections(port, ["127.0.0.1"] * 1000) as idle:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=("admin", "foobaz"),
                              timeout=TIMEOUT) as api:
                assert api.get("/api/v1/status").status_code == 200
            assert all(map(is_open, idle))
    finally:
        proc.stop()
