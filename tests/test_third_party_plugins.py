"""Third-party plugins (issue #7), with real rportd and rport processes.

The example distribution docs/examples/rport-diskusage is pip installed (into a directory on this
module's PYTHONPATH, not into the shared environment), loaded through its entry points, listed by ``rportd plugins``,
``rport plugins`` and ``GET /api/v1/plugins``, called, and disabled in configuration. Broken
plugins come from fake distributions (a module and a ``.dist-info``) put on the processes'
PYTHONPATH: they must stop start-up naming the plugin and the cause, or fail only the request
that reached them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .procs import PY, Agent, Server, wait_for, write_toml
from .services import both_databases

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "rport-diskusage"
DIST = "rport-diskusage"


# -- helpers ---------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args...`` to completion, output captured."""
    return subprocess.run([PY, "-m", *args], check=False, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def plugin_line(listing: str, name: str) -> str:
    lines = [line for line in listing.splitlines() if line.split()[:1] == [name]]
    assert len(lines) == 1, listing
    return lines[0]


def pip(*args: str) -> None:
    result = subprocess.run([PY, "-m", "pip", *args], check=False, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def can_build_without_isolation() -> bool:
    """Whether this environment's setuptools can build a wheel by itself: setuptools >= 70.1
    has bdist_wheel built in, older ones need the wheel package. A fresh Python 3.11 venv has
    setuptools 65 and no wheel; pip then builds in an isolated environment instead."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) if part.isdigit() else 0 for part in (version.split(".") + ["0"])[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def diskusage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """rport-diskusage pip-installed (from a copy, so no build files land in docs/) into a
    directory of its own that is on the PYTHONPATH of this module's processes only (not into the
    shared environment: tests of other modules start rportd in parallel and would load it, or
    find it half installed); yields its installed version."""
    source = tmp_path_factory.mktemp("example") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path_factory.mktemp("site")
    isolation = ["--no-build-isolation"] if can_build_without_isolation() else []
    pip("install", "--no-deps", *isolation, "-q", "--target", str(site), str(source))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
        mp.syspath_prepend(str(site))
        importlib.invalidate_caches()
        version = importlib.metadata.version(DIST)
        assert version == tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["version"]
        yield version
    importlib.invalidate_caches()


def assert_error(resp: httpx.Response, status: int, code: str, title: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    (error,) = resp.json()["errors"]
    assert set(error) == {"code", "title", "detail"}, error
    assert error["code"] == code, error
    if title is not None:
        assert error["title"] == title, error
    return error


# -- the example, installed ------------------------------------------------------------------------


def test_example_plugin_loads_lists_and_serves(
        diskusage: str, make_server: Callable[..., Server], make_agent: Callable[..., Agent],
        tmp_path: Path) -> None:
    users = tmp_path / "api-users.json"
    users.write_text(json.dumps([
        {"username": "admin", "password": "foobaz", "groups": ["Administrators"]},
        {"username": "bob", "password": "bob-pw", "groups": ["Users"]},
    ]))
    server = make_server(extra={"api": {"auth": "", "auth_file": str(users)},
                                "plugins.diskusage": {"timeout": "10s"}})
    assert server.api is not None
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    agent = make_agent(server, "disk-1",
                       config={"plugins.diskusage": {"paths": ["/", str(allowed)]}})

    # `rportd plugins` and `rport plugins` list it, with its distribution, version and module.
    listed = run_cli("rport.core.cli", "plugins", "-c", str(server.conf_path))
    assert listed.returncode == 0, listed.stderr
    line = plugin_line(listed.stdout, "diskusage")
    assert line.split() == ["diskusage", DIST, diskusage, "rport_diskusage.server", "(third-party)"]
    assert plugin_line(listed.stdout, "tunnels").endswith("(built-in)")
    agent_conf = agent.proc.args[agent.proc.args.index("-c") + 1]
    listed = run_cli("rport.agent.cli", "-c", agent_conf, "plugins")
    assert listed.returncode == 0, listed.stderr
    line = plugin_line(listed.stdout, "diskusage")
    assert line.split() == ["diskusage", DIST, diskusage, "rport_diskusage.agent", "(third-party)"]

    # GET /api/v1/plugins: the same, for administrators only.
    resp = server.api.get("/plugins")
    assert resp.status_code == 200, resp.text
    rows = {row["name"]: row for row in resp.json()["data"]}
    assert rows["diskusage"] == {"name": "diskusage", "module": "rport_diskusage.server",
                                 "distribution": DIST, "version": diskusage, "builtin": False}
    assert rows["tunnels"]["builtin"] is True
    assert resp.json()["meta"]["count"] == len(rows)
    with httpx.Client(base_url=server.api_url + "/api/v1", auth=("bob", "bob-pw"),
                      timeout=10) as bob:
        assert_error(bob.get("/plugins"), 403, "ERR_CODE_FORBIDDEN")
        # The route is for every user who may use the client: the core checks any route with
        # {client_id}, so the plugin's route is closed to bob until his group is allowed.
        assert_error(bob.get("/clients/disk-1/disk-usage"), 403, "ERR_CODE_CLIENT_ACCESS_DENIED")
        acl = server.api.post("/clients/disk-1/acl", json={"allowed_user_groups": ["Users"]})
        assert acl.status_code == 204, acl.text
        assert bob.get("/clients/disk-1/disk-usage").status_code == 200

    # The route asks the agent, which measures its default (first) path...
    resp = server.api.get("/clients/disk-1/disk-usage")
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(data) == {"path", "total", "used", "free", "percent"}
    assert data["path"] == "/"
    assert data["total"] == shutil.disk_usage("/").total
    assert 0 < data["used"] + data["free"] <= data["total"]
    assert 0 <= data["percent"] <= 100
    assert server.api.get("/clients/disk-1/disk-usage",
                          params={"path": "/"}).json()["data"]["total"] == data["total"]
    # ...or another path of its list (compared normalised).
    resp = server.api.get("/clients/disk-1/disk-usage", params={"path": f"{allowed}/"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["path"] == str(allowed)
    assert resp.json()["data"]["total"] == shutil.disk_usage(allowed).total

    # A path the agent does not allow: 409 with the agent's own message.
    error = assert_error(server.api.get("/clients/disk-1/disk-usage", params={"path": "/etc"}),
                         409, "ERR_CODE_CLIENT_ERROR",
                         f"path '/etc' is not allowed on this client (allowed: /, {allowed})")
    assert "disk-1" in error["detail"]
    # The core's rules apply to the plugin's route too.
    assert_error(server.api.get("/clients/disk-1/disk-usage", params={"x": "1"}),
                 400, "ERR_CODE_BAD_QUERY_PARAM", "unsupported query parameter 'x'")
    assert_error(server.api.get("/clients/nope/disk-usage"), 404, "ERR_CODE_CLIENT_NOT_FOUND",
                 'Active client with id="nope" not found.')
    operations = {op["operationId"]: op
                  for path in server.api.get("/openapi.json").json()["paths"].values()
                  for op in path.values() if isinstance(op, dict) and "operationId" in op}
    assert {"200", "404", "409"} <= set(operations["diskusage:usage"]["responses"])

    # An agent without the plugin (disabled there) cannot answer: 409, the server is fine.
    make_agent(server, "disk-2", config={"plugins": {"disabled": ["diskusage"]}})
    assert_error(server.api.get("/clients/disk-2/disk-usage"), 409, "ERR_CODE_CLIENT_ERROR",
                 "unknown request: diskusage.usage")

    # A disconnected client is not found.
    agent.stop()
    server.wait_disconnected("disk-1")
    assert_error(server.api.get("/clients/disk-1/disk-usage"), 404, "ERR_CODE_CLIENT_NOT_FOUND")
    assert server.proc is not None and server.proc.alive()


def test_example_plugin_disabled_in_configuration(
        diskusage: str, make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    # Disabled, its table may stay in the file: the plugin is simply not loaded.
    server = make_server(extra={"plugins": {"disabled": ["diskusage"]},
                                "plugins.diskusage": {"timeout": "5s"}})
    assert server.api is not None
    make_agent(server, "disk-off", config={})
    resp = server.api.get("/clients/disk-off/disk-usage")
    error = assert_error(resp, 404, "ERR_CODE_NOT_FOUND", "not found")  # no such route
    assert error["detail"] == "GET /api/v1/clients/disk-off/disk-usage"
    names = [row["name"] for row in server.api.get("/plugins").json()["data"]]
    assert "diskusage" not in names and "tunnels" in names
    assert "diskusage" not in server.api.get("/status").json()["data"]["plugins"]
    assert "plugin diskusage disabled by configuration" in server.log()

    listed = run_cli("rport.core.cli", "plugins", "-c", str(server.conf_path))
    assert listed.returncode == 0, listed.stderr
    assert plugin_line(listed.stdout, "diskusage").split() == [
        "diskusage", "(disabled", "in", "configuration)"]


@both_databases
def test_example_plugin_keeps_its_own_table(
        diskusage: str, make_server: Callable[..., Server], make_agent: Callable[..., Agent],
        database_url: str) -> None:
    """The plugin declares a table and ships two Alembic revisions; rportd runs them at start-up
    like the built-ins' (in SQLite or PostgreSQL alike), the route writes its samples through
    ``server.store.run`` and they survive restarts, also one with the plugin disabled."""
    server = make_server()
    assert server.api is not None
    assert "tables of plugin 'diskusage' migrated from nothing to 0002" in server.log()
    make_agent(server, "disk-h", config={"plugins.diskusage": {"paths": ["/"]}})
    measured = [server.api.get("/clients/disk-h/disk-usage").json()["data"] for _ in range(2)]
    resp = server.api.get("/clients/disk-h/disk-usage/history")
    assert resp.status_code == 200, resp.text
    kept = resp.json()["data"]
    assert [{k: s[k] for k in ("path", "total", "used", "free")} for s in kept] == [
        {k: m[k] for k in ("path", "total", "used", "free")} for m in reversed(measured)]
    assert kept[0]["measured_at"] >= kept[1]["measured_at"]

    # Disabled, the plugin is not loaded: its table and history stay as they are.
    server.stop()
    server.config["plugins"] = {"disabled": ["diskusage"]}
    server.start()
    assert server.api.get("/clients/disk-h/disk-usage/history").status_code == 404
    # Enabled again: nothing left to migrate, the samples are still there.
    server.stop()
    del server.config["plugins"]
    server.start()
    assert "tables of plugin 'diskusage' migrated" not in (server.workdir / "rportd-3.log").read_text()
    again = server.api.get("/clients/disk-h/disk-usage/history").json()["data"]
    assert again == kept
    assert "Traceback" not in server.log()


# -- broken plugins, from fake distributions on PYTHONPATH -------------------------------------------


def fake_distribution(root: Path, modules: dict[str, str],
                      entry_points: dict[str, dict[str, str]], dist: str = "rport_broken") -> Path:
    """A directory that, on sys.path, is an installed distribution ``dist`` 0.1 with these
    modules and entry points."""
    root.mkdir(parents=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) + "\n"
        for group, eps in entry_points.items()))
    return root


def on_pythonpath(monkeypatch: pytest.MonkeyPatch, path: Path) -> dict[str, str]:
    """Put ``path`` on the PYTHONPATH of every process started from now on in this test (the
    fixtures' processes inherit os.environ); returns it as an env mapping too."""
    value = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PYTHONPATH", value)
    return {"PYTHONPATH": value}


FAILS_ON_IMPORT = """
    raise RuntimeError("broken on purpose at import")
"""

REJECTS_CONFIG = """
    import attrs
    from rport.core.plugin import hookimpl

    @attrs.frozen
    class BrokenConfig:
        limit: int = 1

    @hookimpl
    def rport_config_class():
        return BrokenConfig
"""

FAILS_AT_STARTUP = """
    from rport.core.plugin import hookimpl

    @hookimpl
    async def rport_server_startup(server):
        raise ValueError("cannot open its database")
"""

MISSPELLED_HOOK = """
    from rport.core.plugin import hookimpl

    @hookimpl
    def rport_register_route(server, register):
        pass
"""

AGENT_REJECTS_CONFIG = REJECTS_CONFIG.replace("rport.core.plugin", "rport.agent.plugin")


@pytest.mark.parametrize("source, config, expected, code", [
    pytest.param(FAILS_ON_IMPORT, {}, [
        "plugin 'broken' (broken_mod) failed to import: RuntimeError: broken on purpose at import"],
        2, id="import"),
    pytest.param(REJECTS_CONFIG, {"plugins.broken": {"bad": 1}}, [
        "plugins.broken.bad: unknown key"], 2, id="config-unknown-key"),
    pytest.param(REJECTS_CONFIG, {"plugins.broken": {"limit": "many"}}, [
        "plugins.broken.limit: expected an integer, got 'many'"], 2, id="config-bad-type"),
    pytest.param(FAILS_AT_STARTUP, {}, [
        "plugin 'broken' failed in rport_server_startup: ValueError: cannot open its database"],
        1, id="startup"),
    pytest.param(MISSPELLED_HOOK, {}, ["plugin 'broken'", "unknown hook 'rport_register_route'"],
                 2, id="unknown-hook"),
])
def test_broken_server_plugin_stops_startup(
        source: str, config: dict[str, dict[str, Any]], expected: list[str], code: int,
        make_server: Callable[..., Server], tmp_path: Path) -> None:
    path = fake_distribution(tmp_path / "site", {"broken_mod": source},
                             {"rport.server": {"broken": "broken_mod"}})
    server = make_server(start=False, extra=config)
    write_toml(server.conf_path, server.config)
    result = run_cli("rport.core.cli", "-c", str(server.conf_path), env={"PYTHONPATH": str(path)})
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    for text in expected:
        assert text in output, output
    assert "API listening" not in output


WITH_TABLES = """
    from pathlib import Path

    import sqlalchemy as sa
    from rport.core.plugin import StoreSchema, hookimpl

    METADATA = sa.MetaData()
    sa.Table("{table}", METADATA, sa.Column("id", sa.Text, primary_key=True))

    @hookimpl
    def rport_store_schema():
        return StoreSchema(METADATA, Path(__file__).resolve().parent / "broken_migrations")
"""

REVISION = """
    import sqlalchemy as sa
    from alembic import op

    revision = "{revision}"
    down_revision = {down!r}

    def upgrade():
        {upgrade}

    def downgrade():
        pass
"""

CREATES = 'op.create_table("broken_things", sa.Column("id", sa.Text, primary_key=True))'


@pytest.mark.parametrize("table, revisions, expected, code", [
    pytest.param("broken_things", [CREATES, 'op.execute("UPDATE no_such_table SET x = 1")'], [
        "the migration of plugin 'broken' at revision 0002 failed (nothing of it was applied): "
        "OperationalError: (sqlite3.OperationalError) no such table: no_such_table"], 2,
        id="failing-revision"),
    pytest.param("jobs", [CREATES], [
        "plugin 'broken': table 'jobs' is already declared by plugin 'commands'"], 1,
        id="table-of-another-plugin"),
    pytest.param("ghost", [CREATES], [
        "the migrations did not create every declared table: plugin 'broken': table 'ghost'"], 2,
        id="table-not-created"),
])
def test_plugin_tables_that_cannot_be_used_stop_startup(
        table: str, revisions: list[str], expected: list[str], code: int,
        make_server: Callable[..., Server], tmp_path: Path) -> None:
    """A plugin's migration that fails stops start-up (exit 2) naming the plugin and the
    revision, and leaves its tables as they were (its revisions run in one transaction); a
    table another plugin owns, or one its migrations never create, stops it too."""
    site = fake_distribution(tmp_path / "site", {"broken_tables": WITH_TABLES.replace("{table}", table)},
                             {"rport.server": {"broken": "broken_tables"}})
    migrations = site / "broken_migrations"
    migrations.mkdir()
    for number, upgrade in enumerate(revisions, 1):
        down = f"{number - 1:04d}" if number > 1 else None
        (migrations / f"{number:04d}_step.py").write_text(textwrap.dedent(REVISION).format(
            revision=f"{number:04d}", down=down, upgrade=upgrade))
    server = make_server(start=False)
    write_toml(server.conf_path, server.config)
    result = run_cli("rport.core.cli", "-c", str(server.conf_path), env={"PYTHONPATH": str(site)})
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    for text in expected:
        assert text in output, output
    assert "API listening" not in output and "Traceback" not in output, output
    if code == 2:  # the store opened: the others' tables are there, none of the plugin's
        with sqlite3.connect(server.data_dir / "rportd.db") as db:
            names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"clients", "alembic_version_core"} <= names
        if len(revisions) > 1:  # the failed revision's and the one before it: both undone
            assert "broken_things" not in names and "alembic_version_broken" not in names


@pytest.mark.parametrize("source, config, expected", [
    pytest.param(FAILS_ON_IMPORT, {}, [
        "plugin 'broken' (broken_mod) failed to import: RuntimeError: broken on purpose at import"],
        id="import"),
    pytest.param(AGENT_REJECTS_CONFIG, {"plugins.broken": {"bad": 1}}, [
        "plugins.broken.bad: unknown key"], id="config"),
])
def test_broken_agent_plugin_stops_startup(source: str, config: dict[str, dict[str, Any]],
                                           expected: list[str], tmp_path: Path) -> None:
    path = fake_distribution(tmp_path / "site", {"broken_mod": source},
                             {"rport.agent": {"broken": "broken_mod"}})
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:1", "auth": "user1:1234", "id": "broken-1",
                   "data_dir": str(tmp_path / "data")}, **config})
    for args in (["-c", str(conf)], ["-c", str(conf), "plugins"]):  # running and listing alike
        result = run_cli("rport.agent.cli", *args, env={"PYTHONPATH": str(path)})
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        for text in expected:
            assert text in output, output


