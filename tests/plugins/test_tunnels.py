"""End to end: tunnels (plugins tunnels, acl, idle) with a real rportd, real rport agents and real
targets (an echo server, an HTTP file server, OpenSSH's sshd), driven through the API as the docs
("Managing tunnels") and the reference (rport-api.md §1.3, §3, §4.5-4.8, §4.11) describe.

Ports are chosen at run time: targets bind port 0, tunnel ports are random (``local`` omitted) or
picked free in the allowed range 2000-30000. Waits are on conditions, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..procs import PY, Agent, Proc, Server, wait_for, write_toml
from ..services import both_databases
from ..tunnel_api import (
    TUNNEL_FIELDS,
    all_tunnels,
    assert_error,
    created,
    delete,
    delete_all,
    delete_once_idle,
    put,
    tunnel_ids,
    tunnels_of,
)
from ..targets import (
    SSHD,
    EchoServer,
    HashServer,
    HttpFileServer,
    Sshd,
    can_listen,
    closed_port,
    connect,
    free_port,
    ipv6_loopback,
    is_closed_by_peer,
    recv_all,
    recv_exactly,
)

CLIENT = "t1"
# Tests that count the connections a target accepted create their tunnels with check_port=0: the
# agent's check_port dial is itself a connection, accepted asynchronously by the target's thread.


# -- helpers ---------------------------------------------------------------------------------------

def sh(cmd: str, timeout: float = 60) -> str:
    return subprocess.run(["bash", "-c", cmd], check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


def echo_roundtrip(port: int, payload: bytes = b"ping through the tunnel", *, host: str = "127.0.0.1",
                   source: str | None = None) -> bytes:
    with connect(port, host, source) as sock:
        sock.sendall(payload)
        return recv_exactly(sock, len(payload))


def refused_at_accept(port: int, *, host: str = "127.0.0.1", source: str | None = None) -> bool:
    """Connects, sends a little, and returns whether the tunnel closed the connection."""
    with connect(port, host, source) as sock:
        try:
            sock.sendall(b"knock knock")
        except (BrokenPipeError, ConnectionResetError):
            return True
        return is_closed_by_peer(sock)


class CliAgent(Agent):
    """An agent started as the docs show: ``rport [flags] <server> [remote ...]`` (procs.Agent puts
    its ``args`` before the server address, where argparse would take a remote for the server)."""

    def __init__(self, workdir: Path, server: Server, client_id: str, remotes: list[str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.id = client_id
        self.server = server
        conf = write_toml(workdir / "rport.conf", {"connection": {
            "min_retry_interval": "0.2s", "max_retry_interval": "2s"}, "client": {}})
        argv = [PY, "-m", "rport.agent.cli", "--data-dir", str(workdir / "data"), "--log-level", "debug",
                "-c", str(conf), "--id", client_id, "--auth", "user1:1234",
                "--fingerprint", server.fingerprint, server.agent_url, *remotes]
        self.proc = Proc(argv, workdir / "rport.log")


# -- fixtures --------------------------------------------------------------------------------------

class Env:
    """A server with one connected agent (no remotes, no tunnel_allowed) and an echo target."""

    def __init__(self, server: Server, agent: Agent, echo: EchoServer) -> None:
        self.server, self.agent, self.echo = server, agent, echo
        self.id = agent.id


def _env(tmp: Path, client_id: str, extra: dict[str, dict[str, Any]] | None = None) -> Iterator[Env]:
    server = Server(tmp / "server", extra=extra).start()
    agent = Agent(tmp / "agent", server, client_id)
    echo = EchoServer()
    try:
        server.wait_connected(client_id)
        yield Env(server, agent, echo)
    finally:
        agent.stop()
        server.stop()
        echo.close()


@pytest.fixture(scope="module")
def main_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from _env(tmp_path_factory.mktemp("tunnels"), CLIENT)


@pytest.fixture
def env(main_env: Env) -> Iterator[Env]:
    """The shared server and agent; every tunnel of the agent is deleted after the test."""
    assert main_env.agent.proc.alive() and main_env.server.proc and main_env.server.proc.alive()
    assert tunnel_ids(main_env.server, main_env.id) == set()
    yield main_env
    delete_all(main_env.server, main_env.id)


@pytest.fixture(scope="module")
def idle_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # write_toml writes sections by name: "plugins.idle" is the table [plugins.idle].
    yield from _env(tmp_path_factory.mktemp("idle"), "i1",
                    extra={"plugins.idle": {"minute": "0.5s", "check_interval": "0.2s"}})


@pytest.fixture
def idle_env(idle_module: Env) -> Iterator[Env]:
    yield idle_module
    delete_all(idle_module.server, idle_module.id)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


# == 1. the seed's server-side examples, with real curl and jq ===========================================

needs_curl = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")),
                                reason="curl and jq are installed by .ci/run")


@needs_curl
def test_seed_ssh_through_tunnel_with_curl(env: Env, tmp_path: Path) -> None:
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is absent (.ci/run installs openssh-server)")
    if not shutil.which("ssh"):
        pytest.skip("ssh is absent (.ci/run installs openssh-client)")
    sshd = Sshd(tmp_path / "sshd")
    try:
        base, lport = env.server.api_url, free_port()
        out = sh(f'CLIENTID={env.id}; LOCAL_PORT={lport}; REMOTE_PORT={sshd.port}; '
                 f'curl -s -u admin:foobaz -X PUT '
                 f'"{base}/api/v1/clients/$CLIENTID/tunnels?local=$LOCAL_PORT&remote=$REMOTE_PORT" | jq')
        tunnel = json.loads(out)["data"]
        assert set(tunnel) == TUNNEL_FIELDS
        assert (tunnel["lhost"], tunnel["lport"], tunnel["rhost"], tunnel["rport"]) == (
            "0.0.0.0", str(lport), "127.0.0.1", str(sshd.port))
        assert tunnel["lport_random"] is False

        result = subprocess.run(sshd.ssh_argv(lport, "echo", "hello-through-tunnel"),
                                check=False, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "hello-through-tunnel"
        assert sshd.proc is not None
        sshd.proc.wait_log(r"Accepted publickey for root from 127\.0\.0\.1", 10)

        # The seed's confirmation: the client's tunnels, selected with jq.
        listed = json.loads(sh(f'curl -s -u admin:foobaz -X GET "{base}/api/v1/clients" '
                               f'| jq ".data[] | select(.id==\\"{env.id}\\")|.tunnels"'))
        assert listed == [tunnel]
    finally:
        sshd.close()


@needs_curl
def test_seed_http_through_tunnels_with_curl(env: Env, tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    content = os.urandom(16).hex() + "\nserved through an rport tunnel\n"
    (root / "hello.txt").write_text(content)
    base = env.server.api_url
    with HttpFileServer(root) as http:
        # local given, remote a port of the client itself
        lport = free_port()
        tunnel = json.loads(sh(f'curl -s -u admin:foobaz -X PUT '
                               f'"{base}/api/v1/clients/{env.id}/tunnels?local={lport}&remote={http.port}" | jq'))["data"]
        assert tunnel["lport"] == str(lport) and tunnel["rport"] == str(http.port)
        assert sh(f"curl -s --fail --max-time 20 http://127.0.0.1:{lport}/hello.txt") == content
        assert subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                               f"http://127.0.0.1:{lport}/missing"], check=False, capture_output=True, text=True,
                              timeout=30).stdout == "404"
        delete_once_idle(env.server, env.id, tunnel["id"])

        # the jump-host form remote=<host:port>, local omitted: a random port of the pool
        out = sh(f'curl -s -u admin:foobaz -X PUT '
                 f'"{base}/api/v1/clients/{env.id}/tunnels?remote=127.0.0.1:{http.port}" | jq')
        tunnel = json.loads(out)["data"]
        assert tunnel["lport_random"] is True and tunnel["lhost"] == "0.0.0.0"
        assert 2000 <= int(tunnel["lport"]) <= 30000
        assert (tunnel["rhost"], tunnel["rport"]) == ("127.0.0.1", str(http.port))
        assert sh(f"curl -s --fail --max-time 20 http://127.0.0.1:{tunnel['lport']}/hello.txt") == content


def test_tunnel_json_and_listings(env: Env) -> None:
    tunnel = created(put(env.server, env.id, remote=env.echo.port))
    assert tunnel["id"].isdigit()
    assert tunnel["name"] == "" and tunnel["protocol"] == "tcp"
    assert tunnel["lhost"] == "0.0.0.0" and tunnel["lport_random"] is True
    assert isinstance(tunnel["lport"], str) and 2000 <= int(tunnel["lport"]) <= 30000
    assert tunnel["rhost"] == "127.0.0.1" and tunnel["rport"] == str(env.echo.port)
    assert tunnel["owner"] == "admin"
    assert tunnel["scheme"] is None and tunnel["acl"] is None
    assert tunnel["idle_timeout_minutes"] == 5 and tunnel["auto_close"] == 0
    assert tunnel["http_proxy"] is False and tunnel["host_header"] == ""
    assert tunnel["auth_user"] == "" and tunnel["auth_password"] == ""
    assert isinstance(tunnel["tunnel_url"], str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tunnel["created_at"])
    assert echo_roundtrip(int(tunnel["lport"])) == b"ping through the tunnel"

    # the client document and GET /tunnels (with client_id) show the same tunnel
    assert tunnels_of(env.server, env.id) == [tunnel]
    assert all_tunnels(env.server) == [{**tunnel, "client_id": env.id}]

    # local=<host>:<port>, with name, scheme, idle, auto-close and an ACL echoed back
    lport = free_port(host="127.0.0.1")
    other = created(put(env.server, env.id, local=f"127.0.0.1:{lport}", remote=f"127.0.0.1:{env.echo.port}",
                        name="echo", scheme="ssh", acl="127.0.0.1", idle_timeout_minutes=7,
                        auto_close="1h30m"))
    assert (other["lhost"], other["lport"], other["lport_random"]) == ("127.0.0.1", str(lport), False)
    assert (other["name"], other["scheme"], other["acl"]) == ("echo", "ssh", "127.0.0.1")
    assert other["idle_timeout_minutes"] == 7 and other["auto_close"] == 5400 * 10**9
    assert other["id"] != tunnel["id"]
    assert echo_roundtrip(lport) == b"ping through the tunnel"
    assert {t["id"] for t in tunnels_of(env.server, env.id)} == {tunnel["id"], other["id"]}


# == 2. every check of PUT ==============================================================================

ECHO = "{echo}"  # replaced by the echo target's port
BAD_PUTS = [
    pytest.param({"remote": "abc:def"}, 400, "ERR_CODE_INVALID_REMOTE",
                 re.compile(r'failed to decode "abc:def": (Invalid remote|Missing ports|Invalid host|Invalid port)'),
                 id="bad-remote"),
    pytest.param({}, 400, "ERR_CODE_INVALID_REMOTE", 'failed to decode "": Missing ports', id="no-remote"),
    pytest.param({"remote": "1:2:3:4:5"}, 400, "ERR_CODE_INVALID_REMOTE",
                 'failed to decode "1:2:3:4:5": Invalid remote', id="five-part-remote"),
    pytest.param({"local": "3000", "remote": "4000:22"}, 400, "ERR_CODE_INVALID_REMOTE",
                 'failed to decode "3000:4000:22": Invalid remote', id="local-twice"),
    pytest.param({"local": "abc", "remote": ECHO}, 400, "ERR_CODE_INVALID_LOCAL", "Invalid port: abc.",
                 id="bad-local"),
    pytest.param({"remote": ECHO + "/udp"}, 400, "ERR_CODE_INVALID_PROTOCOL",
                 "protocol udp is not supported: only tcp tunnels are", id="udp"),
    pytest.param({"remote": ECHO, "scheme": "x" * 16}, 400, "ERR_CODE_URI_SCHEME_LENGTH_EXCEED",
                 "Invalid URI scheme.", id="scheme-too-long"),
    pytest.param({"remote": ECHO, "http_proxy": "1"}, 400, "ERR_CODE_TUNNEL_PROXY_NOT_ENABLED",
                 "creation of tunnel proxy not enabled", id="http-proxy-not-enabled"),
    pytest.param({"remote": ECHO, "http_proxy": "maybe"}, 400, "ERR_CODE_INVALID_PARAM",
                 "invalid http_proxy param: 'maybe' (use 1 or 0)", id="http-proxy-not-bool"),
    pytest.param({"remote": ECHO, "host_header": "www.example.com"}, 400, "ERR_CODE_INVALID_PARAM",
                 "host_header not allowed when http_proxy is false", id="host-header-without-proxy"),
    pytest.param({"remote": ECHO, "auth_user": "u", "auth_password": "p"}, 400, "ERR_CODE_INVALID_PARAM",
                 "auth_user and auth_password are not allowed when http_proxy is false",
                 id="auth-without-proxy"),
    pytest.param({"remote": ECHO, "idle-timeout-minutes": "5", "skip-idle-timeout": "1"}, 400,
                 "ERR_CODE_INVALID_IDLE_TIMEOUT",
                 "conflicting parameters idle-timeout-minutes and skip-idle-timeout", id="idle-conflict"),
    pytest.param({"remote": ECHO, "idle-timeout-minutes": "abc"}, 400, "ERR_CODE_INVALID_IDLE_TIMEOUT",
                 "invalid idle timeout param", id="idle-not-a-number"),
    pytest.param({"remote": ECHO, "idle-timeout-minutes": "10081"}, 400, "ERR_CODE_INVALID_IDLE_TIMEOUT",
                 "idle timeout param should be in range [0, 10080]", id="idle-too-large"),
    pytest.param({"remote": ECHO, "idle-timeout-minutes": "-1"}, 400, "ERR_CODE_INVALID_IDLE_TIMEOUT",
                 "idle timeout param should be in range [0, 10080]", id="idle-negative"),
    pytest.param({"remote": ECHO, "auto-close": "abc"}, 400, "ERR_CODE_INVALID_AUTO_CLOSE",
                 "invalid tunnel auto-close format", id="auto-close-bad-format"),
    pytest.param({"remote": ECHO, "auto-close": "10"}, 400, "ERR_CODE_INVALID_AUTO_CLOSE",
                 "invalid tunnel auto-close format", id="auto-close-no-unit"),
    pytest.param({"remote": ECHO, "auto-close": "-5m"}, 400, "ERR_CODE_INVALID_AUTO_CLOSE",
                 "tunnel auto-close should be more than 0", id="auto-close-negative"),
    pytest.param({"remote": ECHO, "auto-close": "745h"}, 400, "ERR_CODE_INVALID_AUTO_CLOSE",
                 "tunnel auto-close should not be more than 744h0m0s", id="auto-close-too-large"),
    pytest.param({"remote": ECHO, "acl": "foo"}, 400, "ERR_CODE_INVALID_ACL", "Invalid ACL: invalid IP addr: foo",
                 id="acl-not-an-address"),
    pytest.param({"remote": ECHO, "acl": "127.0.0.1,300.1.1.1"}, 400, "ERR_CODE_INVALID_ACL",
                 "Invalid ACL: invalid IP addr: 300.1.1.1", id="acl-second-item-bad"),
    pytest.param({"remote": ECHO, "acl": "127.0.0.1,,127.0.0.2"}, 400, "ERR_CODE_INVALID_ACL",
                 "Invalid ACL: invalid IP addr: ", id="acl-empty-item"),
    pytest.param({"remote": ECHO, "acl": " 127.0.0.1"}, 400, "ERR_CODE_INVALID_ACL",
                 "Invalid ACL: invalid IP addr:  127.0.0.1", id="acl-space"),
    pytest.param({"remote": ECHO, "acl": "fe80::1%eth0"}, 400, "ERR_CODE_INVALID_ACL",
                 "Invalid ACL: invalid IP addr: fe80::1%eth0", id="acl-zone"),
    pytest.param({"remote": ECHO, "acl": "0.0.0.0/0"}, 400, "ERR_CODE_INVALID_ACL",
                 re.compile(r"Invalid ACL: 0\.0\.0\.0/0 would allow access to everyone.*"), id="acl-everyone"),
    pytest.param({"remote": ECHO, "acl": "::/0"}, 400, "ERR_CODE_INVALID_ACL",
                 re.compile(r"Invalid ACL: ::/0 would allow access to everyone.*"), id="acl-everyone-ipv6"),
    pytest.param({"remote": ECHO, "local": "1500"}, 400, "ERR_CODE_PORT_NOT_ALLOWED",
                 "Local port 1500 is not among allowed ports.", id="local-outside-allowed-range"),
    pytest.param({"remote": ECHO, "bogus": "1"}, 400, "ERR_CODE_BAD_QUERY_PARAM",
                 "unsupported query parameter 'bogus'", id="unknown-query-parameter"),
]


@pytest.mark.parametrize("params, status, code, title", BAD_PUTS)
def test_put_refused(env: Env, params: dict[str, str], status: int, code: str,
                     title: str | re.Pattern[str]) -> None:
    query = {k: v.replace(ECHO, str(env.echo.port)) for k, v in params.items()}
    assert env.server.api is not None
    resp = env.server.api.put(f"/clients/{env.id}/tunnels", params=query)
    assert_error(resp, status, code, title)
    assert tunnels_of(env.server, env.id) == []  # nothing was opened


def test_put_unknown_client(env: Env) -> None:
    assert_error(put(env.server, "no-such-client", remote=env.echo.port), 404, "ERR_CODE_CLIENT_NOT_FOUND",
                 "client with id no-such-client not found")


def test_put_identical_tunnel_and_tunnel_to_same_port(env: Env) -> None:
    first = created(put(env.server, env.id, remote=env.echo.port))
    assert_error(put(env.server, env.id, remote=env.echo.port), 400, "ERR_CODE_TUNNEL_EXIST",
                 "Tunnel already exists.", re.compile(rf"tunnel {first['id']}\b"))
    assert_error(put(env.server, env.id, remote=f"127.0.0.1:{env.echo.port}"), 400, "ERR_CODE_TUNNEL_EXIST",
                 "Tunnel already exists.")
    assert_error(put(env.server, env.id, local=first["lport"], remote=env.echo.port), 400,
                 "ERR_CODE_TUNNEL_EXIST", "Tunnel already exists.")
    lport = free_port()
    assert_error(put(env.server, env.id, local=lport, remote=env.echo.port), 400,
                 "ERR_CODE_TUNNEL_TO_PORT_EXIST", f"Tunnel to port {env.echo.port} already exists.")
    assert tunnel_ids(env.server, env.id) == {first["id"]}
    # a different ACL makes it a different tunnel
    second = created(put(env.server, env.id, local=lport, remote=env.echo.port, acl="127.0.0.1"))
    assert echo_roundtrip(lport) == b"ping through the tunnel"
    assert tunnel_ids(env.server, env.id) == {first["id"], second["id"]}


def test_put_local_port_in_use(env: Env) -> None:
    port = free_port()
    with socket.socket() as squatter:  # someone else's server on a port of the pool
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("0.0.0.0", port))
        squatter.listen(1)
        assert_error(put(env.server, env.id, local=port, remote=env.echo.port), 400,
                     "ERR_CODE_LOCAL_PORT_IN_USE", f"Port {port} already in use.")
    assert tunnels_of(env.server, env.id) == []
    # a port another tunnel of ours listens on
    tunnel = created(put(env.server, env.id, local=free_port(), remote=env.echo.port))
    assert_error(put(env.server, env.id, local=tunnel["lport"], remote=closed_port(), check_port=0), 400,
                 "ERR_CODE_LOCAL_PORT_IN_USE", f"Port {tunnel['lport']} already in use.")
    assert tunnel_ids(env.server, env.id) == {tunnel["id"]}


def test_put_local_address_this_machine_does_not_have(env: Env) -> None:
    """RPort's 409 `unable to start tunnel: ...`, not a 500, and the server goes on."""
    port = free_port()
    item = assert_error(put(env.server, env.id, local=f"192.0.2.1:{port}", remote=env.echo.port),
                        409, "ERR_CODE_TUNNEL_START",
                        re.compile(rf"unable to start tunnel: listen tcp 192\.0\.2\.1:{port}: bind: .+"))
    assert "assign" in item["title"], item  # cannot assign requested address
    assert_error(put(env.server, env.id, local="192.0.2.1:0", remote=env.echo.port), 400,
                 "ERR_CODE_INVALID_LOCAL", "Invalid port: 192.0.2.1:0.")
    assert tunnels_of(env.server, env.id) == []
    tunnel = created(put(env.server, env.id, remote=env.echo.port))
    assert echo_roundtrip(int(tunnel["lport"])) == b"ping through the tunnel"


