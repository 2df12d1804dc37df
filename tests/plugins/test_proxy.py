"""End to end: the HTTPS reverse proxy of tunnels created with ``http_proxy=1`` (plugin proxy), with
a real rportd whose ``[server] tunnel_proxy_cert_file``/``tunnel_proxy_key_file`` come from a test CA
(trustme), a real rport agent, real web targets (tests/web_targets.py: HTTP, HTTPS with a
self-signed certificate, a WebSocket echo) and real clients: curl, httpx, the websockets client
and headless Chromium, as the docs ("Reverse proxy for http(s) based tunnels") and the reference
(rport-api.md §1.3 checks 4-6, §4.6 and §4.9) describe.

Clients verify the proxy's certificate with the test CA (Chromium, which has its own store, is told
to ignore certificate errors). Ports are chosen at run time; waits are on conditions, never on
fixed sleeps, and nothing asserts on timings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from ..procs import Agent, Server, wait_for
from ..tunnel_api import all_tunnels, assert_error, created, delete, delete_all, put, tunnel_ids
from ..targets import ThreadedTcpServer, connect, is_closed_by_peer, recv_all
from ..web_targets import (
    JS_TEXT,
    MIB,
    WS_TEXT,
    HeadlessChromium,
    Pki,
    WebTarget,
    big_sha256,
    find_chromium,
    headers_of,
)

CLIENT = "px1"


needs_curl = pytest.mark.skipif(not shutil.which("curl"), reason="curl is installed by .ci/run")


# -- helpers ---------------------------------------------------------------------------------------

def listeners(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs a process listens on (TCP)."""
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


def refuses(port: int, host: str = "127.0.0.1") -> bool:
    try:
        connect(port, host, timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def other_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses outside 127.0.0.0/8 ("from outside" the server)."""
    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})


def curl(pki: Pki, lport: int, path: str, *args: str, scheme: str = "https") -> tuple[int, str, int]:
    """Real curl to <scheme>://localhost:<lport><path>, trusting the test CA; localhost is pinned
    to 127.0.0.1 (the proxy listens on IPv4). Returns (exit code, body, HTTP status or 0)."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--cacert", str(pki.ca_file),
         "--resolve", f"localhost:{lport}:127.0.0.1", "-w", "\n%{http_code}", *args,
         f"{scheme}://localhost:{lport}{path}"],
        check=False, capture_output=True, text=True, timeout=60)
    body, _, code = result.stdout.rpartition("\n")
    return result.returncode, body, int(code or 0)


def curl_json(pki: Pki, lport: int, path: str, *args: str) -> dict[str, Any]:
    rc, body, status = curl(pki, lport, path, *args)
    assert rc == 0 and status == 200, (rc, status, body)
    return json.loads(body)


def ws_tls(pki: Pki) -> ssl.SSLContext:
    """The TLS context of the tests' WebSocket clients: TLS 1.2 at most. websockets' sync client
    reads its socket in a thread while the caller writes to it from another, and with TLS 1.3
    OpenSSL's object is then used from both at once (the read thread takes in the server's
    session tickets while the request is written): now and then the request is garbled or lost
    (the server sees "bad record type", or nothing), whatever the server. With TLS 1.2 nothing
    arrives after the handshake until the client has written, and the race does not occur.
    (Chromium, in the browser test, uses TLS 1.3 with the proxy.)"""
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def https_client(pki: Pki, lport: int, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=f"https://localhost:{lport}", verify=pki.client_context(),
                        timeout=60, trust_env=False, **kwargs)