ROUTES_THAT_FAIL = """
    from rport.core.plugin import data_response, hookimpl

    @hookimpl
    def rport_register_routes(server, register):
        async def fail(request):
            \"\"\"Always fails.\"\"\"
            raise RuntimeError("route broken on purpose")

        async def fine(request):
            \"\"\"Works.\"\"\"
            return data_response({"ok": True})

        register("/broken/fail", fail, methods=["GET", "POST"], name="fail")
        register("/broken/fine", fine, name="fine")
"""


def test_failing_route_is_a_500_and_nothing_else_breaks(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_pythonpath(monkeypatch, fake_distribution(
        tmp_path / "site", {"broken_routes": ROUTES_THAT_FAIL},
        {"rport.server": {"broken": "broken_routes"}}))
    server = make_server()
    assert server.api is not None and server.proc is not None
    make_agent(server, "bystander")
    rows = {row["name"]: row for row in server.api.get("/plugins").json()["data"]}
    assert rows["broken"] == {"name": "broken", "module": "broken_routes",
                              "distribution": "rport_broken", "version": "0.1", "builtin": False}

    for method in ("GET", "POST"):
        resp = server.api.request(method, "/broken/fail")
        assert resp.status_code == 500, resp.text
        assert resp.json() == {"errors": [{
            "code": "ERR_CODE_INTERNAL", "title": "internal server error",
            "detail": "the plugin 'broken' failed; see the server log"}]}
        assert "route broken on purpose" not in resp.text  # no internals to the caller
        wait_for(lambda m=method: f"route {m} /api/v1/broken/fail of plugin 'broken' failed"
                 in server.log(), what=f"the server to log the failed {method}")
    assert "RuntimeError: route broken on purpose" in server.log()

    # Everything else keeps working: the core's routes, the plugin's other route, the agent.
    assert server.api.get("/status").status_code == 200
    assert server.api.get("/broken/fine").json() == {"data": {"ok": True}}
    assert server.client("bystander")["connection_state"] == "connected"
    assert [c["id"] for c in server.api.get("/clients").json()["data"]] == ["bystander"]
    assert server.proc.alive()


BROKEN_SERVER_SIDE = """
    from rport.core.plugin import ApiError, RemoteError, data_response, hookimpl

    @hookimpl
    def rport_register_routes(server, register):
        async def ask(request):
            \"\"\"Send the request ?name= to a client's agent.\"\"\"
            session = server.clients.session(request.path_params["client_id"])
            if session is None:
                raise ApiError(404, "no such client", code="ERR_CODE_CLIENT_NOT_FOUND")
            try:
                answer = await session.request(request.query_params["name"], {"n": 1})
            except RemoteError as exc:
                raise ApiError(409, str(exc), code="ERR_CODE_CLIENT_ERROR") from None
            return data_response(answer)

        register("/clients/{client_id}/broken", ask, name="ask", params=("name",))
"""

BROKEN_AGENT_SIDE = """
    from rport.agent.plugin import hookimpl

    @hookimpl
    def rport_register_handlers(agent, register):
        async def fail(session, body):
            raise RuntimeError("handler broken on purpose")

        async def echo(session, body):
            return {"echo": body}

        register.request("broken.fail", fail)
        register.request("broken.echo", echo)
"""


def test_failing_agent_handler_fails_only_that_request(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_pythonpath(monkeypatch, fake_distribution(
        tmp_path / "site", {"broken_srv": BROKEN_SERVER_SIDE, "broken_agent": BROKEN_AGENT_SIDE},
        {"rport.server": {"broken": "broken_srv"}, "rport.agent": {"broken": "broken_agent"}}))
    server = make_server()
    assert server.api is not None and server.proc is not None
    agent = make_agent(server, "handler-1")
    listed = run_cli("rport.agent.cli", "plugins")
    assert plugin_line(listed.stdout, "broken").split() == [
        "broken", "rport_broken", "0.1", "broken_agent", "(third-party)"]

    resp = server.api.get("/clients/handler-1/broken", params={"name": "broken.echo"})
    assert resp.json() == {"data": {"echo": {"n": 1}}}, resp.text
    for _ in range(2):
        assert_error(server.api.get("/clients/handler-1/broken", params={"name": "broken.fail"}),
                     409, "ERR_CODE_CLIENT_ERROR",
                     "broken.fail failed: RuntimeError: handler broken on purpose")
    wait_for(lambda: "RuntimeError: handler broken on purpose" in agent.log(),
             what="the agent to log the handler's failure")
    assert "handler for request 'broken.fail' of plugin 'broken' failed" in agent.log()

    # The session lives on: the same agent answers other requests, built-in ones included.
    resp = server.api.get("/clients/handler-1/broken", params={"name": "broken.echo"})
    assert resp.json() == {"data": {"echo": {"n": 1}}}, resp.text
    assert server.api.get("/clients/handler-1/broken", params={"name": "ping"}).status_code == 200
    assert server.client("handler-1")["connection_state"] == "connected"
    assert agent.proc.alive() and server.proc.alive()