def test_listener_on_every_ipv6_address_takes_ipv4_too(env: Env) -> None:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    tunnel = created(put(env.server, env.id, local=f"[::]:{port}", remote=env.echo.port))
    assert tunnel["lhost"] == "::"
    assert echo_roundtrip(port, host="127.0.0.1") == b"ping through the tunnel"
    assert echo_roundtrip(port, host="::1") == b"ping through the tunnel"


def test_tunnel_ids_are_not_reused(env: Env) -> None:
    """A script holding the id of a deleted tunnel must not delete the next one by mistake."""
    first = created(put(env.server, env.id, remote=env.echo.port))
    delete(env.server, env.id, first["id"])
    second = created(put(env.server, env.id, remote=env.echo.port))
    assert int(second["id"]) > int(first["id"])


@pytest.mark.parametrize("value", ["0", "0s"])
def test_auto_close_zero_is_no_deadline(env: Env, value: str) -> None:
    tunnel = created(put(env.server, env.id, remote=env.echo.port, auto_close=value))
    assert tunnel["auto_close"] == 0


def test_put_check_port(env: Env) -> None:
    port = closed_port()
    assert_error(put(env.server, env.id, remote=port), 400, "ERR_CODE_REMOTE_PORT_NOT_OPEN",
                 f"Port {port} is not in listening state.", re.compile(rf"127\.0\.0\.1:{port}\b.+"))
    assert tunnels_of(env.server, env.id) == []
    assert_error(put(env.server, env.id, remote=port, check_port=1), 400, "ERR_CODE_REMOTE_PORT_NOT_OPEN",
                 f"Port {port} is not in listening state.")
    # check_port with no value is the default (RPort skips the check only for 0)
    assert_error(put(env.server, env.id, remote=port, check_port=""), 400,
                 "ERR_CODE_REMOTE_PORT_NOT_OPEN", f"Port {port} is not in listening state.")
    # a name the resolver cannot even encode is a closed port with a clear reason, not a 409
    assert_error(put(env.server, env.id, remote=f"{'a' * 300}:{port}"), 400,
                 "ERR_CODE_REMOTE_PORT_NOT_OPEN", f"Port {port} is not in listening state.",
                 re.compile(r"invalid host name"))
    # check_port=0: created anyway
    tunnel = created(put(env.server, env.id, remote=port, check_port=0))
    assert tunnel["rport"] == str(port) and tunnel["lport_random"] is True


