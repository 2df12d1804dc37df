"""The audit log's metrics (for the metrics plugin's ``rport_register_metrics``): entries
written, dropped, failed, rotated out. Imported only when the metrics plugin asks."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily


class AuditlogCollector:
    def __init__(self, service_of: Callable[[], Any]) -> None:
        self.service_of = service_of

    def describe(self) -> list[Any]:
        return list(self._families(None))

    def collect(self) -> Iterator[Any]:
        yield from self._families(self.service_of())

    def _families(self, s: Any) -> Iterator[Any]:
        yield CounterMetricFamily("rport_auditlog_entries_written", "Audit log entries written.",
                                  value=s.written if s else 0)
        yield CounterMetricFamily(
            "rport_auditlog_entries_dropped",
            "Audit log entries dropped: the writer's queue was full (the database did not keep "
            "up).", value=s.dropped if s else 0)
        yield CounterMetricFamily("rport_auditlog_entries_failed",
                                  "Audit log entries that could not be written (see the log).",
                                  value=s.failed if s else 0)
        rotated = CounterMetricFamily("rport_auditlog_entries_rotated",
                                      "Audit log entries rotated out, archived or deleted.",
                                      labels=["how"])
        rotated.add_metric(["archived"], s.archived if s else 0)
        rotated.add_metric(["deleted"], s.deleted if s else 0)
        yield rotated
