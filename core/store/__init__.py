"""The store: one database (SQLite by default, PostgreSQL with ``[database] url``) for the core
and every plugin, through SQLAlchemy Core, with each owner's schema migrated by Alembic.

See :mod:`.engine` for the interface (``await store.run(fn, ...)``) and :mod:`.migrate` for
migrations."""

from .batch import WriteBatcher
from .engine import Store, StoreError
from .ordering import KeyedLocks
from .schema import StoreSchema, upsert
from .url import parse_url

__all__ = ["KeyedLocks", "Store", "StoreError", "StoreSchema", "WriteBatcher", "parse_url",
           "upsert"]