def test_put_refused_by_agent_tunnel_allowed(env: Env, make_agent: Callable[..., Agent]) -> None:
    make_agent(env.server, "restricted", config={"client": {"tunnel_allowed": ["127.0.0.2"]}})
    try:
        assert_error(put(env.server, "restricted", remote=env.echo.port), 400, "ERR_CODE_TUNNEL_NOT_ALLOWED",
                     "Tunnel destination is not allowed by client configuration.",
                     f"127.0.0.1:{env.echo.port} is not in tunnel_allowed")
        assert tunnels_of(env.server, "restricted") == []
        # what tunnel_allowed lists is allowed
        tunnel = created(put(env.server, "restricted", remote=f"127.0.0.2:{closed_port()}", check_port=0))
        assert tunnel["rhost"] == "127.0.0.2"
    finally:
        delete_all(env.server, "restricted")


def test_no_ports_left(make_server: Callable[..., Server], make_agent: Callable[..., Agent],
                       echo: EchoServer) -> None:
    port = free_port()
    server = make_server(extra={"server": {"used_ports": [f"{port}-{port}"]}})
    make_agent(server, "c1")
    tunnel = created(put(server, "c1", remote=echo.port))
    assert (tunnel["lport"], tunnel["lport_random"]) == (str(port), True)
    assert_error(put(server, "c1", remote=closed_port(), check_port=0), 500, "ERR_CODE_NO_PORTS",
                 "no ports available", "every allowed port is in use")
    assert tunnel_ids(server, "c1") == {tunnel["id"]}
    assert echo_roundtrip(port) == b"ping through the tunnel"


