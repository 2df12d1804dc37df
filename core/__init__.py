"""rport for Python: the server core (agent sessions, event bus, API router, plugin managers)."""

__version__ = "0.1.0"
