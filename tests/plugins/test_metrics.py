"""End to end: Prometheus metrics (plugin metrics) of a real rportd with real agents and a real
target: behind the API's authentication (administrators) at /api/v1/metrics, and without
authentication at /metrics on a separate address (loopback when only a port is given); values
that follow agents connecting and failing to log in, tunnels carrying bytes, jobs finishing,
API requests and bans. Metrics are parsed with prometheus_client's own parser; counters are
counted from events, so tests poll until they change, never sleep.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..procs import Agent, Proc, Server, running, wait_for
from ..targets import EchoServer, connect, free_port, recv_exactly

USERS = [
    {"username": "admin", "password": "foobaz", "groups": ["Administrators"]},
    {"username": "alice", "password": "alice-pass", "groups": ["Ops"]},
]
OPEN_COMMANDS = {"allow": [".*"], "deny": []}
_LISTENING = re.compile(r"metrics listening on http://([\d.]+):(\d+)/metrics")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


class Metered:
    def __init__(self, server: Server, echo: EchoServer | None = None) -> None:
        self.server = server
        assert server.api is not None
        self.api = server.api
        self.echo = echo
        assert server.proc is not None  # the listener starts just after the API: its log line
        host, port = server.proc.wait_log(_LISTENING).groups()
        self.listener = f"http://{host}:{port}/metrics"

    def scrape(self) -> str:
        """From the separate listener (no credentials, not throttled)."""
        resp = httpx.get(self.listener, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.text

    def value(self, name: str, **labels: str) -> float:
        return value(self.scrape(), name, **labels)

    def wait(self, name: str, predicate: Any, what: str = "", **labels: str) -> float:
        return wait_for(lambda: (v := self.value(name, **labels), predicate(v))[1] and v,
                        what=what or f"{name}{labels}")


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    """A server with the separate listener on a port of its choosing (":0": loopback), users
    admin and alice, and one agent that may run any command."""
    root: Path = tmp_path_factory.mktemp("metrics")
    users = root / "api-users.json"
    users.write_text(json.dumps(USERS))
    server = Server(root / "server", extra={"api": {"auth": "", "auth_file": str(users)},
                                            "plugins": {"metrics": {"address": ":0"}}}).start()
    agent = Agent(root / "agent-m1", server, "m1", config={"remote-commands": OPEN_COMMANDS})
    with EchoServer() as echo, running(server, [agent]):
        yield Metered(server, echo)


def test_metrics_need_an_administrator_on_the_api_and_nothing_on_their_own_address(
        metered: Metered) -> None:
    api = metered.api
    resp = api.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert value(resp.text, "rport_agents_connected") == 1
    names = {f.name for f in text_string_to_metric_families(resp.text)}
    assert {"rport_agents_connected", "rport_tunnels_open", "rport_tunnel_bytes",
            "rport_jobs_finished", "rport_api_requests", "rport_agent_handshake_failures",
            "rport_bans", "rport_auditlog_entries_written", "process_resident_memory_bytes",
            "rport_build_info"} <= names
    # the same metrics on the separate address, without credentials; loopback by default
    assert metered.listener.startswith("http://127.0.0.1:")
    assert {f.name for f in text_string_to_metric_families(metered.scrape())} == names
    with httpx.Client(timeout=10) as anonymous:
        assert anonymous.get(metered.server.api_url + "/api/v1/metrics").status_code == 401
        assert anonymous.post(metered.listener).status_code == 405
        assert anonymous.get(metered.listener.replace("/metrics", "/other")).status_code == 404
        openmetrics = anonymous.get(metered.listener,
                                    headers={"Accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")
    with httpx.Client(base_url=metered.server.api_url + "/api/v1", auth=("alice", "alice-pass"),
                      timeout=10) as alice:
        resp = alice.get("/metrics")
        assert resp.status_code == 403 and resp.json()["errors"][0]["title"] == \
            "current user should belong to Administrators group to access this resource"
    # a Prometheus server scrapes with an administrator's API token of scope read
    token = api.post("/me/tokens", json={"scope": "read", "name": "prometheus"}).json()["data"]
    with httpx.Client(auth=("admin", token["token"]), timeout=10) as prometheus:
        assert prometheus.get(metered.server.api_url + "/api/v1/metrics").status_code == 200


def test_metrics_follow_agents_tunnels_jobs_and_requests(metered: Metered, tmp_path: Path) -> None:
    api, server = metered.api, metered.server
    start = samples(metered.scrape())

    def since(name: str, **labels: str) -> float:
        return metered.value(name, **labels) - start.get((name, tuple(sorted(labels.items()))), 0)

    # agents: one more connects, then leaves; one with a wrong password is refused
    extra = Agent(tmp_path / "agent-m2", server, "m2")
    server.wait_connected("m2")
    assert metered.value("rport_agents_connected") == 2
    wait_for(lambda: since("rport_agent_connections_total") == 1, what="a connection counted")
    extra.stop()
    server.wait_disconnected("m2")
    assert metered.value("rport_agents_connected") == 1
    assert metered.value("rport_clients_disconnected") == 1
    wait_for(lambda: since("rport_agent_disconnections_total") == 1, what="a disconnection")
    intruder = Agent(tmp_path / "agent-bad", server, "bad", auth="user1:wrong")
    try:
        wait_for(lambda: since("rport_agent_handshake_failures_total", reason="auth") >= 1,
                 what="a failed agent login")
    finally:
        intruder.stop()

    # a tunnel: open, a connection carrying 200 KiB each way, counted while open and after
    assert metered.echo is not None
    resp = api.put("/clients/m1/tunnels", params={"remote": f"127.0.0.1:{metered.echo.port}"})
    assert resp.status_code == 200, resp.text
    tunnel = resp.json()["data"]
    assert metered.value("rport_tunnels_open") == 1
    payload = bytes(range(256)) * 800  # 204,800 bytes
    with connect(int(tunnel["lport"])) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        assert metered.value("rport_tunnel_connections_open") == 1
        assert since("rport_tunnel_bytes_total", direction="upstream") >= len(payload)
        assert since("rport_tunnel_bytes_total", direction="downstream") >= len(payload)
    wait_for(lambda: metered.value("rport_tunnel_connections_open") == 0, what="connection end")
    assert since("rport_tunnel_connections_total") == 1
    up = since("rport_tunnel_bytes_total", direction="upstream")
    assert len(payload) <= up < len(payload) + 4096  # the check_port dial carries nothing
    assert api.delete(f"/clients/m1/tunnels/{tunnel['id']}").status_code == 204
    assert metered.value("rport_tunnels_open") == 0
    assert since("rport_tunnel_bytes_total", direction="upstream") == up  # kept after closing

    # a job finishes
    resp = api.post("/clients/m1/commands", json={"command": "/bin/true"})
    assert resp.status_code == 200, resp.text
    wait_for(lambda: since("rport_jobs_finished_total", status="successful") == 1,
             what="a finished job")
    assert metered.value("rport_jobs_running") == 0

    # API requests by route, method and status (an unknown client is a 404 of core:client)
    assert api.get("/clients/nope-metrics").status_code == 404
    wait_for(lambda: since("rport_api_requests_total", route="core:client", method="GET",
                           status="404") >= 1, what="a 404 counted")
    assert since("rport_api_requests_total", route="tunnels:create", method="PUT",
                 status="200") == 1
    assert since("rport_api_request_duration_seconds_count", route="tunnels:create") == 1


def test_bans_are_counted(make_server: Any, make_agent: Any) -> None:
    """Two failed logins in a row ban the address, for agents and for the API; the separate
    listener still answers (it has no logins)."""
    server = make_server(extra={
        "server": {"max_failed_login": 2, "client_login_wait": "0.1s", "ban_time": "1h"},
        "api": {"max_failed_login": 2, "ban_time": "1h"},
        "plugins": {"metrics": {"address": "127.0.0.1:0"}}})
    metered = Metered(server)
    intruder = make_agent(server, "bad", auth="user1:wrong", wait=False)
    metered.wait("rport_bans_total", lambda v: v == 1, scope="agent")
    assert metered.value("rport_agent_handshake_failures_total", reason="auth") == 2
    intruder.stop()
    # the address is banned now: even the right password is refused from it
    make_agent(server, "good", wait=False)
    metered.wait("rport_agent_handshake_failures_total", lambda v: v >= 1, reason="banned")
    with httpx.Client(base_url=server.api_url + "/api/v1", auth=("admin", "wrong"),
                      timeout=10) as guesser:
        assert guesser.get("/status").status_code == 401
        assert guesser.get("/status").status_code == 401
        assert guesser.get("/status").json()["errors"][0]["title"] == "unauthorized"
    metered.wait("rport_bans_total", lambda v: v == 1, scope="api")
    assert metered.value("rport_api_requests_total", route="core:status", method="GET",
                         status="401") == 3
    assert "banned" in server.log() or "too many failed logins" in server.log()


# -- the Grafana dashboard, against a real Prometheus ----------------------------------------

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "rport-dashboard.json"


@pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                    reason="Prometheus is not installed (Debian package prometheus; .ci/run "
                           "installs it)")
def test_the_grafana_dashboard_queries_work_on_a_real_prometheus(metered: Metered,
                                                                   tmp_path: Path) -> None:
    """Prometheus scrapes the separate listener every second; every query of every panel of
    docs/grafana/rport-dashboard.json (Grafana's variables filled in) evaluates without error
    and returns series; the exposition passes promtool's lint."""
    lint = subprocess.run(["promtool", "check", "metrics"], input=metered.scrape(),
                          capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    port = free_port(20000, 30000, host="127.0.0.1")
    target = metered.listener.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: rportd
    static_configs:
      - targets: ["{target}"]
""")
    prometheus = Proc(["prometheus", f"--config.file={config}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                       f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                      tmp_path / "prometheus.log")
    base = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list[Any]:
        resp = httpx.get(f"{base}/query", params={"query": expr}, timeout=10)
        assert resp.status_code == 200, (expr, resp.text)
        body = resp.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    try:
        def scraped() -> bool:
            try:
                return len(query("rport_agents_connected[30s]")[0]["values"]) >= 3
            except (httpx.HTTPError, AssertionError, IndexError, KeyError):
                return False

        assert metered.api.get("/clients/nope-dashboard").status_code == 404  # an API error
        wait_for(scraped, timeout=30, what="three scrapes by Prometheus")
        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [(panel["title"], target["expr"]) for panel in dashboard["panels"]
                 for target in panel["targets"]]
        assert len(exprs) >= 20
        for title, expr in exprs:
            filled = expr.replace("$__rate_interval", "30s").replace("$instance", ".*")
            assert query(filled), f"panel {title!r}: no series for {filled}"
        assert query('up{job="rportd"}')[0]["value"][1] == "1"
    finally:
        prometheus.stop()