# == 3. DELETE =========================================================================================

def _plain_bind(port: int) -> bool:
    """Bind and listen without SO_REUSEADDR: fails if anything at all holds the port."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
            sock.listen(1)
        except OSError:
            return False
    return True


def test_delete_frees_the_port_at_once(env: Env) -> None:
    lport = wait_for(lambda: next((p for p in [free_port()] if _plain_bind(p)), None), 10, "an unused port")
    tunnel = created(put(env.server, env.id, local=lport, remote=env.echo.port))
    assert not can_listen("0.0.0.0", lport)
    resp = delete(env.server, env.id, tunnel["id"])
    assert resp.status_code == 204 and resp.content == b""
    assert _plain_bind(lport)  # at once, and not even a half-closed socket holds the port
    assert tunnels_of(env.server, env.id) == []
    assert_error(delete(env.server, env.id, tunnel["id"]), 404, "ERR_CODE_TUNNEL_NOT_FOUND", "tunnel not found")


def test_delete_with_open_connection(env: Env) -> None:
    tunnel = created(put(env.server, env.id, remote=env.echo.port))
    lport = int(tunnel["lport"])
    with connect(lport) as sock:
        sock.sendall(b"hold")
        assert recv_exactly(sock, 4) == b"hold"  # the connection is relayed, so it is counted
        assert_error(delete(env.server, env.id, tunnel["id"]), 409, "ERR_CODE_TUNNEL_HAS_CONNECTIONS",
                     "tunnel has 1 active connection(s)")
        assert_error(delete(env.server, env.id, tunnel["id"], force="maybe"), 400, "ERR_CODE_INVALID_PARAM",
                     "invalid force param: 'maybe' (use 1 or 0)")
        sock.sendall(b"still")
        assert recv_exactly(sock, 5) == b"still"
        assert delete(env.server, env.id, tunnel["id"], force=1).status_code == 204
        assert is_closed_by_peer(sock)
    assert tunnels_of(env.server, env.id) == []
    assert can_listen("0.0.0.0", lport)


def test_delete_unknown(env: Env) -> None:
    assert_error(delete(env.server, env.id, "999"), 404, "ERR_CODE_TUNNEL_NOT_FOUND", "tunnel not found")
    assert_error(delete(env.server, "no-such-client", "1"), 404, "ERR_CODE_TUNNEL_NOT_FOUND",
                 "tunnel not found")


# == 4. ACL ===========================================================================================

def test_acl_ipv4_address(env: Env) -> None:
    tunnel = created(put(env.server, env.id, remote=env.echo.port, acl="127.0.0.2", check_port=0))
    assert tunnel["lhost"] == "0.0.0.0" and tunnel["acl"] == "127.0.0.2"
    lport = int(tunnel["lport"])
    before = env.echo.accepted
    assert refused_at_accept(lport, source="127.0.0.1")
    assert env.echo.accepted == before  # closed at accept: the agent never dialled the target
    assert echo_roundtrip(lport, b"from 127.0.0.2", source="127.0.0.2") == b"from 127.0.0.2"
    assert env.echo.accepted == before + 1
    wait_for(lambda: "connection from 127.0.0.1 refused by the ACL" in env.server.log(), 10,
             "the ACL refusal in the server log")


def test_acl_cidr(env: Env) -> None:
    tunnel = created(put(env.server, env.id, remote=env.echo.port, acl="127.0.0.0/30", check_port=0))
    lport = int(tunnel["lport"])
    before = env.echo.accepted
    assert refused_at_accept(lport, source="127.0.0.5")
    assert refused_at_accept(lport, source="127.0.0.4")
    assert env.echo.accepted == before
    for source in ("127.0.0.1", "127.0.0.3"):
        assert echo_roundtrip(lport, source.encode(), source=source) == source.encode()
    assert env.echo.accepted == before + 2


def test_acl_ipv6(env: Env) -> None:
    if not ipv6_loopback():
        pytest.skip("IPv6 loopback (::1) is unavailable")
    lport = free_port(host="::1")
    tunnel = created(put(env.server, env.id, local=f"[::1]:{lport}", remote=env.echo.port, acl="::1",
                         check_port=0))
    assert (tunnel["lhost"], tunnel["lport"], tunnel["acl"]) == ("::1", str(lport), "::1")
    before = env.echo.accepted
    assert echo_roundtrip(lport, b"over ipv6", host="::1") == b"over ipv6"
    assert env.echo.accepted == before + 1

    lport2 = free_port(host="::1", avoid={lport})
    created(put(env.server, env.id, local=f"[::1]:{lport2}", remote=env.echo.port, acl="127.0.0.0/8",
                check_port=0))
    assert refused_at_accept(lport2, host="::1")
    # an IPv6-only ACL on an IPv4 listener refuses IPv4 sources
    v4 = created(put(env.server, env.id, remote=env.echo.port, acl="::1,fd00::/8", check_port=0))
    assert refused_at_accept(int(v4["lport"]))
    assert env.echo.accepted == before + 1


def test_acl_refused_when_acl_plugin_disabled(make_server: Callable[..., Server],
                                               make_agent: Callable[..., Agent], echo: EchoServer) -> None:
    server = make_server(extra={"plugins": {"disabled": ["acl"]}})
    make_agent(server, "c1")
    lport = free_port()
    assert_error(put(server, "c1", local=lport, remote=echo.port, acl="127.0.0.1"), 400,
                 "ERR_CODE_ACL_UNAVAILABLE", "tunnel ACLs are not available: the acl plugin is disabled")
    assert all_tunnels(server) == []
    assert can_listen("0.0.0.0", lport)  # never opened, not even briefly left open
    # without an ACL the same tunnel opens
    tunnel = created(put(server, "c1", local=lport, remote=echo.port))
    assert tunnel["acl"] is None and echo_roundtrip(lport) == b"ping through the tunnel"


# == 5. idle timeout and auto-close (a minute is 0.5 s on this server) =================================

def gone(server: Server, client_id: str, tunnel_id: str) -> bool:
    return tunnel_id not in tunnel_ids(server, client_id)


def test_idle_tunnel_closes_itself(idle_env: Env) -> None:
    server = idle_env.server
    lport = free_port()
    tunnel = created(put(server, idle_env.id, local=lport, remote=idle_env.echo.port, idle_timeout_minutes=1))
    assert tunnel["idle_timeout_minutes"] == 1
    wait_for(lambda: gone(server, idle_env.id, tunnel["id"]), 20, "the idle tunnel to close")
    wait_for(lambda: can_listen("0.0.0.0", lport), 10, "the idle tunnel's port to be free")
    # logged once the close has been saved, a moment after the API stops listing it
    wait_for(lambda: re.search(rf"tunnel {tunnel['id']} of {idle_env.id} closed: idle for",
                               server.log()), 10, "the idle close in the log")


def test_idle_tunnel_with_open_connection_stays(idle_env: Env) -> None:
    server = idle_env.server
    # 4 minutes = 2 s here: time enough to connect before it could idle out
    held = created(put(server, idle_env.id, remote=idle_env.echo.port, idle_timeout_minutes=4))
    with connect(int(held["lport"])) as sock:
        sock.sendall(b"hold")
        assert recv_exactly(sock, 4) == b"hold"
        # a control tunnel created after the last traffic of the held one: once the reaper has
        # closed it, the held tunnel has been idle at least as long, yet its connection is open
        control = created(put(server, idle_env.id, remote=closed_port(), check_port=0, idle_timeout_minutes=4))
        wait_for(lambda: gone(server, idle_env.id, control["id"]), 20, "the control tunnel to close")
        assert not gone(server, idle_env.id, held["id"])
        sock.sendall(b"still open")
        assert recv_exactly(sock, 10) == b"still open"
    # the last connection closed: now it idles out
    wait_for(lambda: gone(server, idle_env.id, held["id"]), 20, "the held tunnel to close once idle")


def test_skip_idle_timeout_stays(idle_env: Env) -> None:
    server = idle_env.server
    kept = created(put(server, idle_env.id, remote=idle_env.echo.port, skip_idle_timeout=1))
    assert kept["idle_timeout_minutes"] == 0
    # idle-timeout-minutes=0 is "off" as well
    off = created(put(server, idle_env.id, remote=closed_port(), check_port=0, idle_timeout_minutes=0))
    assert off["idle_timeout_minutes"] == 0
    control = created(put(server, idle_env.id, remote=closed_port(), check_port=0, idle_timeout_minutes=1))
    wait_for(lambda: gone(server, idle_env.id, control["id"]), 20, "the control tunnel to close")
    assert not gone(server, idle_env.id, kept["id"]) and not gone(server, idle_env.id, off["id"])
    assert echo_roundtrip(int(kept["lport"])) == b"ping through the tunnel"


def test_auto_close_even_with_traffic(idle_env: Env) -> None:
    server = idle_env.server
    tunnel = created(put(server, idle_env.id, remote=idle_env.echo.port, auto_close="1s"))
    assert tunnel["auto_close"] == 10**9
    with connect(int(tunnel["lport"])) as sock:
        def closed_while_talking() -> bool:
            try:
                sock.sendall(b"traffic!")
                return recv_exactly(sock, 8) != b"traffic!"
            except (BrokenPipeError, ConnectionResetError):
                return True
        wait_for(closed_while_talking, 20, "auto-close to end the busy connection", interval=0.05)
    wait_for(lambda: gone(server, idle_env.id, tunnel["id"]), 10, "the auto-closed tunnel to go")
    wait_for(lambda: re.search(rf"tunnel {tunnel['id']} of {idle_env.id} closed: auto-close "
                               "deadline reached", server.log()), 10, "the auto-close in the log")


# == 6. data path =====================================================================================

def test_concurrent_connections_echo_every_byte(env: Env) -> None:
    lport = int(created(put(env.server, env.id, remote=env.echo.port, check_port=0))["lport"])
    size, count = 64 * 1024, 100

    async def one(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", lport)
        try:
            async def send() -> None:
                for i in range(0, size, 8192):
                    writer.write(payload[i:i + 8192])
                    await writer.drain()
            sender = asyncio.ensure_future(send())
            echoed = await reader.readexactly(size)
            await sender
            writer.write_eof()
            assert await reader.read() == b""  # the echo half-closes back after our EOF
            return echoed
        finally:
            writer.close()
            await writer.wait_closed()

    async def run_all(payloads: list[bytes]) -> list[bytes]:
        return await asyncio.wait_for(asyncio.gather(*(one(p) for p in payloads)), 90)

    payloads = [os.urandom(size) for _ in range(count)]
    assert len(set(payloads)) == count
    before = env.echo.accepted
    results = asyncio.run(run_all(payloads))
    for sent, got in zip(payloads, results):
        assert got == sent
    assert env.echo.accepted == before + count


def test_half_close(env: Env) -> None:
    lport = int(created(put(env.server, env.id, remote=env.echo.port))["lport"])
    payload = os.urandom(300_000)
    with connect(lport) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == payload


def test_200_megabytes_by_hash(env: Env) -> None:
    with HashServer() as target:
        lport = int(created(put(env.server, env.id, remote=target.port))["lport"])
        digest, total = hashlib.sha256(), 0
        with connect(lport, timeout=60) as sock:
            for _ in range(200):
                chunk = os.urandom(1 << 20)
                digest.update(chunk)
                sock.sendall(chunk)
                total += len(chunk)
            sock.shutdown(socket.SHUT_WR)
            answer = recv_all(sock).decode()
    assert answer == f"{digest.hexdigest()} {total}\n"
    assert total == 200 * (1 << 20)


def test_refused_target_closes_the_connection(env: Env) -> None:
    port = closed_port()
    tunnel = created(put(env.server, env.id, remote=port, check_port=0))
    with connect(int(tunnel["lport"])) as sock:
        try:
            sock.sendall(b"anyone there?")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert is_closed_by_peer(sock)  # within connect()'s 10 s socket timeout
    wait_for(lambda: re.search(rf"to 127\.0\.0\.1:{port} failed", env.server.log()), 10,
             "the failed dial in the server log")
    # the tunnel itself stays, and its connection count goes back to 0 (delete needs no force)
    delete_once_idle(env.server, env.id, tunnel["id"])


# == 7. tunnels requested by the agent ===================================================================

def _remotes(targets: list[EchoServer]) -> tuple[list[str], dict[int, tuple[str, int | None]]]:
    """The five shorthands of the docs, and the expected (lhost, lport or None) per target port."""
    l3 = free_port()
    l4 = free_port(avoid={l3})
    l5 = free_port(host="127.0.0.1", avoid={l3, l4})
    p = [t.port for t in targets]
    remotes = [f"{p[0]}", f"127.0.0.1:{p[1]}", f"{l3}:{p[2]}", f"{l4}:127.0.0.1:{p[3]}",
               f"127.0.0.1:{l5}:127.0.0.1:{p[4]}"]
    expected = {p[0]: ("0.0.0.0", None), p[1]: ("0.0.0.0", None), p[2]: ("0.0.0.0", l3),
                p[3]: ("0.0.0.0", l4), p[4]: ("127.0.0.1", l5)}
    return remotes, expected


def _check_agent_tunnels(server: Server, client_id: str, targets: list[EchoServer],
                         expected: dict[int, tuple[str, int | None]]) -> dict[int, dict[str, Any]]:
    tunnels = wait_for(lambda: (ts := tunnels_of(server, client_id)) and len(ts) >= len(targets) and ts,
                       20, "the agent's tunnels")
    assert len(tunnels) == len(targets), tunnels
    by_port = {int(t["rport"]): t for t in tunnels}
    assert set(by_port) == set(expected)
    for target in targets:
        tunnel = by_port[target.port]
        lhost, lport = expected[target.port]
        assert tunnel["rhost"] == "127.0.0.1" and tunnel["lhost"] == lhost
        if lport is None:
            assert tunnel["lport_random"] is True and 2000 <= int(tunnel["lport"]) <= 30000
        else:
            assert tunnel["lport_random"] is False and tunnel["lport"] == str(lport)
        assert tunnel["owner"] == client_id and tunnel["idle_timeout_minutes"] == 0
        before = target.accepted
        payload = f"to {target.port}".encode()
        assert echo_roundtrip(int(tunnel["lport"]), payload) == payload
        assert target.accepted == before + 1  # reached the target named by the remote
    return by_port


@both_databases
@pytest.mark.parametrize("how", ["command-line", "config-file"])
def test_agent_remotes(how: str, make_server: Callable[..., Server], make_agent: Callable[..., Agent],
                       tmp_path: Path) -> None:
    targets = [EchoServer() for _ in range(5)]
    agent: Agent | None = None
    try:
        server = make_server()
        remotes, expected = _remotes(targets)
        if how == "command-line":
            agent = CliAgent(tmp_path / "cli-agent", server, "remotes", remotes)
            server.wait_connected("remotes")
        else:
            agent = make_agent(server, "remotes", config={"client": {"remotes": remotes}})
        first = _check_agent_tunnels(server, "remotes", targets, expected)

        # the server restarts: the agent reconnects and its tunnels come back, fixed ports unchanged
        server.stop()
        server.start()
        server.wait_connected("remotes")
        again = _check_agent_tunnels(server, "remotes", targets, expected)
        assert {p: t["id"] for p, t in again.items()} == {p: t["id"] for p, t in first.items()}

        # the agent dies: once the server notices, every listener port is free again
        agent.stop(signal.SIGKILL)
        server.wait_disconnected("remotes")
        assert_error(put(server, "remotes", remote=targets[0].port), 404, "ERR_CODE_CLIENT_NOT_FOUND",
                     "client with id remotes not found")
        wait_for(lambda: all_tunnels(server) == [], 10, "GET /tunnels to drop the disconnected client's")
        for port, tunnel in again.items():
            lhost, lport = expected[port][0], int(tunnel["lport"])
            wait_for(lambda lhost=lhost, lport=lport: can_listen(lhost, lport), 10,
                     f"port {tunnel['lport']} to be free")
    finally:
        if agent is not None:
            agent.stop()
        for target in targets:
            target.close()


# == 8. tunnel_allowed, at creation and on every connection ===============================================

def _narrowed_agent(server: Server, make_agent: Callable[..., Agent], allowed: EchoServer,
                    other: EchoServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tunnels to ``other`` and to ``allowed`` created while the agent allowed both; then the
    agent restarts allowing only ``allowed``. Returns the two tunnels as created."""
    agent = make_agent(server, "narrow")
    to_other = created(put(server, "narrow", remote=other.port, check_port=0))
    to_allowed = created(put(server, "narrow", remote=allowed.port, check_port=0))
    agent.stop()
    server.wait_disconnected("narrow")
    make_agent(server, "narrow", config={"client": {"tunnel_allowed": [f"127.0.0.1:{allowed.port}"]}})
    # tunnels are restored in creation order: once the second is back, the first was dealt with
    wait_for(lambda: to_allowed["id"] in {t["id"] for t in tunnels_of(server, "narrow")}, 20,
             "the allowed tunnel to be restored")
    return to_other, to_allowed


