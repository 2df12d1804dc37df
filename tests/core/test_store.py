"""The store: ``[database] url``, the ``run`` interface on every backend, migrations that make
exactly the declared tables, bad databases at start-up, and several nodes on one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from rport.core.config import load_server_config
from rport.core.confload import ConfigError
from rport.core.store import KeyedLocks, Store, parse_url, upsert
from rport.plugins.auth_jwt.tables import SCHEMA as AUTH_JWT, api_tokens
from rport.plugins.commands.jobs import SCHEMA as COMMANDS, JobStore, _save_jobs, new_job
from rport.plugins.targeting.store import SCHEMA as TARGETING
from rport.plugins.tunnels.store import SCHEMA as TUNNELS

from ..procs import PY, Proc, Server, wait_for, write_toml
from ..services import free_port
from ..test_third_party_plugins import fake_distribution

BUILTIN = {"tunnels": TUNNELS, "targeting": TARGETING, "commands": COMMANDS, "auth_jwt": AUTH_JWT}
BACKENDS = ["sqlite", "aiosqlite", "postgresql"]

things = sa.Table("things", sa.MetaData(), sa.Column("id", sa.Text, primary_key=True),
                  sa.Column("n", sa.Integer, nullable=False), sa.Column("flag", sa.Boolean),
                  sa.Column("at", sa.Double))


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgresql").create_database()
    driver = "sqlite+aiosqlite" if request.param == "aiosqlite" else "sqlite"
    return f"{driver}:///{tmp_path / 'rportd.db'}"


def opened(url: str, fn: Callable[[Store], Any]) -> Any:
    """Run ``async fn(store)`` with the store open (every built-in plugin's tables migrated)."""
    async def main() -> Any:
        store = Store(url)
        await store.open(BUILTIN)
        try:
            return await fn(store)
        finally:
            await store.close()
    return asyncio.run(main())


def other_connection_sees(url: str, sql: str) -> list[tuple[Any, ...]]:
    """What a separate connection of another driver reads: what is committed."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(str(parsed.database)) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


# -- [database] url ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, driver", [
    ("sqlite:////var/lib/rport/rportd.db", "sqlite+pysqlite"),
    ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite"),
    ("postgresql://rport:secret@db.example:5433/rport", "postgresql+psycopg"),
    ("postgres://rport@localhost/rport?sslmode=verify-full", "postgresql+psycopg"),
    ("postgresql+psycopg://rport@/rport?host=/run/postgresql", "postgresql+psycopg"),
])
def test_database_urls(text: str, driver: str) -> None:
    assert parse_url(text).drivername == driver


@pytest.mark.parametrize("text, message", [
    ("rport.db", "not a database URL (use postgresql://user:password@host:5432/dbname or "
                 "sqlite:////absolute/path/rportd.db)"),
    ("mysql://rport:s3cret@db/rport", "unsupported database 'mysql': rportd stores its data in "
                                      "PostgreSQL or SQLite"),
    ("postgresql+asyncpg://rport:s3cret@db/rport", "unsupported driver 'asyncpg' for postgresql"),
    ("postgresql://rport:s3cret@db", "a PostgreSQL URL needs a database name"),
    ("postgresql://rport:s3cret@db:99999/x", "invalid port 99999"),
    ("sqlite://", "a SQLite URL needs a file"),
])
def test_bad_database_urls_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_server_config(environ={"RPORTD_DATABASE_URL": text})
    (problem,) = info.value.problems
    assert problem.startswith(f"database.url: {message}"), problem
    assert "s3cret" not in problem


def test_a_bad_url_in_the_file_stops_rportd_with_exit_status_2(tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "rportd.conf", {"database": {"url": "mongodb://x:s3cret@h/db"}})
    result = subprocess.run([PY, "-m", "rport.core.cli", "-c", str(conf)], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert "database.url: unsupported database 'mongodb'" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_the_default_is_sqlite_in_the_data_dir_with_wal(tmp_path: Path) -> None:
    """No configuration at all (only ports and the data directory, so that the test does not
    collide with a real rportd): rportd.db in data_dir, WAL, every table migrated."""
    data = tmp_path / "data"
    proc = Proc([PY, "-m", "rport.core.cli", "--data-dir", str(data), "--address", "127.0.0.1:0",
                 "--api-address", "127.0.0.1:0"], tmp_path / "rportd.log")
    try:
        proc.wait_log(r"API listening on")
        assert f"store: SQLite at {data / 'rportd.db'}" in proc.log()
        with sqlite3.connect(data / "rportd.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"clients", "tunnels", "jobs", "multi_jobs", "client_groups", "api_sessions",
                "api_tokens", "clients_auth"} <= names
        assert {f"alembic_version_{o}" for o in ("core", *BUILTIN)} <= names
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.log()


# -- the interface, on every backend ------------------------------------------------------------------

def test_run_commits_before_it_returns_and_rolls_back_on_errors(store_url: str) -> None:
    async def main(store: Store) -> None:
        await store.run(lambda conn: conn.execute(sa.text(
            "CREATE TABLE things (id TEXT PRIMARY KEY, n INTEGER NOT NULL, flag BOOLEAN, at DOUBLE PRECISION)")))
        await store.run(lambda conn: conn.execute(things.insert(), [
            {"id": "a", "n": 1, "flag": True, "at": 1_700_000_000.123456},
            {"id": "b", "n": 2, "flag": False, "at": None}]))
        # Committed when run returned: another connection (another driver, even) reads it.
        assert sorted(other_connection_sees(store_url, "SELECT id, n FROM things")) == [("a", 1), ("b", 2)]
        # Types round-trip: booleans, full-precision Unix times.
        rows = await store.run(lambda conn: conn.execute(sa.select(things).order_by(things.c.id)).all())
        assert [tuple(r) for r in rows] == [("a", 1, True, 1_700_000_000.123456), ("b", 2, False, None)]

        # The dialect's upsert: insert, then update on the key; DO NOTHING with update=().
        def save(conn: sa.Connection, n: int) -> None:
            conn.execute(upsert(conn, things, ["id"], ["n"]), {"id": "c", "n": n, "flag": None, "at": None})
        await store.run(save, 3)
        await store.run(save, 4)
        skip = await store.run(lambda conn: conn.execute(
            upsert(conn, things, ["id"], update=()).returning(things.c.id),
            {"id": "c", "n": 9, "flag": None, "at": None}).first())
        assert skip is None
        assert other_connection_sees(store_url, "SELECT n FROM things WHERE id = 'c'") == [(4,)]

        # An exception in fn: nothing of that transaction is kept, the error reaches the caller.
        def half(conn: sa.Connection) -> None:
            conn.execute(things.update().values(n=100))
            conn.execute(things.insert(), {"id": "a", "n": 0})  # duplicate key
        with pytest.raises(sa.exc.IntegrityError):
            await store.run(half)
        assert sorted(other_connection_sees(store_url, "SELECT n FROM things")) == [(1,), (2,), (4,)]

        # Many concurrent callers: every write is there.
        await asyncio.gather(*(store.run(lambda conn, i=i: conn.execute(
            things.insert(), {"id": f"x{i}", "n": i})) for i in range(50)))
        assert other_connection_sees(store_url, "SELECT COUNT(*) FROM things WHERE id LIKE 'x%'") == [(50,)]

        # A user's API token names are unique in the database itself (auth_jwt 0002).
        token = {"username": "u", "name": "n", "scope": "read", "token_hash": "h",
                 "created_at": 0.0, "expires_at": 1.0}
        await store.run(lambda conn: conn.execute(api_tokens.insert(), {**token, "prefix": "p1"}))
        with pytest.raises(sa.exc.IntegrityError):
            await store.run(lambda conn: conn.execute(api_tokens.insert(), {**token, "prefix": "p2"}))
    opened(store_url, main)


def test_a_job_is_stored_in_its_latest_state(store_url: str) -> None:
    """On a pool of connections two saves of one job could commit crosswise: the saves of a
    job are made in call order, each of its state when its turn comes, and the database itself
    never turns a final job back to running (another node's late write)."""
    async def main(store: Store) -> None:
        jobs = JobStore(store)
        job = new_job(jid="j1", status="running", client_id="c1", command="date")
        first = asyncio.ensure_future(jobs.save(job))
        job.update(status="successful", result={"stdout": "done", "stderr": "", "summary": ""})
        await asyncio.gather(first, jobs.save(job), *(jobs.save(job) for _ in range(20)))
        assert (await jobs.get("j1"))["status"] == "successful"
        assert not jobs._writes._pending  # nothing left waiting
        for status in ("running", "queued"):
            stale = {**job, "status": status, "result": {"stdout": "", "stderr": "", "summary": ""}}
            await store.run(_save_jobs, [{"jid": "j1", "client_id": "c1", "multi_job_id": None,
                                          "created": 0.0, "status": status, "sent_to": None,
                                          "doc": json.dumps(stale)}])
            stored = await jobs.get("j1")
            assert (stored["status"], stored["result"]["stdout"]) == ("successful", "done")
        assert [j["jid"] for j, _ in await jobs.running_of("c1")] == []
        job.update(status="unknown")  # final states may follow each other (a late result)
        await jobs.save(job)
        assert (await jobs.get("j1"))["status"] == "unknown"
    opened(store_url, main)


def test_one_node_claims_the_multi_job_of_a_gone_node(store_url: str) -> None:
    """Nodes claim a gone node's multi-job with a compare-and-set on its document: of claims
    made together one gets it, and the gone node's id no longer names it."""
    async def main(store: Store) -> None:
        jobs = JobStore(store)
        await jobs.create_multi({"jid": "m1", "concurrent": False, "_node": "b"}, [])
        claims = await asyncio.gather(*(jobs.claim_multi("m1", "_node", "b", node)
                                        for node in ("a", "c", "d")))
        winners = [c for c in claims if c is not None]
        assert len(winners) == 1 and winners[0]["jid"] == "m1"
        assert (await jobs.get_multi("m1"))["_node"] == winners[0]["_node"] != "b"
        assert await jobs.claim_multi("m1", "_node", "b", "a") is None  # b's no more
        assert await jobs.claim_multi("nope", "_node", "b", "a") is None
    opened(store_url, main)


def test_write_batcher_commits_writes_together_each_before_its_caller_goes_on(
        store_url: str) -> None:
    """Writes made while a transaction runs share the next one; a key written twice before
    its turn is written once, with the newer value; every writer returns only once its write
    is committed, and a failed transaction fails each of its writers."""
    from rport.core.store import WriteBatcher

    async def main(store: Store) -> None:
        transactions: list[list[tuple[str, str]]] = []
        committed: dict[str, str] = {}

        def apply(conn: Any, rows: list[tuple[str, str]]) -> None:
            if any(value == "boom" for _, value in rows):
                raise ValueError("boom")
            transactions.append(rows)
            committed.update(rows)

        batcher = WriteBatcher(store, apply, prepare=lambda kv: kv, max_batch=50)

        async def write(key: str, value: str) -> str:
            await batcher.write(key, (key, value))
            assert committed.get(key) in (value, f"{value}+")  # committed before it returns
            return key
        keys = [f"k{i}" for i in range(120)]
        await asyncio.gather(*(write(k, "v") for k in keys), write("k0", "v+"))
        assert committed == {**{k: "v" for k in keys}, "k0": "v+"}
        assert len(transactions) <= 4 and max(map(len, transactions)) <= 50, transactions
        assert sum(len(t) for t in transactions) == 120  # k0 once, with its newer value
        results = await asyncio.gather(write("x", "boom"), return_exceptions=True)
        assert isinstance(results[0], ValueError)
        await write("y", "fine")  # the next batch is not affected
        await batcher.drain()
        assert not batcher._pending
    opened(store_url, main)


def test_client_saves_and_deletes_share_transactions_and_land_in_call_order(
        store_url: str) -> None:
    """The saves of many clients connecting together (and deletes among them) are committed
    before each caller goes on, each client ending as its last write says."""
    async def main(store: Store) -> None:
        await asyncio.gather(*(store.save_client(f"c{i}", {"id": f"c{i}", "n": 0}, None)
                               for i in range(300)))
        assert other_connection_sees(store_url, "SELECT COUNT(*) FROM clients") == [(300,)]
        writes = [store.save_client("c1", {"id": "c1", "n": 1}, 5.0), store.delete_client("c2"),
                  store.delete_client("c3"), store.save_client("c3", {"id": "c3", "n": 3}, None),
                  store.save_client("new", {"id": "new", "n": 9}, None),
                  store.delete_client("never-saved")]
        await asyncio.gather(*writes)
        loaded = {record["id"]: (record["n"], at) for record, at in await store.load_clients()}
        assert len(loaded) == 300 and "c2" not in loaded
        assert (loaded["c1"], loaded["c3"], loaded["new"]) == ((1, 5.0), (3, None), (9, None))
        await store.save_client("c4", {"id": "c4", "n": 4}, None)
        await store.mark_all_disconnected(7.0)  # after the writes asked for before it
        assert other_connection_sees(
            store_url, "SELECT COUNT(*) FROM clients WHERE disconnected_at IS NULL") == [(0,)]
    opened(store_url, main)


def test_keyed_locks_serve_each_key_in_arrival_order() -> None:
    async def main() -> None:
        locks, order = KeyedLocks(), []

        async def take(key: str, n: int) -> None:
            async with locks(key):
                order.append((key, n))
                await asyncio.sleep(0)
        await asyncio.gather(*(take(k, n) for n in range(5) for k in ("a", "b")))
        assert [n for k, n in order if k == "a"] == list(range(5))
        assert [n for k, n in order if k == "b"] == list(range(5))
        assert len(locks) == 0
    asyncio.run(main())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_make_exactly_the_declared_tables(backend: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    """Each owner's revisions, run on an empty database, give the tables its code declares
    (Alembic's autogenerate finds nothing to change); a second open has nothing to do."""
    url = (request.getfixturevalue("postgresql").create_database() if backend == "postgresql"
           else f"sqlite:///{tmp_path / 'rportd.db'}")

    async def check(store: Store) -> list[Any]:
        combined = sa.MetaData()
        for schema in store.schemas.values():
            for table in schema.metadata.tables.values():
                table.to_metadata(combined)

        def diff(conn: sa.Connection) -> list[Any]:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_name": lambda name, kind, _: not (kind == "table" and name.startswith("alembic_version"))})
            return compare_metadata(context, combined)
        return await store.run(diff)
    assert opened(url, check) == []
    assert opened(url, check) == []


def test_postgresql_connections_lost_while_idle_are_replaced(postgresql: Any) -> None:
    """PostgreSQL restarted or the connections killed by an administrator: the next call gets a
    fresh connection (checked before use) instead of an error."""
    url = postgresql.create_database()

    async def main(store: Store) -> None:
        read = lambda conn: conn.execute(sa.text("SELECT 1")).scalar_one()  # noqa: E731
        assert await asyncio.gather(*(store.run(read) for _ in range(5))) == [1] * 5
        with psycopg.connect(postgresql.url("postgres"), autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = %s", (url.rsplit("/", 1)[1],)).fetchone()[0]
        assert killed >= 1
        assert await asyncio.gather(*(store.run(read) for _ in range(5))) == [1] * 5
    opened(url, main)


# -- bad databases at start-up ------------------------------------------------------------------------

def run_rportd(server: Server) -> subprocess.CompletedProcess[str]:
    write_toml(server.conf_path, server.config)
    return subprocess.run([PY, "-m", "rport.core.cli", "-c", str(server.conf_path)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_an_unreachable_database_stops_rportd_with_exit_status_2(
        make_server: Callable[..., Server]) -> None:
    port = free_port()  # nothing listens there
    server = make_server(start=False, extra={"database": {
        "url": f"postgresql://rport:s3cret@127.0.0.1:{port}/rport?connect_timeout=3"}})
    result = run_rportd(server)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"cannot use the database postgresql+psycopg://rport:***@127.0.0.1:{port}/rport" in output, output
    assert "Connection refused" in output
    assert "s3cret" not in output and "Traceback" not in output and "API listening" not in output


def test_without_the_postgresql_driver_rportd_says_what_to_install(
        make_server: Callable[..., Server], tmp_path: Path) -> None:
    """As on an installation without the extra: psycopg cannot be imported."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "psycopg.py").write_text('raise ImportError("No module named \'psycopg\'")\n')
    server = make_server(start=False, extra={"database": {"url": "postgresql://rport@db.example/rport"}})
    write_toml(server.conf_path, server.config)
    result = subprocess.run([PY, "-m", "rport.core.cli", "-c", str(server.conf_path)], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert ("cannot use the database postgresql+psycopg://rport@db.example/rport: No module named "
            "'psycopg' (pip install 'rport-py[postgresql]')") in output, output
    assert "Traceback" not in output


def test_a_wrong_password_stops_rportd_with_exit_status_2(
        make_server: Callable[..., Server], postgresql: Any) -> None:
    url = postgresql.create_database().replace(postgresql.password, "wrong-s3cret")
    server = make_server(start=False, extra={"database": {"url": url}})
    result = run_rportd(server)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "cannot use the database postgresql+psycopg://rport:***@127.0.0.1:" in output, output
    assert 'password authentication failed for user "rport"' in output
    assert "s3cret" not in output and "Traceback" not in output


# -- several nodes on one PostgreSQL --------------------------------------------------------------------

SLOW_TABLES = """
    from pathlib import Path

    import sqlalchemy as sa
    from rport.core.plugin import StoreSchema, hookimpl

    METADATA = sa.MetaData()
    sa.Table("slow_things", METADATA, sa.Column("id", sa.Text, primary_key=True))

    @hookimpl
    def rport_store_schema():
        return StoreSchema(METADATA, Path(__file__).resolve().parent / "slow_migrations")
"""

SLOW_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute("SELECT pg_sleep(3)")  # the other nodes arrive meanwhile
    op.create_table("slow_things", sa.Column("id", sa.Text, primary_key=True))


def downgrade():
    op.drop_table("slow_things")
"""


def test_nodes_starting_together_migrate_once(postgresql: Any, tmp_path: Path) -> None:
    """Three rportd processes start at the same moment on one new database, with a plugin whose
    migration takes seconds: the advisory lock lets one node migrate while the others wait,
    then they find nothing to do (without it, they would create the same tables at once and
    fail). All three serve, and what one stores the next one reads."""
    url = postgresql.create_database()
    site = fake_distribution(tmp_path / "site", {"slow_tables": SLOW_TABLES},
                             {"rport.server": {"slow": "slow_tables"}}, dist="rport_slow")
    (site / "slow_migrations").mkdir()
    (site / "slow_migrations" / "0001_slow.py").write_text(SLOW_REVISION)
    env = {"PYTHONPATH": str(site)}
    nodes = [Server(tmp_path / f"node{i}", extra={"database": {"url": url}}) for i in range(3)]
    procs = []
    for node in nodes:
        write_toml(node.conf_path, node.config)
        procs.append(Proc([PY, "-m", "rport.core.cli", "-c", str(node.conf_path)],
                          node.workdir / "together.log", env=env))
    try:
        for proc in procs:
            proc.wait_log(r"API listening on", timeout=60)
        migrated = [p for p in procs if "tables of plugin 'slow' migrated from nothing to 0001" in p.log()]
        assert len(migrated) == 1, [p.log() for p in procs]
        assert all("tables of the core migrated" in p.log() for p in migrated)
        with psycopg.connect(url) as conn:
            versions = dict(conn.execute(
                "SELECT 'core', version_num FROM alembic_version_core UNION ALL "
                "SELECT 'commands', version_num FROM alembic_version_commands").fetchall())
        assert versions == {"core": "0001", "commands": "0003"}
    finally:
        for proc in procs:
            proc.stop()
    for proc in procs:
        assert "Traceback" not in proc.log(), proc.log()
    # A group created through one node is in the shared database for the next one to load.
    first = nodes[0].start()
    assert first.api is not None
    assert first.api.post("/client-groups", json={"id": "shared"}).status_code == 201
    first.stop()
    second = nodes[1].start()
    try:
        assert second.api is not None
        wait_for(lambda: second.api.get("/client-groups/shared").status_code == 200,
                 what="the group stored through the first node")
    finally:
        second.stop()


def test_the_agent_does_not_load_the_store() -> None:
    """The agent shares configuration code with the server but needs no database library:
    importing SQLAlchemy and Alembic would only slow its start."""
    result = subprocess.run([PY, "-c", "import sys, rport.agent.cli, rport.agent.client; "
                             "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
