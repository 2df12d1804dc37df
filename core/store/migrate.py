"""Running the schema migrations of the core and of every plugin, at start-up, with Alembic.

Each owner (``core`` and each plugin with tables) has its own Alembic history: its directory of
revision files and its own version table ``alembic_version_<owner>``. An owner's pending
revisions run in one transaction (PostgreSQL and SQLite both have transactional DDL), so a
failed migration leaves that owner's tables as they were. On PostgreSQL, where several rportd
nodes may start at once against one database, the whole run holds a session advisory lock:
the second node waits, then finds nothing left to do.

Everything here is synchronous and runs on a SQLAlchemy ``Connection`` (in the store's thread
for SQLite, through ``AsyncConnection.run_sync`` for PostgreSQL).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import attrs
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from .schema import StoreSchema, version_table

log = logging.getLogger("rport.store")

ADVISORY_LOCK = int.from_bytes(hashlib.sha256(b"rport-py schema migrations").digest()[:8], "big",
                               signed=True)
"""The PostgreSQL advisory lock key held while migrations run (any 64-bit constant would do)."""

# Alembic publishes the running migration as the module-level proxies alembic.op and
# alembic.context: two stores migrating at the same moment in one process (tests run several
# servers in one process) must take turns. Migrations always run in a worker thread (the
# store's, or one of their own), never on an event loop, where waiting on this lock could block.
_ALEMBIC_PROXIES = threading.Lock()


class MigrationError(Exception):
    """A migration could not run; the message names the owner and the revision."""


@attrs.frozen
class Outcome:
    owner: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after


def scripts_of(schema: StoreSchema) -> ScriptDirectory:
    where = str(schema.migrations)
    return ScriptDirectory(where, version_locations=[where])


def current_heads(conn: sa.Connection, owner: str) -> tuple[str, ...]:
    context = MigrationContext.configure(conn, opts={"version_table": version_table(owner)})
    return tuple(sorted(context.get_current_heads()))


def pending(conn: sa.Connection, schemas: dict[str, StoreSchema]) -> dict[str, tuple[str, ...]]:
    """Owners whose history is behind their revision files: owner -> current heads."""
    out = {}
    for owner, schema in schemas.items():
        heads = current_heads(conn, owner)
        if set(heads) != set(scripts_of(schema).get_heads()):
            out[owner] = heads
    conn.rollback()
    return out


def upgrade_all(conn: sa.Connection, schemas: dict[str, StoreSchema]) -> list[Outcome]:
    """Upgrade every owner to its head revision(s), holding the migration lock on PostgreSQL.
    Raises :class:`MigrationError`."""
    postgres = conn.dialect.name == "postgresql"
    if conn.in_transaction():
        conn.rollback()
    if postgres:
        conn.execute(sa.select(sa.func.pg_advisory_lock(ADVISORY_LOCK)))
        conn.commit()
    try:
        with _ALEMBIC_PROXIES:
            return [_upgrade(conn, owner, schema) for owner, schema in schemas.items()]
    finally:
        if postgres:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_LOCK)))
            conn.commit()


def _upgrade(conn: sa.Connection, owner: str, schema: StoreSchema) -> Outcome:
    where = "the core" if owner == "core" else f"plugin {owner!r}"
    try:
        script = scripts_of(schema)
        heads = script.get_heads()
    except Exception as exc:
        raise MigrationError(f"the migrations of {where} in {schema.migrations} cannot be read: "
                             f"{exc.__class__.__name__}: {exc}") from exc
    planned: list[str] = []
    applied: list[str] = []

    def steps(rev: Any, context: Any) -> Any:
        # What alembic.command.upgrade does, without an env.py: every step to the head(s).
        found = script._upgrade_revs("heads", rev)
        planned.extend(step.revision.revision for step in found)
        return found

    def done(*, step: Any, **_: Any) -> None:
        applied.append(step.up_revision_id)

    with conn.begin():
        before = current_heads(conn, owner)
        if set(before) == set(heads):
            return Outcome(owner, before, before)
        try:
            with EnvironmentContext(Config(), script, fn=steps, destination_rev="heads") as env:
                env.configure(connection=conn, target_metadata=schema.metadata,
                              version_table=version_table(owner), on_version_apply=done)
                env.run_migrations()
        except Exception as exc:
            failed = [rev for rev in planned if rev not in applied]
            at = f" at revision {failed[0]}" if failed else ""
            raise MigrationError(f"the migration of {where}{at} failed (nothing of it was "
                                 f"applied): {exc.__class__.__name__}: {_first_line(exc)}") from exc
        after = current_heads(conn, owner)
    return Outcome(owner, before, after)


def missing_tables(conn: sa.Connection, schemas: dict[str, StoreSchema]) -> list[str]:
    """Tables some owner declares that its migrations did not create."""
    existing = set(sa.inspect(conn).get_table_names())
    conn.rollback()
    return [f"{'the core' if owner == 'core' else f'plugin {owner!r}'}: table {table!r}"
            for owner, schema in schemas.items() for table in schema.tables
            if table not in existing]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