def test_tunnel_allowed_checked_at_creation(make_server: Callable[..., Server],
                                            make_agent: Callable[..., Agent], echo: EchoServer) -> None:
    server = make_server()
    make_agent(server, "c8", config={"client": {"tunnel_allowed": [f"127.0.0.1:{echo.port}"]}})
    tunnel = created(put(server, "c8", remote=echo.port))
    assert echo_roundtrip(int(tunnel["lport"])) == b"ping through the tunnel"
    with EchoServer() as other:
        for params in ({"remote": other.port, "check_port": 0}, {"remote": other.port},
                       {"remote": f"127.0.0.2:{echo.port}", "check_port": 0}):
            assert_error(put(server, "c8", **params), 400, "ERR_CODE_TUNNEL_NOT_ALLOWED",
                         "Tunnel destination is not allowed by client configuration.")
        assert tunnel_ids(server, "c8") == {tunnel["id"]}
        assert other.accepted == 0


def test_tunnel_allowed_rechecked_per_connection(make_server: Callable[..., Server],
                                                 make_agent: Callable[..., Agent]) -> None:
    """Whatever the server restores after the agent narrowed tunnel_allowed, no connection
    reaches a target the agent no longer allows: the agent refuses it ("Prohibited")."""
    server = make_server()
    with EchoServer() as allowed, EchoServer() as other:
        to_other, to_allowed = _narrowed_agent(server, make_agent, allowed, other)
        restored = {t["id"]: t for t in tunnels_of(server, "narrow")}
        assert echo_roundtrip(int(restored[to_allowed["id"]]["lport"])) == b"ping through the tunnel"
        assert allowed.accepted == 1
        if to_other["id"] in restored:
            lport = int(restored[to_other["id"]]["lport"])
            assert refused_at_accept(lport)
            wait_for(lambda: re.search(rf"to 127\.0\.0\.1:{other.port} failed: Prohibited", server.log()),
                     10, "the agent's refusal in the server log")
        else:  # not restored at all (RPort §4.11): nothing listens there
            with pytest.raises(ConnectionRefusedError):
                connect(int(to_other["lport"])).close()
        assert other.accepted == 0  # never reached, neither at creation (check_port=0) nor since


