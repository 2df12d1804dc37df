"""``[database] url``: which database the store uses, checked before anything starts.

Supported: SQLite (``sqlite:///path``, the embedded default, no service needed) and PostgreSQL
(``postgresql://user:password@host:port/dbname``, through psycopg 3). Messages never repeat the
URL itself, which may hold a password; :func:`display` hides it for logs.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

EXAMPLES = "postgresql://user:password@host:5432/dbname or sqlite:////absolute/path/rportd.db"

# backend -> drivers accepted in "backend+driver://" and the one a bare "backend://" means
_DRIVERS = {
    "sqlite": (("pysqlite", "aiosqlite"), "pysqlite"),
    "postgresql": (("psycopg",), "psycopg"),
}
CONNECT_TIMEOUT = 10
"""Seconds to wait for a PostgreSQL connection unless the URL says ``connect_timeout``."""


def sqlite_url(path: Path) -> URL:
    return URL.create("sqlite+pysqlite", database=str(path))


def parse_url(text: str) -> URL:
    """The SQLAlchemy URL of ``[database] url``, with its driver made explicit; ValueError with
    a message for the operator otherwise."""
    text = text.strip()
    scheme = text.partition("://")[0] if "://" in text else ""
    if not scheme:
        raise ValueError(f"not a database URL (use {EXAMPLES})")
    try:
        url = sa.make_url(text)
    except Exception:
        raise ValueError(f"not a valid {scheme} URL (use {EXAMPLES})") from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":  # libpq's alias, which SQLAlchemy no longer accepts
        backend = "postgresql"
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database {scheme!r}: rportd stores its data in "
                         f"PostgreSQL or SQLite (use {EXAMPLES})")
    drivers, default = _DRIVERS[backend]
    if driver and driver not in drivers:
        raise ValueError(f"unsupported driver {driver!r} for {backend} "
                         f"(use {', '.join(f'{backend}+{d}' for d in drivers)}, or {backend}://)")
    url = url.set(drivername=f"{backend}+{driver or default}")
    if backend == "sqlite":
        if not url.database:
            raise ValueError("a SQLite URL needs a file: sqlite:////absolute/path/rportd.db")
    else:
        if not url.database:
            raise ValueError("a PostgreSQL URL needs a database name: "
                             "postgresql://user:password@host:5432/dbname")
        if url.port is not None and not 0 < url.port < 65536:
            raise ValueError(f"invalid port {url.port}")
    return url


def connect_args(url: URL) -> dict[str, object]:
    """Driver options rportd adds unless the URL sets them."""
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        return {"connect_timeout": CONNECT_TIMEOUT}
    return {}


def display(url: URL) -> str:
    """The URL for logs and messages: the password hidden."""
    return url.render_as_string(hide_password=True)


def describe(url: URL) -> str:
    """``PostgreSQL at host:port/db`` / ``SQLite at /path``, for start-up messages."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite at {url.database}"
    host = url.host or url.query.get("host") or "the local socket"
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL at {host}{port}/{url.database}"
