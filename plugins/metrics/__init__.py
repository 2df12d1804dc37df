"""metrics: Prometheus metrics of the server (prometheus-client), at ``GET /api/v1/metrics``
behind the API's authentication (administrators) and, when ``[plugins.metrics] address`` is
set, at ``/metrics`` on a separate address without authentication (loopback by default).
Other plugins add theirs with the hook ``rport_register_metrics``."""