@both_databases
def test_restored_tunnels_filtered_by_tunnel_allowed(make_server: Callable[..., Server],
                                                     make_agent: Callable[..., Agent]) -> None:
    server = make_server()
    with EchoServer() as allowed, EchoServer() as other:
        _, to_allowed = _narrowed_agent(server, make_agent, allowed, other)
        assert {t["id"] for t in tunnels_of(server, "narrow")} == {to_allowed["id"]}


# == regressions ==========================================================================================

def test_agent_remotes_obey_the_port_pool_and_protocol(tmp_path: Path, echo: EchoServer) -> None:
    """An agent cannot open server ports outside used_ports minus excluded_ports (the same rule
    as the API's), and a udp remote is refused rather than opened as tcp."""
    server = Server(tmp_path / "server").start()
    inside = free_port()
    agent = CliAgent(tmp_path / "agent", server, "pool", [f"1500:{echo.port}", f"{inside}:{echo.port}",
                                                          f"{free_port(avoid={inside})}:{echo.port}/udp"])
    try:
        server.wait_connected("pool")
        wait_for(lambda: tunnels_of(server, "pool"), 20, "the allowed remote's tunnel")
        assert [t["lport"] for t in tunnels_of(server, "pool")] == [str(inside)]
        assert echo_roundtrip(inside) == b"ping through the tunnel"
        assert can_listen("0.0.0.0", 1500)
        log = server.log()
        assert "local port 1500 is not among the allowed ports" in log
        assert "only tcp tunnels are supported" in log
    finally:
        agent.stop()
        server.stop()


