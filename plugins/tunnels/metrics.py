"""The tunnels' metrics (for the metrics plugin's ``rport_register_metrics``): read from the
service at each scrape, so the data path counts nothing for them. Imported only when the
metrics plugin asks."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class TunnelsCollector:
    def __init__(self, service_of: Callable[[], Any]) -> None:
        self.service_of = service_of
        self._last: dict[str, int] = {}

    def _monotonic(self, name: str, value: int) -> int:
        # a connection that ended a moment ago may be in neither the open nor the ended ones
        # (its tunnel closed, its callback not run yet): a counter never goes back
        value = max(value, self._last.get(name, 0))
        self._last[name] = value
        return value

    def describe(self) -> list[Any]:
        return list(self._families({}))

    def collect(self) -> Iterator[Any]:
        service = self.service_of()
        yield from self._families(service.traffic_totals() if service is not None else {})

    def _families(self, t: dict[str, int]) -> Iterator[Any]:
        yield GaugeMetricFamily("rport_tunnels_open", "Tunnels open now.", value=t.get("tunnels", 0))
        yield GaugeMetricFamily("rport_tunnel_connections_open",
                                "Tunnelled connections open now.",
                                value=t.get("open_connections", 0))
        yield CounterMetricFamily("rport_tunnel_connections",
                                  "Tunnelled connections accepted (past the ACL).",
                                  value=self._monotonic("connections", t.get("connections", 0)))
        yield CounterMetricFamily("rport_tunnel_acl_refusals",
                                  "Connections to tunnels refused by their ACL.",
                                  value=self._monotonic("refused", t.get("refused", 0)))
        moved = CounterMetricFamily(
            "rport_tunnel_bytes", "Bytes carried by tunnels: upstream (to the target, through "
            "the agent) and downstream (back from it).", labels=["direction"])
        moved.add_metric(["upstream"], self._monotonic("sent", t.get("sent", 0)))
        moved.add_metric(["downstream"], self._monotonic("received", t.get("received", 0)))
        yield moved
