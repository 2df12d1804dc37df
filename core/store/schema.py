"""What a plugin (or the core) declares about its tables: :class:`StoreSchema`, and the one
dialect-dependent statement the built-in plugins need, :func:`upsert`."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Iterable

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

_OWNER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}$")


@attrs.frozen
class StoreSchema:
    """A plugin's tables and its migrations, returned by its ``rport_store_schema`` hook.

    ``metadata``: the :class:`sqlalchemy.MetaData` holding the plugin's tables, as its code
    uses them (checked against the database after the migrations ran: every table must exist,
    and no two plugins may declare the same table).
    ``migrations``: the directory of the plugin's Alembic revision files (``0001_....py``...).
    Each plugin has its own history, recorded in its own table ``alembic_version_<plugin>``, so
    plugins are upgraded independently and a disabled or uninstalled plugin's tables and
    history stay untouched.
    """

    metadata: sa.MetaData
    migrations: Path = attrs.field(converter=Path)

    @property
    def tables(self) -> list[str]:
        return sorted(self.metadata.tables)


def version_table(owner: str) -> str:
    """The table recording which revisions of ``owner`` (the core or a plugin) have run."""
    return f"alembic_version_{owner}"


def check_owner(owner: str) -> None:
    if not _OWNER.match(owner):
        raise ValueError(f"{owner!r} cannot name a migration history (letters, digits, _ . -)")


def check_schemas(schemas: dict[str, StoreSchema]) -> list[str]:
    """Problems with the declared schemas: not a StoreSchema, no migrations directory, a table
    declared by two owners."""
    problems = []
    owners: dict[str, str] = {}
    for owner, schema in schemas.items():
        where = "the core" if owner == "core" else f"plugin {owner!r}"
        if not isinstance(schema, StoreSchema):
            problems.append(f"{where}: rport_store_schema must return a StoreSchema, "
                            f"not {type(schema).__name__}")
            continue
        try:
            check_owner(owner)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
        if not schema.migrations.is_dir():
            problems.append(f"{where}: its migrations directory {schema.migrations} is missing")
        for table in schema.tables:
            if table.startswith("alembic_version"):
                problems.append(f"{where}: table name {table!r} is reserved")
            elif table in owners:
                other = owners[table]
                problems.append(f"{where}: table {table!r} is already declared by "
                                f"{'the core' if other == 'core' else f'plugin {other!r}'}")
            else:
                owners[table] = owner
    return problems


def upsert(conn: sa.Connection, table: sa.Table, key: Iterable[str],
           update: Iterable[str] | None = None, where: sa.ColumnElement[bool] | None = None
           ) -> sa.Executable:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET`` the ``update`` columns (default: every
    column not in ``key``) to the inserted values, in the dialect of ``conn`` (SQLite and
    PostgreSQL spell it the same way). Execute it with the rows as parameters:
    ``conn.execute(upsert(conn, jobs, ["jid"]), [{"jid": ..., "doc": ...}])``. The statement is
    built once per dialect and arguments, so its compiled form is cached. With ``update=()`` it
    is ``ON CONFLICT DO NOTHING``; add ``.returning(table.c.<key>)`` to learn whether a row was
    inserted (``rowcount`` is reliable only for UPDATE and DELETE). ``where`` (build it once, at
    module level) updates only the existing rows it holds for; the proposed row is
    ``sa.literal_column("excluded.<column>")`` there."""
    key = tuple(key)
    return _upsert(conn.dialect.name, table, key,
                   tuple(update) if update is not None else
                   tuple(c.name for c in table.columns if c.name not in key), where)


@functools.lru_cache(maxsize=256)
def _upsert(dialect: str, table: sa.Table, key: tuple[str, ...], update: tuple[str, ...],
            where: sa.ColumnElement[bool] | None) -> sa.Executable:
    module = {"sqlite": sqlite, "postgresql": postgresql}.get(dialect)
    if module is None:
        raise NotImplementedError(f"upsert is not available on {dialect}")
    stmt = module.insert(table)
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt.on_conflict_do_update(index_elements=list(key), where=where,
                                      set_={name: stmt.excluded[name] for name in update})