def test_a_random_port_never_takes_the_port_of_a_fixed_remote(tmp_path: Path, echo: EchoServer) -> None:
    """An agent's tunnels are opened (and restored) in their order: a random local port picked
    for an earlier one must not be the fixed port of a later one, which would then fail. With
    a pool of two ports, a random pick would take it every other time."""
    fixed = free_port()
    other = free_port(avoid={fixed})
    server = Server(tmp_path / "server", extra={"server": {
        "used_ports": [f"{other}-{other}", f"{fixed}-{fixed}"]}}).start()
    agent = CliAgent(tmp_path / "agent", server, "pair", [f"{echo.port}", f"{fixed}:{echo.port}"])
    try:
        for _ in range(3):  # the first connection, then two restarts of rportd
            server.wait_connected("pair")
            tunnels = wait_for(lambda: (ts := tunnels_of(server, "pair")) and len(ts) == 2 and ts,
                               20, "both tunnels")
            assert sorted((t["lport_random"], t["lport"]) for t in tunnels) == [
                (False, str(fixed)), (True, str(other))], server.log()[-2000:]
            assert "not restored" not in server.log() and "already in use" not in server.log()
            server.stop()
            server.start()
    finally:
        agent.stop()
        server.stop()


def test_deleted_client_gets_no_old_tunnels_back(tmp_path: Path, echo: EchoServer) -> None:
    """Tunnels kept for a reconnect are forgotten with the client (ClientRemoved)."""
    server = Server(tmp_path / "server").start()
    first = Agent(tmp_path / "a1", server, "gone")
    second: Agent | None = None
    try:
        server.wait_connected("gone")
        created(put(server, "gone", remote=echo.port, **{"skip-idle-timeout": 1}))
        first.stop()
        server.wait_disconnected("gone")
        assert server.api is not None
        assert server.api.delete("/clients/gone").status_code == 204
        second = Agent(tmp_path / "a2", server, "gone")
        server.wait_connected("gone")
        assert tunnels_of(server, "gone") == []
    finally:
        if second is not None:
            second.stop()
        server.stop()


