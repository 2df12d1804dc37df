"""End to end: the library of stored commands and scripts (plugin library) against a real
rportd: RPort's ``/library/commands`` and ``/library/scripts`` (create, read, list with sort,
filter, fields and paging, replace, delete), unique names, RPort's validation messages, and
the entries kept across a restart, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from ..procs import Server
from ..services import both_databases
from .test_commands import assert_error

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
COMMAND_KEYS = {"id", "name", "created_by", "created_at", "updated_by", "updated_at", "cmd",
                "tags", "timeout_sec"}
SCRIPT_KEYS = COMMAND_KEYS - {"cmd"} | {"script", "interpreter", "is_sudo", "cwd"}


def create(api: httpx.Client, kind: str, **body: Any) -> dict[str, Any]:
    resp = api.post(f"/library/{kind}", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


@both_databases
def test_stored_commands_and_scripts(make_server: Callable[..., Server]) -> None:
    server = make_server()
    api = server.api
    cmd = create(api, "commands", name="disk usage", cmd="/usr/bin/df -h", tags=["disk"],
                 timeout_sec=30)
    assert set(cmd) == COMMAND_KEYS
    assert cmd["name"] == "disk usage" and cmd["cmd"] == "/usr/bin/df -h" and cmd["tags"] == ["disk"]
    assert cmd["timeout_sec"] == 30 and cmd["created_by"] == cmd["updated_by"] == "admin"
    assert re.fullmatch(r"[0-9a-f-]{36}", cmd["id"]) and RFC3339.match(cmd["created_at"])
    other = create(api, "commands", name="uptime", cmd="/usr/bin/uptime")
    assert other["timeout_sec"] == 60 and other["tags"] == []  # RPort's defaults
    # RPort's documentation example
    script = create(api, "scripts", name="current_directory", interpreter="/bin/sh", is_sudo=True,
                    cwd="/root", script="pwd")
    assert set(script) == SCRIPT_KEYS
    assert (script["interpreter"], script["is_sudo"], script["cwd"], script["script"]) == \
        ("/bin/sh", True, "/root", "pwd")

    # names are unique per kind
    assert_error(api.post("/library/commands", json={"name": "uptime", "cmd": "/bin/true"}), 409,
                 "another command with the same name 'uptime' exists")
    assert create(api, "scripts", name="uptime", script="uptime")["name"] == "uptime"

    # read, with fields[...]
    assert api.get(f"/library/commands/{cmd['id']}").json()["data"] == cmd
    resp = api.get(f"/library/scripts/{script['id']}", params={"fields[scripts]": "id,name"})
    assert resp.json()["data"] == {"id": script["id"], "name": "current_directory"}

    # list: sort, filter (wildcards, tags), fields, page
    body = api.get("/library/commands", params={"sort": "-name"}).json()
    assert [c["name"] for c in body["data"]] == ["uptime", "disk usage"] and body["meta"]["count"] == 2
    rows = api.get("/library/commands", params={"filter[name]": "disk*", "fields[commands]": "name,cmd"})
    assert rows.json()["data"] == [{"name": "disk usage", "cmd": "/usr/bin/df -h"}]
    assert [c["name"] for c in api.get("/library/commands", params={"filter[tags]": "disk"})
            .json()["data"]] == ["disk usage"]
    page = api.get("/library/commands", params={"page[limit]": "1", "page[offset]": "1", "sort": "name"})
    assert [c["name"] for c in page.json()["data"]] == ["uptime"] and page.json()["meta"]["count"] == 2
    assert [s["name"] for s in api.get("/library/scripts", params={"filter[created_by]": "admin"})
            .json()["data"]] == ["current_directory", "uptime"]

    # replace: every field, the creation kept, the name still unique
    resp = api.put(f"/library/commands/{cmd['id']}", json={"name": "disk", "cmd": "/usr/bin/df"})
    assert resp.status_code == 200, resp.text
    updated = resp.json()["data"]
    assert (updated["name"], updated["cmd"], updated["tags"], updated["timeout_sec"]) == \
        ("disk", "/usr/bin/df", [], 60)
    assert updated["created_at"] == cmd["created_at"] and updated["updated_at"] >= cmd["updated_at"]
    assert_error(api.put(f"/library/commands/{cmd['id']}", json={"name": "uptime", "cmd": "x"}), 409,
                 "another command with the same name 'uptime' exists")
    assert_error(api.put("/library/commands/nope", json={"name": "n", "cmd": "x"}), 404,
                 "Cannot find a command by the provided id: nope")

    # committed before the answer: all there after a restart
    server.stop()
    server.start()
    api = server.api
    assert api.get(f"/library/commands/{cmd['id']}").json()["data"] == updated
    assert api.get("/library/scripts").json()["meta"]["count"] == 2

    resp = api.delete(f"/library/scripts/{script['id']}")
    assert resp.status_code == 204 and resp.content == b""
    assert_error(api.get(f"/library/scripts/{script['id']}"), 404,
                 f"Cannot find a script by the provided id: {script['id']}")
    assert_error(api.delete(f"/library/scripts/{script['id']}"), 404,
                 f"Cannot find a script by the provided id: {script['id']}")
    assert [s["name"] for s in api.get("/library/scripts").json()["data"]] == ["uptime"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("library")
    server = Server(root / "server").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("kind, body, titles, detail", [
    ("commands", {}, ["name is required", "cmd is required"], None),
    ("commands", {"name": "x"}, ["cmd is required"], None),
    ("scripts", {"script": "pwd", "name": "  "}, ["name is required"], None),
    ("scripts", {"name": "x", "script": "pwd", "is_sudo": "yes"}, ["Invalid JSON data."], "is_sudo"),
    ("commands", {"name": "x", "cmd": "y", "script": "z"}, ["Invalid JSON data."], 'unknown field "script"'),
    ("commands", {"name": "x", "cmd": "y", "tags": "a"}, ["Invalid JSON data."], "tags"),
    ("scripts", {"name": "x", "script": "y", "timeout_sec": -1}, ["Invalid JSON data."], "timeout_sec"),
])
def test_validation(shared: Server, kind: str, body: dict[str, Any], titles: list[str],
                    detail: str | None) -> None:
    for method, path in (("POST", f"/library/{kind}"), ("PUT", f"/library/{kind}/some-id")):
        resp = shared.api.request(method, path, json=body)
        assert resp.status_code == 400, resp.text
        items = resp.json()["errors"]
        assert [i["title"] for i in items] == titles
        if detail:
            assert detail in items[0]["detail"]


def test_list_parameters_and_openapi(shared: Server) -> None:
    server = shared
    assert_error(server.api.get("/library/commands", params={"sort": "nope"}), 400,
                 "unsupported sort field 'nope'")
    assert_error(server.api.get("/library/scripts/x", params={"fields[scripts]": "bogus"}), 400,
                 'unsupported field "bogus" for resource "scripts"')
    paths = server.api.get("/openapi.json").json()["paths"]
    assert paths["/api/v1/library/scripts"]["post"]["x-rport-permission"] == "scripts"
    assert paths["/api/v1/library/commands/{id}"]["delete"]["x-rport-permission"] == "commands"
