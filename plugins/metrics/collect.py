"""The metrics of the core: agents and clients, agent handshakes that failed, bans, API
requests; counted from the core's events, or read from the server at each scrape. One
CollectorRegistry per server (tests run several servers in one process)."""

from __future__ import annotations

from importlib import metadata
from typing import Any, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily

from rport.core.plugin import AgentRefused

API_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HANDSHAKE_REASONS = ("auth", "banned", "throttled", "invalid_hello", "incompatible", "duplicate",
                     "plugin", "timeout", "protocol", "closed")
BAN_SCOPES = ("agent", "api")


class _ServerGauges:
    """Values read from the server at each scrape."""

    def __init__(self, server: Any) -> None:
        self.server = server
        try:
            self.version = metadata.version("rport-py")
        except metadata.PackageNotFoundError:
            self.version = "unknown"

    def describe(self) -> list[Any]:
        return list(self._families(0, 0))

    def collect(self) -> Iterator[Any]:
        yield from self._families(*self.server.clients.counts())

    def _families(self, connected: int, disconnected: int) -> Iterator[Any]:
        yield GaugeMetricFamily("rport_agents_connected", "Agents connected now.",
                                value=connected)
        yield GaugeMetricFamily("rport_clients_disconnected",
                                "Clients known but disconnected (kept for "
                                "server.keep_disconnected_clients).", value=disconnected)
        info = GaugeMetricFamily("rport_build_info", "The rportd version (value 1).",
                                 labels=["version"])
        info.add_metric([self.version], 1)
        yield info


class CoreMetrics:
    """The registry of one server, with the core's metrics; the event handlers count."""

    def __init__(self, server: Any) -> None:
        # No *_created series (a timestamp per counter): noise on a dashboard. (A setting of the
        # library, for every registry in the process: the same for every server.)
        disable_created_metrics()
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(_ServerGauges(server))
        self.api_requests = Counter(
            "rport_api_requests", "API requests answered, by route name, method and status.",
            ["route", "method", "status"], registry=registry)
        self.api_seconds = Histogram(
            "rport_api_request_duration_seconds",
            "Time to answer an API request (until the response starts), by route name.",
            ["route"], buckets=API_BUCKETS, registry=registry)
        self.agent_connections = Counter(
            "rport_agent_connections", "Agents admitted (successful handshakes).",
            registry=registry)
        self.agent_disconnections = Counter(
            "rport_agent_disconnections", "Agent sessions that ended.", registry=registry)
        self.handshake_failures = Counter(
            "rport_agent_handshake_failures",
            "Agent connections that ended before admission, by reason: auth, banned, "
            "throttled, invalid_hello, incompatible, duplicate, plugin, timeout, protocol, "
            "closed.", ["reason"], registry=registry)
        self.bans = Counter(
            "rport_bans", "Addresses banned after too many failed logins in a row, by scope "
            "(agent: agent logins; api: API logins).", ["scope"], registry=registry)
        for reason in HANDSHAKE_REASONS:  # every series exists from the start, at 0
            self.handshake_failures.labels(reason)
        for scope in BAN_SCOPES:
            self.bans.labels(scope)

    # -- event handlers (subscribers) ---------------------------------------------------------

    async def api_request(self, event: Any) -> None:
        self.api_requests.labels(event.route, event.method, str(event.status)).inc()
        self.api_seconds.labels(event.route).observe(event.seconds)

    async def connected(self, event: Any) -> None:
        self.agent_connections.inc()

    async def disconnected(self, event: Any) -> None:
        self.agent_disconnections.inc()

    async def refused(self, event: AgentRefused) -> None:
        self.handshake_failures.labels(event.reason).inc()

    async def banned(self, event: Any) -> None:
        self.bans.labels(event.scope).inc()