def test_tunnels_per_client_are_capped(tmp_path: Path, echo: EchoServer) -> None:
    """An agent asking for more tunnels than [plugins.tunnels] max_per_client gets that many; the
    rest are refused with a reason in the server's log and the agent's; the API refuses more."""
    server = Server(tmp_path / "server", extra={"plugins.tunnels": {"max_per_client": 3}}).start()
    ports = [echo.port]
    while len(ports) < 5:
        ports.append(free_port(avoid=set(ports)))
    agent = CliAgent(tmp_path / "agent", server, "caps", [str(p) for p in ports])
    try:
        server.wait_connected("caps")
        reason = r"at most 3 tunnels per client \(plugins\.tunnels\.max_per_client\)"
        assert server.proc is not None
        server.proc.wait_log(rf"2 tunnel\(s\) of caps not opened: {reason}; the first: "
                             rf"0\.0\.0\.0:0 -> 127\.0\.0\.1:{ports[3]}")
        agent.proc.wait_log(rf"the server did not open 2 of the tunnels asked for: {reason}")
        assert len(tunnels_of(server, "caps")) == 3
        assert_error(put(server, "caps", remote=echo.port, local=free_port(), check_port=0), 409,
                     "ERR_CODE_TUNNEL_LIMIT", "too many tunnels for this client")
        assert delete(server, "caps", tunnels_of(server, "caps")[0]["id"]).status_code == 204
        created(put(server, "caps", remote=f"127.0.0.2:{echo.port}", check_port=0))
        assert len(tunnels_of(server, "caps")) == 3
    finally:
        agent.stop()
        server.stop()
