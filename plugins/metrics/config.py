"""[plugins.metrics] in rportd.conf."""

from __future__ import annotations

import attrs


@attrs.frozen
class MetricsConfig:
    api: bool = True
    """Serve GET /api/v1/metrics on the API, for administrators (Basic with an API token, or
    a Bearer token), as any API route."""
    address: str = ""
    """Also serve GET /metrics on this address, without authentication: "" (the default)
    none; ":9090" is 127.0.0.1:9090. Anyone who reaches it reads the metrics: keep it on
    loopback or a private network."""
