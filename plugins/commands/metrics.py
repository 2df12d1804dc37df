"""The commands' metrics (for the metrics plugin's ``rport_register_metrics``): jobs finished
by status and jobs running, read from the service at each scrape. Imported only when the
metrics plugin asks."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .jobs import FINAL


class CommandsCollector:
    def __init__(self, service_of: Callable[[], Any]) -> None:
        self.service_of = service_of

    def describe(self) -> list[Any]:
        return list(self._families(None))

    def collect(self) -> Iterator[Any]:
        yield from self._families(self.service_of())

    def _families(self, service: Any) -> Iterator[Any]:
        finished = CounterMetricFamily(
            "rport_jobs_finished", "Command jobs that ended, by status (successful, failed, "
            "cancelled, unknown, skipped).", labels=["status"])
        counts = service.finished if service is not None else {}
        for status in FINAL:
            finished.add_metric([status], counts.get(status, 0))
        yield finished
        yield GaugeMetricFamily("rport_jobs_running", "Command jobs running now.",
                                value=service.running if service is not None else 0)