def local_port(response: httpx.Response) -> int:
    """The client-side port of the TCP connection an httpx response came on."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


# -- fixtures --------------------------------------------------------------------------------------

def proxy_config(pki: Pki) -> dict[str, dict[str, Any]]:
    return {"server": {"tunnel_proxy_cert_file": str(pki.cert_file),
                       "tunnel_proxy_key_file": str(pki.key_file)}}


class Targets:
    def __init__(self, http: WebTarget, https: WebTarget) -> None:
        self.http, self.https = http, https


class ProxyEnv:
    def __init__(self, server: Server, agent: Agent, pki: Pki, targets: Targets) -> None:
        self.server, self.agent, self.pki = server, agent, pki
        self.http, self.https = targets.http, targets.https
        self.id = agent.id

    def proxied(self, target: WebTarget | None = None, **params: Any) -> dict[str, Any]:
        """A proxied tunnel to ``target`` (default: the HTTP one)."""
        target = target or self.http
        params.setdefault("scheme", target.scheme)
        return created(put(self.server, self.id, remote=target.port, http_proxy=1, **params))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The proxy's certificate, for localhost and 127.0.0.1, issued by a test CA."""
    return Pki(tmp_path_factory.mktemp("proxy-pki"), "localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    # The HTTPS target's certificate comes from a CA nobody trusts: a device's self-signed one.
    device = Pki(tmp_path_factory.mktemp("device-pki"), "device.invalid")
    with WebTarget() as http, WebTarget((device.cert_file, device.key_file)) as https:
        yield Targets(http, https)


@pytest.fixture(scope="module")
def brief_target() -> Iterator[WebTarget]:
    """An HTTP target that closes connections idle for 1 s, as many devices' web servers do."""
    with WebTarget(keep_alive=1) as target:
        yield target


@pytest.fixture(scope="module")
def proxy_module(tmp_path_factory: pytest.TempPathFactory, pki: Pki, targets: Targets) -> Iterator[ProxyEnv]:
    tmp = tmp_path_factory.mktemp("proxy")
    server = Server(tmp / "server", extra=proxy_config(pki)).start()
    agent = Agent(tmp / "agent", server, CLIENT)
    try:
        server.wait_connected(CLIENT)
        yield ProxyEnv(server, agent, pki, targets)
    finally:
        agent.stop()
        server.stop()


@pytest.fixture
def penv(proxy_module: ProxyEnv) -> Iterator[ProxyEnv]:
    """The shared proxy-enabled server and agent; every tunnel is deleted after the test."""
    assert proxy_module.agent.proc.alive() and proxy_module.server.proc and proxy_module.server.proc.alive()
    assert tunnel_ids(proxy_module.server, proxy_module.id) == set()
    yield proxy_module
    delete_all(proxy_module.server, proxy_module.id)


# == 1. the proxy comes up with the tunnel; the raw tunnel is on 127.0.0.1 only =======================

def test_proxied_tunnel_has_tls_proxy_and_loopback_raw_tunnel(penv: ProxyEnv) -> None:
    server = penv.server
    assert server.proc is not None
    before = listeners(server.proc.pid)
    tunnel = penv.proxied(scheme="http")
    lport = int(tunnel["lport"])
    assert tunnel["http_proxy"] is True and tunnel["scheme"] == "http"
    assert tunnel["tunnel_url"] == f"https://localhost:{lport}"
    assert (tunnel["lhost"], tunnel["lport_random"]) == ("0.0.0.0", True)
    assert (tunnel["rhost"], tunnel["rport"]) == ("127.0.0.1", str(penv.http.port))
    assert all_tunnels(server) == [{**tunnel, "client_id": penv.id}]
    assert server.api is not None
    assert server.api.get("/status").json()["data"]["tunnel_proxy_enabled"] is True

    # Exactly two new listeners: the proxy on the tunnel's lhost:lport, the raw tunnel on 127.0.0.1.
    new = listeners(server.proc.pid) - before
    assert ("0.0.0.0", lport) in new and len(new) == 2, new
    ((raw_host, raw_port),) = new - {("0.0.0.0", lport)}
    assert raw_host == "127.0.0.1" and raw_port != lport
    assert not any(host in ("0.0.0.0", "::") for host, port in new if port != lport)

    # lport speaks TLS with the configured certificate (verified against the test CA) ...
    for name in ("localhost", "127.0.0.1"):
        with connect(lport) as sock, penv.pki.client_context().wrap_socket(sock, server_hostname=name) as tls:
            assert tls.getpeercert(binary_form=True) == penv.pki.cert_der
    # ... and nothing else: plain HTTP gets no HTTP answer
    with connect(lport) as sock:
        sock.sendall(b"GET /echo-headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        try:
            answer = sock.recv(1 << 16)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/"), answer
    if shutil.which("curl"):
        rc, _, status = curl(penv.pki, lport, "/echo-headers", scheme="http")
        assert rc != 0 and status == 0

    # The loopback listener is the raw tunnel: plain HTTP there reaches the target unproxied.
    with httpx.Client(trust_env=False, timeout=30) as plain:
        echoed = plain.get(f"http://127.0.0.1:{raw_port}/echo-headers").json()
    assert "x-forwarded-proto" not in headers_of(echoed)

    # The raw port is not reachable from another address, the proxy is.
    assert refuses(raw_port, "127.0.0.2")
    assert not refuses(lport, "127.0.0.2")
    for address in other_ipv4_addresses():
        assert refuses(raw_port, address), address
        assert not refuses(lport, address), address

    with https_client(penv.pki, lport) as client:
        resp = client.get("/echo-headers")
        assert resp.status_code == 200 and resp.json()["path"] == "/echo-headers"


def test_proxied_tunnel_to_https_target_reports_scheme(penv: ProxyEnv) -> None:
    tunnel = penv.proxied(penv.https, scheme="https", idle_timeout_minutes=7, name="web")
    assert (tunnel["scheme"], tunnel["http_proxy"], tunnel["name"]) == ("https", True, "web")
    assert tunnel["idle_timeout_minutes"] == 7
    assert tunnel["tunnel_url"] == f"https://localhost:{tunnel['lport']}"
    # http_proxy without a scheme proxies to plain HTTP
    plain = created(put(penv.server, penv.id, remote=penv.http.port, http_proxy=1))
    assert (plain["scheme"], plain["http_proxy"]) == ("http", True)
    with https_client(penv.pki, int(plain["lport"])) as client:
        assert client.get("/landed").text == "landed"


# == 2. curl through the proxy: Host header, https target, ACL, basic auth =============================

@needs_curl
def test_curl_reaches_target_with_forwarded_headers(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    echoed = curl_json(penv.pki, lport, "/echo-headers?a=1&b=two", "-H", "X-Custom: kept")
    headers = headers_of(echoed)
    assert echoed["path"] == "/echo-headers" and echoed["query"] == "a=1&b=two"
    assert echoed["scheme"] == "http"  # the target is plain HTTP behind the TLS proxy
    assert headers["host"] == [f"localhost:{lport}"]  # passed without modification
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-host"] == [f"localhost:{lport}"]
    assert headers["x-custom"] == ["kept"]
    # an X-Forwarded-For from the client is extended, not replaced
    echoed = curl_json(penv.pki, lport, "/echo-headers", "-H", "X-Forwarded-For: 198.51.100.7")
    assert headers_of(echoed)["x-forwarded-for"] == ["198.51.100.7, 127.0.0.1"]
    # curl without the test CA does not trust the proxy: it is the configured certificate
    result = subprocess.run(["curl", "-sS", "--max-time", "30", "--resolve", f"localhost:{lport}:127.0.0.1",
                             f"https://localhost:{lport}/echo-headers"], capture_output=True, timeout=60)
    assert result.returncode == 60, result  # CURLE_PEER_FAILED_VERIFICATION


@needs_curl
def test_host_header_replaces_host(penv: ProxyEnv) -> None:
    tunnel = penv.proxied(host_header="www.example.com")
    assert tunnel["host_header"] == "www.example.com"
    lport = int(tunnel["lport"])
    headers = headers_of(curl_json(penv.pki, lport, "/echo-headers"))
    assert headers["host"] == ["www.example.com"]
    assert headers["x-forwarded-host"] == [f"localhost:{lport}"]
    assert headers["x-forwarded-proto"] == ["https"]


@needs_curl
def test_https_target_with_self_signed_certificate(penv: ProxyEnv) -> None:
    lport = int(penv.proxied(penv.https, scheme="https", host_header="www.example.com")["lport"])
    echoed = curl_json(penv.pki, lport, "/echo-headers")
    assert echoed["scheme"] == "https"  # the target was reached over TLS
    assert headers_of(echoed)["host"] == ["www.example.com"]
    rc, body, status = curl(penv.pki, lport, "/landed")
    assert (rc, status, body) == (0, 200, "landed")
    # WebSockets go over wss to the https target
    with ws_connect(f"wss://localhost:{lport}/ws", ssl=ws_tls(penv.pki), open_timeout=20) as ws:
        ws.send("over wss")
        assert ws.recv(timeout=20) == "over wss"
    assert penv.https.last("/ws")["type"] == "websocket"


@needs_curl
def test_acl_applies_to_the_proxy(penv: ProxyEnv) -> None:
    tunnel = penv.proxied(acl="127.0.0.2")
    assert tunnel["acl"] == "127.0.0.2"
    lport = int(tunnel["lport"])
    seen = len(penv.http.requests)
    rc, body, status = curl(penv.pki, lport, "/echo-headers")
    assert (rc, status) == (0, 403), body
    # a WebSocket from a refused address is refused too
    with pytest.raises(InvalidStatus) as refused, \
            ws_connect(f"wss://localhost:{lport}/ws", ssl=ws_tls(penv.pki), open_timeout=20):
        pass
    assert refused.value.response.status_code == 403
    assert len(penv.http.requests) == seen  # neither reached the target

    echoed = curl_json(penv.pki, lport, "/echo-headers", "--interface", "127.0.0.2")
    assert headers_of(echoed)["x-forwarded-for"] == ["127.0.0.2"]


@needs_curl
def test_basic_auth_in_front_of_the_proxy(penv: ProxyEnv) -> None:
    tunnel = penv.proxied(auth_user="alice", auth_password="s3cr3t pass")
    assert (tunnel["auth_user"], tunnel["auth_password"]) == ("alice", "s3cr3t pass")
    lport = int(tunnel["lport"])
    seen = len(penv.http.requests)
    rc, body, status = curl(penv.pki, lport, "/echo-headers")
    assert (rc, status) == (0, 401), body
    with https_client(penv.pki, lport) as client:
        denied = client.get("/echo-headers")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].lower().startswith("basic")
        assert client.get("/echo-headers", auth=("alice", "wrong")).status_code == 401
        assert client.get("/echo-headers", auth=("bob", "s3cr3t pass")).status_code == 401
    assert len(penv.http.requests) == seen

    echoed = curl_json(penv.pki, lport, "/echo-headers", "-u", "alice:s3cr3t pass")
    headers = headers_of(echoed)
    assert "authorization" not in headers  # the proxy's credentials stay at the proxy
    assert headers["x-forwarded-proto"] == ["https"]


def test_basic_auth_for_websockets(penv: ProxyEnv) -> None:
    """A WebSocket handshake goes through the same basic auth as any request: without (or with
    wrong) credentials it is answered 401 with a Basic challenge, as a plain request is."""
    lport = int(penv.proxied(auth_user="alice", auth_password="s3cr3t pass")["lport"])
    with ws_connect(f"wss://alice:s3cr3t%20pass@localhost:{lport}/ws", ssl=ws_tls(penv.pki),
                    open_timeout=20) as ws:
        ws.send("authorized")
        assert ws.recv(timeout=20) == "authorized"
    assert "authorization" not in headers_of(penv.http.last("/ws"))
    seen = len(penv.http.requests)
    for url in (f"wss://localhost:{lport}/ws", f"wss://alice:wrong@localhost:{lport}/ws"):
        with pytest.raises(InvalidStatus) as refused, \
                ws_connect(url, ssl=ws_tls(penv.pki), open_timeout=20):
            pass
        assert refused.value.response.status_code == 401
        assert refused.value.response.headers["www-authenticate"].lower().startswith("basic")
    assert len(penv.http.requests) == seen


# == 3. refusals =========================================================================================

def test_proxy_not_enabled_without_certificates(make_server: Callable[..., Server],
                                                make_agent: Callable[..., Agent], targets: Targets) -> None:
    server = make_server("plain")
    make_agent(server, "nc1")
    assert server.api is not None and server.proc is not None
    assert server.api.get("/status").json()["data"]["tunnel_proxy_enabled"] is False
    before = listeners(server.proc.pid)
    port = targets.http.port
    for params in ({"http_proxy": 1}, {"http_proxy": 1, "scheme": "http"},
                   {"http_proxy": 1, "scheme": "https", "host_header": "www.example.com"},
                   {"http_proxy": "true", "scheme": "vnc"}):
        assert_error(put(server, "nc1", remote=port, **params), 400,
                     "ERR_CODE_TUNNEL_PROXY_NOT_ENABLED", "creation of tunnel proxy not enabled")
    assert_error(put(server, "nc1", remote=port, host_header="www.example.com"), 400,
                 "ERR_CODE_INVALID_PARAM", "host_header not allowed when http_proxy is false")
    assert_error(put(server, "nc1", remote=port, http_proxy=0, host_header="www.example.com"), 400,
                 "ERR_CODE_INVALID_PARAM", "host_header not allowed when http_proxy is false")
    assert all_tunnels(server) == []
    assert listeners(server.proc.pid) == before
    # the same tunnel without the proxy opens as a plain one
    plain = created(put(server, "nc1", remote=port, scheme="http"))
    assert plain["http_proxy"] is False and plain["tunnel_url"] == ""
    with httpx.Client(trust_env=False, timeout=30) as client:
        assert client.get(f"http://127.0.0.1:{plain['lport']}/landed").text == "landed"


PROXY_REFUSALS = [
    pytest.param({"scheme": "vnc"}, "ERR_CODE_INVALID_SCHEME", "tunnel proxy not allowed with scheme vnc",
                 id="vnc"),
    pytest.param({"scheme": "ssh"}, "ERR_CODE_INVALID_SCHEME", "tunnel proxy not allowed with scheme ssh",
                 id="ssh"),
    pytest.param({"auth_user": "alice"}, "ERR_CODE_INVALID_PARAM", "auth_user requires auth_password",
                 id="user-without-password"),
    pytest.param({"auth_password": "pw"}, "ERR_CODE_INVALID_PARAM", "auth_password requires auth_user",
                 id="password-without-user"),
    pytest.param({"http_proxy": 0, "host_header": "www.example.com"}, "ERR_CODE_INVALID_PARAM",
                 "host_header not allowed when http_proxy is false", id="host-header-proxy-off"),
    pytest.param({"http_proxy": 0, "auth_user": "alice", "auth_password": "pw"}, "ERR_CODE_INVALID_PARAM",
                 "auth_user and auth_password are not allowed when http_proxy is false", id="auth-proxy-off"),
    pytest.param({"http_proxy": "maybe"}, "ERR_CODE_INVALID_PARAM", "invalid http_proxy param: 'maybe' (use 1 or 0)",
                 id="http-proxy-not-bool"),
]


@pytest.mark.parametrize(("params", "code", "title"), PROXY_REFUSALS)
def test_invalid_proxy_combinations(penv: ProxyEnv, params: dict[str, Any], code: str, title: str) -> None:
    assert penv.server.proc is not None
    before = listeners(penv.server.proc.pid)
    params = {"http_proxy": 1, **params}
    assert_error(put(penv.server, penv.id, remote=penv.http.port, **params), 400, code, title)
    assert tunnel_ids(penv.server, penv.id) == set()
    assert listeners(penv.server.proc.pid) == before


def test_half_configured_proxy_stops_the_server(make_server: Callable[..., Server], pki: Pki) -> None:
    server = make_server("half", start=False, extra={"server": {"tunnel_proxy_cert_file": str(pki.cert_file)}})
    with pytest.raises(RuntimeError, match="must be set together"):
        server.start(timeout=30)
    assert server.proc is not None and not server.proc.alive()


# == 4. real web traffic through the proxy ==================================================================

def test_statuses_and_methods_pass_through(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    with https_client(penv.pki, lport) as client:
        missing = client.get("/missing")
        assert missing.status_code == 404  # the target's answer, not the proxy's
        head = client.head("/echo-headers")
        assert head.status_code == 200 and head.content == b""
        assert client.put("/echo-headers", content=b"x").json()["method"] == "PUT"


def test_unreachable_target_is_a_bad_gateway(penv: ProxyEnv) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    lport = int(created(put(penv.server, penv.id, remote=port, http_proxy=1, check_port=0))["lport"])
    with https_client(penv.pki, lport) as client:
        resp = client.get("/anything")
        assert resp.status_code == 502
        # the agent's reason, not a guess
        assert resp.text == (f"Bad Gateway: the target cannot be reached: connection to "
                             f"127.0.0.1:{port} failed: Connection refused\n")
        # the proxy itself stays up
        assert client.get("/anything").status_code == 502


def test_keep_alive_on_both_sides(penv: ProxyEnv) -> None:
    lport = int(penv.proxied(check_port=0)["lport"])
    first_request = len(penv.http.requests)
    with https_client(penv.pki, lport) as client:
        responses = [client.get("/echo-headers", params={"n": i}) for i in range(6)]
        assert [r.json()["query"] for r in responses] == [f"n={i}" for i in range(6)]
        # one TLS connection from the client to the proxy ...
        assert len({local_port(r) for r in responses}) == 1
    # ... and one connection behind it: the proxy reused its connection through the tunnel
    peers = {tuple(r["client"]) for r in penv.http.requests[first_request:]}
    assert len(peers) == 1, peers


def test_chunked_response_and_request_bodies(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    with https_client(penv.pki, lport) as client:
        resp = client.get("/chunked", params={"n": 7})
        assert resp.status_code == 200
        assert resp.headers["transfer-encoding"] == "chunked" and "content-length" not in resp.headers
        assert resp.text == "".join(f"chunk {i} of 7\n" for i in range(7))
        # pieces arrive as the target sends them (streamed, in order)
        with client.stream("GET", "/chunked", params={"n": 4}) as streamed:
            lines = [line for line in streamed.iter_lines() if line]
        assert lines == [f"chunk {i} of 4" for i in range(4)]

        # a chunked request body (no Content-Length), and one with a Content-Length
        pieces = [os.urandom(10_000 + i) for i in range(9)]
        answer = client.post("/upload", content=iter(pieces)).json()
        assert answer["transfer_encoding"] == "chunked"
        assert (answer["sha256"], answer["length"]) == (
            hashlib.sha256(b"".join(pieces)).hexdigest(), sum(map(len, pieces)))
        body = os.urandom(123_456)
        answer = client.put("/upload", content=body).json()
        assert (answer["sha256"], answer["length"], answer["content_length"]) == (
            hashlib.sha256(body).hexdigest(), len(body), str(len(body)))
        # and an empty one
        answer = client.post("/upload", content=b"").json()
        assert answer["length"] == 0


def test_redirects_point_to_the_proxy(penv: ProxyEnv) -> None:
    tunnel = penv.proxied()
    lport = int(tunnel["lport"])
    with https_client(penv.pki, lport) as client:
        resp = client.get("/redirect")
        assert resp.status_code == 302
        assert resp.headers["location"] == f"https://localhost:{lport}/landed"
        assert client.get("/redirect-relative").headers["location"] == "/landed"
        followed = client.get("/redirect", follow_redirects=True)
        assert (followed.status_code, followed.text) == (200, "landed")
        assert str(followed.url) == f"https://localhost:{lport}/landed"
    delete(penv.server, penv.id, tunnel["id"], force=1)

    # with a Host header towards the target, the target names that host: rewritten as well
    lport = int(penv.proxied(host_header="www.example.com")["lport"])
    with https_client(penv.pki, lport) as client:
        resp = client.get("/redirect")
        assert resp.headers["location"] == f"https://localhost:{lport}/landed"
        assert client.get("/redirect", follow_redirects=True).text == "landed"


def test_cookies(penv: ProxyEnv) -> None:
    tunnel = penv.proxied()
    lport = int(tunnel["lport"])
    with https_client(penv.pki, lport) as client:
        # the target sees the proxy's host, so its Domain is already right
        resp = client.get("/set-cookie")
        cookies = resp.headers.get_list("set-cookie")
        assert [c for c in cookies if c.startswith("plain=1")] == ["plain=1; Path=/; SameSite=lax"]
        assert [c for c in cookies if c.startswith("scoped=2")] == ["scoped=2; Domain=localhost; Path=/; SameSite=lax"]
    delete(penv.server, penv.id, tunnel["id"], force=1)

    lport = int(penv.proxied(host_header="www.example.com")["lport"])
    with https_client(penv.pki, lport) as client:
        resp = client.get("/set-cookie")
        cookies = resp.headers.get_list("set-cookie")
        assert len(cookies) == 2
        scoped = next(c for c in cookies if c.startswith("scoped=2"))
        assert "domain=" not in scoped.lower()  # Domain=www.example.com would be dropped by the browser
        assert client.cookies.get("plain") == "1" and client.cookies.get("scoped") == "2"
        sent = headers_of(client.get("/echo-headers").json())["cookie"]
        assert sorted(part.strip() for part in "; ".join(sent).split(";")) == ["plain=1", "scoped=2"]


def test_bodies_are_streamed_not_buffered(penv: ProxyEnv) -> None:
    """Each side gets the first part of a body before the other has sent the rest: a proxy that
    read a whole body before passing it on could not do that (each wait would time out)."""
    lport = int(penv.proxied()["lport"])
    target = penv.http
    with https_client(penv.pki, lport) as client:
        # response: the target sends "second" only once the client has received "first"
        target.gate.clear()
        with client.stream("GET", "/gated") as resp:
            parts = resp.iter_bytes()
            assert next(parts) == b"first\n"
            target.gate.set()
            assert b"".join(parts) == b"second\n"

        # request: the client sends its second part only once the target has received the first
        key = os.urandom(8).hex()

        def body() -> Iterator[bytes]:
            yield b"a" * 65536
            wait_for(lambda: target.received.get(key, 0) >= 65536, 30,
                     "the target to receive the first part before the rest is sent")
            yield b"b" * 65536
        answer = client.post("/upload", params={"key": key}, content=body()).json()
        assert answer["length"] == 131072
        assert answer["sha256"] == hashlib.sha256(b"a" * 65536 + b"b" * 65536).hexdigest()


def test_streamed_upload_50_megabytes(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    digest, total = hashlib.sha256(), 0

    def body() -> Iterator[bytes]:
        nonlocal total
        for _ in range(50):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            total += len(chunk)
            yield chunk

    with https_client(penv.pki, lport) as client:
        answer = client.post("/upload", content=body()).json()
    assert total == 50 * MIB
    assert (answer["sha256"], answer["length"]) == (digest.hexdigest(), total)


class RssSampler:
    """The largest RSS of some processes, sampled in a thread until stopped."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: proc.memory_info().rss for name, proc in self.procs.items()}
        self.baseline = dict(self.peak)
        self.samples = 0
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.Error:
                    pass
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.timeout(600)
def test_500_megabyte_download_is_streamed(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    mb, limit = 500, 300 * MIB
    assert penv.server.proc is not None
    digest, total = hashlib.sha256(), 0
    with RssSampler({"rportd": penv.server.proc.pid, "agent": penv.agent.proc.pid}) as rss:
        with https_client(penv.pki, lport) as client, client.stream("GET", "/big", params={"mb": mb}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-length"] == str(mb * MIB)
            for chunk in resp.iter_raw():
                digest.update(chunk)
                total += len(chunk)
    assert total == mb * MIB
    assert digest.hexdigest() == big_sha256(mb)
    assert rss.samples >= 2  # sampled during the download, not only before it
    for name, peak in rss.peak.items():
        assert peak < limit, (f"{name} RSS reached {peak / MIB:.0f} MiB during the download "
                              f"(was {rss.baseline[name] / MIB:.0f} MiB)")


def test_websocket_through_the_proxy(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    with ws_connect(f"wss://localhost:{lport}/ws?room=1", ssl=ws_tls(penv.pki),
                    subprotocols=["chat.v1", "chat.v0"], open_timeout=20, max_size=None,
                    origin=f"https://localhost:{lport}") as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "chat.v1"
        ws.send("hello text ☃")
        assert ws.recv(timeout=20) == "hello text ☃"
        ws.send(b"\x00\x01\xffbinary")
        assert ws.recv(timeout=20) == b"\x00\x01\xffbinary"
        big = os.urandom(3 * MIB)
        ws.send(big)
        assert ws.recv(timeout=60) == big
        for i in range(50):
            ws.send(f"message {i}")
        assert [ws.recv(timeout=20) for _ in range(50)] == [f"message {i}" for i in range(50)]
    handshake = penv.http.last("/ws")
    headers = headers_of(handshake)
    assert headers["x-forwarded-for"] == ["127.0.0.1"] and headers["x-forwarded-proto"] == ["https"]
    assert headers["origin"] == [f"https://localhost:{lport}"]
    assert "authorization" not in headers


def test_websocket_close_both_ways(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    # the client closes: the close handshake completes through the proxy
    with ws_connect(f"wss://localhost:{lport}/ws", ssl=ws_tls(penv.pki), open_timeout=20) as ws:
        ws.send("one")
        assert ws.recv(timeout=20) == "one"
        ws.close(code=1000, reason="bye")
    assert ws.close_code == 1000
    # the target closes with its own code: the client gets it
    with ws_connect(f"wss://localhost:{lport}/ws-close", ssl=ws_tls(penv.pki), open_timeout=20) as ws:
        ws.send("close please")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


@pytest.mark.parametrize("host_header", ["", "www.example.com"])
def test_websocket_handshake_carries_the_host(penv: ProxyEnv, host_header: str) -> None:
    """As for HTTP requests, the Host a WebSocket handshake reaches the target with is the
    client's (passed without modification) or, when set, ``host_header``; never the raw
    tunnel's 127.0.0.1:<port>."""
    lport = int(penv.proxied(**({"host_header": host_header} if host_header else {}))["lport"])
    with ws_connect(f"wss://localhost:{lport}/ws", ssl=ws_tls(penv.pki), open_timeout=20) as ws:
        ws.send("which host?")
        assert ws.recv(timeout=20) == "which host?"
    headers = headers_of(penv.http.last("/ws"))
    assert headers["host"] == [host_header or f"localhost:{lport}"]
    assert headers["x-forwarded-host"] == [f"localhost:{lport}"]


# == idle reaping and closing ===============================================================================

def test_idle_reaping_counts_proxy_traffic(make_server: Callable[..., Server],
                                           make_agent: Callable[..., Agent], pki: Pki,
                                           brief_target: WebTarget) -> None:
    """Proxy traffic keeps the tunnel open; once it stops (the client is gone and the target has
    closed its idle connection), the tunnel idles out and its proxy closes."""
    # A minute is 1 s on this server: idle-timeout-minutes=2 closes after 2 s without traffic.
    server = make_server("idle", extra={**proxy_config(pki),
                                        "plugins.idle": {"minute": "1s", "check_interval": "0.2s"}})
    make_agent(server, "idle1")
    tunnel = created(put(server, "idle1", remote=brief_target.port, http_proxy=1, idle_timeout_minutes=2))
    lport = int(tunnel["lport"])
    with https_client(pki, lport) as client:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # traffic every 0.5 s for 3 s (> 2 "minutes")
            assert client.get("/landed").text == "landed"
            time.sleep(0.5)
            assert tunnel["id"] in tunnel_ids(server, "idle1"), "closed while in use"
        # a WebSocket's messages count as well
        with ws_connect(f"wss://localhost:{lport}/ws", ssl=ws_tls(pki), open_timeout=20) as ws:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                ws.send("keep me")
                assert ws.recv(timeout=20) == "keep me"
                time.sleep(0.5)
                assert tunnel["id"] in tunnel_ids(server, "idle1"), "closed while in use"
    # no more traffic: the tunnel and its proxy go
    wait_for(lambda: tunnel["id"] not in tunnel_ids(server, "idle1"), 30, "the idle proxied tunnel to close")
    wait_for(lambda: refuses(lport), 10, "the idle tunnel's proxy to close")
    assert server.proc is not None
    server.proc.wait_log(rf"tunnel {tunnel['id']} of idle1 closed: idle for", 10)


def test_delete_closes_the_proxy_at_once(penv: ProxyEnv) -> None:
    assert penv.server.proc is not None
    before = listeners(penv.server.proc.pid)
    # never used
    tunnel = penv.proxied()
    lport = int(tunnel["lport"])
    assert delete(penv.server, penv.id, tunnel["id"]).status_code == 204
    assert refuses(lport)
    assert listeners(penv.server.proc.pid) == before

    # used, and with a WebSocket and a keep-alive connection open: DELETE with force
    tunnel = penv.proxied()
    lport = int(tunnel["lport"])
    with ws_connect(f"wss://localhost:{lport}/ws", ssl=ws_tls(penv.pki), open_timeout=20) as ws:
        ws.send("before delete")
        assert ws.recv(timeout=20) == "before delete"
        with https_client(penv.pki, lport) as client:
            assert client.get("/landed").text == "landed"
            assert delete(penv.server, penv.id, tunnel["id"], force=1).status_code == 204
            assert refuses(lport)
            with pytest.raises(httpx.TransportError):
                client.get("/landed")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
    assert listeners(penv.server.proc.pid) == before


def test_forced_delete_with_requests_in_flight(penv: ProxyEnv) -> None:
    """Requests still waiting on the target, one before its response and one in the middle of
    it, end with their connections cut, at once: no 500 sent for the proxy's own shutdown, no
    error or traceback in the server's log, and DELETE does not wait for them."""
    assert penv.server.proc is not None
    target = penv.http
    target.gate.clear()
    tunnel = penv.proxied()
    lport = int(tunnel["lport"])
    log_before = len(penv.server.log())
    outcomes: dict[str, Any] = {}

    def held() -> None:
        with https_client(penv.pki, lport) as client:
            try:
                outcomes["held"] = client.get("/held").status_code
            except httpx.TransportError as exc:
                outcomes["held"] = exc
    thread = threading.Thread(target=held, daemon=True)
    thread.start()
    with https_client(penv.pki, lport) as client, client.stream("GET", "/gated") as resp:
        parts = resp.iter_bytes()
        assert next(parts) == b"first\n"
        wait_for(lambda: any(r["path"] == "/held" for r in target.requests), 20,
                 "the held request to reach the target")
        started = time.monotonic()
        assert delete(penv.server, penv.id, tunnel["id"], force=1).status_code == 204
        took = time.monotonic() - started
        with pytest.raises(httpx.TransportError):
            b"".join(parts)
    thread.join(20)
    target.gate.set()
    assert isinstance(outcomes.get("held"), httpx.TransportError), outcomes  # not a 500
    assert refuses(lport)
    new_log = penv.server.log()[log_before:]
    for bad in ("Traceback", "ERROR", "Exception in ASGI application"):
        assert bad not in new_log, new_log
    assert took < 2, f"DELETE took {took:.2f}s"  # the proxy did not wait for its clients


def test_delete_with_idle_keep_alive_clients_is_quiet(penv: ProxyEnv, brief_target: WebTarget) -> None:
    """A client that keeps its TLS connection open after its requests is not waited for (a
    graceful TLS shutdown would wait for its close_notify)."""
    assert penv.server.proc is not None
    tunnel = penv.proxied(brief_target)
    lport = int(tunnel["lport"])
    log_before = len(penv.server.log())
    with https_client(penv.pki, lport) as client:
        assert client.get("/landed").text == "landed"
        started = time.monotonic()
        assert delete(penv.server, penv.id, tunnel["id"], force=1).status_code == 204
        took = time.monotonic() - started
        assert refuses(lport)
    new_log = penv.server.log()[log_before:]
    assert "ERROR" not in new_log and "Traceback" not in new_log, new_log
    assert took < 2, f"DELETE took {took:.2f}s"


def test_delete_after_the_client_is_done(penv: ProxyEnv, brief_target: WebTarget) -> None:
    """Once the user's requests are over, the client has closed its connection and the target
    its idle one, the tunnel has no active connection: DELETE without force succeeds (the
    proxy's own pooled connection to the raw tunnel is not a user's connection)."""
    tunnel = penv.proxied(brief_target)
    lport = int(tunnel["lport"])
    with https_client(penv.pki, lport) as client:
        assert client.get("/landed").text == "landed"

    def deleted() -> bool:
        resp = delete(penv.server, penv.id, tunnel["id"])
        assert resp.status_code in (204, 409), resp.text
        return resp.status_code == 204
    # the proxy may keep its idle connection for its pool's keep-alive expiry (5 s)
    wait_for(deleted, 20, "DELETE without force to succeed", interval=0.5)
    assert refuses(lport)


def test_agent_reconnect_restores_the_proxy(make_server: Callable[..., Server],
                                            make_agent: Callable[..., Agent], pki: Pki,
                                            targets: Targets) -> None:
    server = make_server("restore", extra=proxy_config(pki))
    agent = make_agent(server, "rs1")
    tunnel = created(put(server, "rs1", remote=targets.http.port, http_proxy=1, host_header="www.example.com",
                         auth_user="alice", auth_password="pw"))
    lport = int(tunnel["lport"])
    agent.stop()
    server.wait_disconnected("rs1")
    wait_for(lambda: refuses(lport), 10, "the proxy to close with the agent gone")
    make_agent(server, "rs1")
    restored = wait_for(lambda: next((t for t in all_tunnels(server) if t["id"] == tunnel["id"]), None), 20,
                        "the proxied tunnel to be restored")
    assert restored["http_proxy"] is True and restored["host_header"] == "www.example.com"
    new_lport = int(restored["lport"])
    assert restored["tunnel_url"] == f"https://localhost:{new_lport}"
    with https_client(pki, new_lport) as client:
        assert client.get("/echo-headers").status_code == 401
        echoed = client.get("/echo-headers", auth=("alice", "pw")).json()
    assert headers_of(echoed)["host"] == ["www.example.com"]


# == a browser ================================================================================================

@pytest.mark.timeout(180)
def test_chromium_renders_page_with_javascript_and_websocket(penv: ProxyEnv, tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    lport = int(penv.proxied()["lport"])
    url = f"https://localhost:{lport}/index.html"
    # Chromium has its own certificate store without the test CA: the proxy's certificate (by its
    # key's hash) is accepted for this run; everything else, TLS included, is the browser's own.
    with HeadlessChromium(binary, tmp_path / "chromium-profile", [
            f"--ignore-certificate-errors-spki-list={_spki_hash(penv.pki)}",
            "--ignore-certificate-errors"]) as browser:
        browser.open(url)
        # the WebSocket's paragraph of our page, once it changed (an echo, or an error)
        ws_text = (f"location.href === {json.dumps(url)} && document.getElementById('ws') "
                   "? document.getElementById('ws').textContent : null")
        wait_for(lambda: browser.evaluate(ws_text) not in (None, "no websocket echo"), 60,
                 "the page's WebSocket to answer or fail")
        dom = browser.evaluate("document.documentElement.outerHTML")
    assert "<h1>static part</h1>" in dom, dom
    assert f'<p id="js">{JS_TEXT}</p>' in dom, dom
    assert f'<p id="ws">echo:{WS_TEXT}</p>' in dom, dom
    handshake = headers_of(penv.http.last("/ws"))
    assert handshake["x-forwarded-proto"] == ["https"]
    assert headers_of(penv.http.last("/index.html"))["user-agent"][0].find("Chrome") >= 0


def _spki_hash(pki: Pki) -> str:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_der_x509_certificate(pki.cert_der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode()


def test_proxy_adds_no_request_headers_and_one_date(penv: ProxyEnv) -> None:
    """Headers the client did not send (httpx's own Accept-Encoding, User-Agent) are not added
    towards the target, and the response carries the target's Date only."""
    tunnel = penv.proxied()
    lport = int(tunnel["lport"])
    rc, body, status = curl(penv.pki, lport, "/echo-headers", "-H", "User-Agent:", "-H", "Accept:")
    assert rc == 0 and status == 200, body
    seen = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert "accept-encoding" not in seen and "user-agent" not in seen and "accept" not in seen
    result = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "--cacert", str(penv.pki.ca_file),
                             "--resolve", f"localhost:{lport}:127.0.0.1", f"https://localhost:{lport}/small"],
                            capture_output=True, text=True, timeout=30, check=True)
    assert sum(1 for line in result.stdout.splitlines() if line.lower().startswith("date:")) == 1


# == 5. HTTP/1.1 at the edges: framing, errors, pipelining, flow control ================================
#
# A raw target (a TCP server whose answers are written byte for byte) for what a well-behaved
# framework would not send: bodies ended by the connection's close, a HEAD answer announcing a
# length, interim 100 Continue, hop-by-hop headers, a cut or invalid response, a body without end.

class RawHttpTarget(ThreadedTcpServer):
    scheme = "http"
    """Answers by path (see ``_answer``); records each request's head as bytes in ``heads``;
    ``sent`` counts the bytes ``/endless`` has sent, ``received`` those ``/sink`` has read."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.sent = 0
        self.received = 0
        super().__init__(self._serve)

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            self.heads.append(head)
            method, path = head.split(b" ", 2)[:2]
            fields = {k.strip().lower(): v.strip() for k, _, v in
                      (line.partition(b":") for line in head.split(b"\r\n")[1:])}
            if not self._answer(conn, method, path, fields, buf):
                return
            buf = b""

    def _answer(self, conn: socket.socket, method: bytes, path: bytes, fields: dict[bytes, bytes],
                rest: bytes) -> bool:
        """Answer one request; False closes the connection."""
        if path == b"/close-delimited":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                         + b"until the end " * 1000)
            return False
        if path == b"/head-length":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n"
                         + (b"" if method == b"HEAD" else b"x" * 1234))
            return True
        if path == b"/continue":
            length = int(fields[b"content-length"])
            if fields.get(b"expect", b"").lower() == b"100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = rest
            while len(body) < length:
                body += conn.recv(1 << 16)
            answer = hashlib.sha256(body).hexdigest().encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            return True
        if path == b"/hop-by-hop":
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
                         b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\n"
                         b"Content-Length: 2\r\n\r\nok")
            return True
        if path == b"/cut":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            return False
        if path == b"/garbage":
            conn.sendall(b"this is not HTTP\r\n\r\n")
            return False
        if path == b"/endless":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            block = os.urandom(1 << 16)
            while True:
                conn.sendall(block)  # blocks once nobody reads: that is what the test looks at
                self.sent += len(block)
        if path == b"/sink":
            self.received += len(rest)
            while self.received < 1 << 16:  # read 64 KiB, then nothing more
                self.received += len(conn.recv(1 << 16))
            threading.Event().wait(60)
            return False
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


@pytest.fixture(scope="module")
def raw_target() -> Iterator[RawHttpTarget]:
    with RawHttpTarget() as target:
        yield target


def tls_connect(pki: Pki, lport: int) -> ssl.SSLSocket:
    sock = connect(lport, timeout=30)
    return pki.client_context().wrap_socket(sock, server_hostname="localhost")


def read_response(sock: ssl.SSLSocket, buf: bytes = b"", *, head_only: bool = False) -> tuple[int, dict[str, str], bytes, bytes]:
    """One response from ``sock`` (Content-Length or chunked): (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {buf!r}")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if head_only:
        return status, headers, b"", buf
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buf) < length:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed in a body")
            buf += chunk
        return status, headers, buf[:length], buf[length:]
    body = b""
    while True:  # chunked
        while b"\r\n" not in buf:
            buf += sock.recv(1 << 16)
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line, 16)
        while len(buf) < size + 2:
            buf += sock.recv(1 << 16)
        body, buf = body + buf[:size], buf[size + 2:]
        if size == 0:
            return status, headers, body, buf


def test_malformed_and_oversized_requests_get_clear_errors(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    seen = len(penv.http.requests)
    cases = [
        (b"NOT A REQUEST\r\n\r\n", 400, "Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431,
         "Request Header Fields Too Large"),
        (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "URI Too Long"),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-Many: 1\r\n" * 300 + b"\r\n", 431,
         "Request Header Fields Too Large"),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
         "Bad Request"),
    ]
    for request, status, text in cases:
        with tls_connect(penv.pki, lport) as tls:
            tls.sendall(request)
            got, headers, body, _ = read_response(tls)
            assert (got, headers.get("connection")) == (status, "close"), (request[:40], got, body)
            assert body.decode().startswith(text), body
            assert is_closed_by_peer(tls)
    # a head that does not end is refused once it is too large, before it ends
    with tls_connect(penv.pki, lport) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Endless: " + b"a" * 200_000)
        got, headers, body, _ = read_response(tls)
        assert (got, headers.get("connection")) == (431, "close"), body
    assert len(penv.http.requests) == seen  # none reached the target
    with https_client(penv.pki, lport) as client:  # the proxy still serves
        assert client.get("/landed").text == "landed"


def test_pipelined_requests_are_answered_in_order(penv: ProxyEnv) -> None:
    lport = int(penv.proxied()["lport"])
    with tls_connect(penv.pki, lport) as tls:
        tls.sendall(b"".join(b"GET /echo-headers?n=%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(5))
                    + b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc"
                    + b"GET /landed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        rest = b""
        for i in range(5):
            status, _, body, rest = read_response(tls, rest)
            assert status == 200 and json.loads(body)["query"] == f"n={i}"
        status, _, body, rest = read_response(tls, rest)
        assert json.loads(body)["sha256"] == hashlib.sha256(b"abc").hexdigest()
        status, headers, body, rest = read_response(tls, rest)
        assert (status, body, headers["connection"]) == (200, b"landed", "close")
        assert is_closed_by_peer(tls)


def test_response_framings_pass_through(penv: ProxyEnv, raw_target: RawHttpTarget) -> None:
    lport = int(penv.proxied(raw_target, scheme="http")["lport"])
    with https_client(penv.pki, lport) as client:
        # a body the target ends by closing its connection: chunked to the client, which keeps its own
        resp = client.get("/close-delimited")
        assert resp.status_code == 200 and resp.content == b"until the end " * 1000
        assert resp.headers["transfer-encoding"] == "chunked"
        # HEAD: the announced length, no body; the connection goes on
        head = client.head("/head-length")
        assert (head.status_code, head.headers["content-length"], head.content) == (200, "1234", b"")
        assert client.get("/head-length").content == b"x" * 1234
        # hop-by-hop headers of the target's, and those its Connection names, stay behind
        hop = client.get("/hop-by-hop")
        assert hop.text == "ok" and hop.headers["x-kept"] == "yes"
        for name in ("x-secret", "keep-alive", "proxy-authenticate", "connection"):
            assert name not in hop.headers, name
        assert len({local_port(r) for r in (resp, head, hop)}) == 1  # one client connection
    # an HTTP/1.0 client gets the open-ended body delimited by the close instead
    with tls_connect(penv.pki, lport) as tls:
        tls.sendall(b"GET /close-delimited HTTP/1.0\r\nHost: localhost\r\n\r\n")
        answer = recv_all(tls)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and body == b"until the end " * 1000


@needs_curl
def test_expect_100_continue(penv: ProxyEnv, raw_target: RawHttpTarget, tmp_path: Path) -> None:
    lport = int(penv.proxied(raw_target, scheme="http")["lport"])
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(200_000))
    rc, body, status = curl(penv.pki, lport, "/continue", "-H", "Expect: 100-continue",
                            "--data-binary", f"@{payload}", "-H", "Content-Type: application/octet-stream")
    assert (rc, status) == (0, 200)
    assert body == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_request_hop_by_hop_headers_stay_at_the_proxy(penv: ProxyEnv, raw_target: RawHttpTarget) -> None:
    lport = int(penv.proxied(raw_target, scheme="http")["lport"])
    with tls_connect(penv.pki, lport) as tls:
        tls.sendall(b"GET /head-length HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, X-Drop\r\n"
                    b"X-Drop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\n"
                    b"X-Stay: 2\r\n\r\n")
        status, _, _, _ = read_response(tls)
    assert status == 200
    head = raw_target.heads[-1].lower()
    for name in (b"x-drop", b"keep-alive", b"te:", b"proxy-authorization"):
        assert name not in head, head
    assert b"x-stay: 2" in head and b"x-forwarded-proto: https" in head


def test_target_failures_are_bad_gateway_or_a_cut(penv: ProxyEnv, raw_target: RawHttpTarget) -> None:
    lport = int(penv.proxied(raw_target, scheme="http")["lport"])
    with https_client(penv.pki, lport) as client:
        garbage = client.get("/garbage")
        assert garbage.status_code == 502 and garbage.text.startswith("Bad Gateway: invalid response")
        # cut in the middle of its body: the client's transfer is cut too (never a complete 200)
        with pytest.raises(httpx.TransportError):
            client.get("/cut")
        assert client.get("/head-length").status_code == 200  # the proxy goes on
    assert penv.server.proc is not None
    assert "Traceback" not in penv.server.log()


def test_flow_control_bounds_what_the_proxy_holds(penv: ProxyEnv, raw_target: RawHttpTarget) -> None:
    """A client that stops reading stops the target's sending (after what the buffers and the
    stream's window hold); a target that stops reading stops the client's sending."""
    lport = int(penv.proxied(raw_target, scheme="http")["lport"])
    limit = 48 * MIB  # socket buffers, the tunnel's window and the proxy's transports: far less
    with tls_connect(penv.pki, lport) as tls:
        tls.sendall(b"GET /endless HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert tls.recv(1 << 16).startswith(b"HTTP/1.1 200")
        previous = [-1]

        def stalled() -> bool:  # two looks half a second apart saw the same count
            now, before = raw_target.sent, previous[0]
            previous[0] = now
            return now == before > 0
        wait_for(stalled, 60, "the target's sending to stall", interval=0.5)
        assert raw_target.sent < limit, raw_target.sent
    with tls_connect(penv.pki, lport) as tls:
        tls.sendall(b"POST /sink HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000\r\n\r\n")
        tls.settimeout(3)
        sent = 0
        with pytest.raises(TimeoutError):
            while sent < limit:
                tls.sendall(b"u" * 65536)  # times out once everything in between is full
                sent += 65536
        assert raw_target.received >= 1 << 16


def test_no_deprecation_warnings_in_the_log(penv: ProxyEnv) -> None:
    """Using the proxy (a request and a WebSocket) writes no warning to rportd's log (it used
    to: uvicorn's deprecated websockets implementation, at each proxied tunnel)."""
    assert penv.server.proc is not None
    lport = int(penv.proxied()["lport"])
    with https_client(penv.pki, lport) as client:
        assert client.get("/landed").text == "landed"
    with ws_connect(f"wss://localhost:{lport}/ws", ssl=ws_tls(penv.pki), open_timeout=20) as ws:
        ws.send("warn?")
        assert ws.recv(timeout=20) == "warn?"
    log = penv.server.log()
    for bad in ("deprecated", "Warning", "Traceback"):
        assert bad not in log, log
