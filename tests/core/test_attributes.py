"""End to end: client attributes (RPort's ``[client] attributes_file_path`` and
``/clients/{id}/attributes``) with a real rportd and real agents: the file overrides the
configured tags and labels, filters and targeting find them, ``PUT`` rewrites the file on the
client and shows the new values at once, and they survive the agent's restart. RPort's
acceptance tests ``client_attributes/filter``, ``update`` and ``fail_update`` are in here."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..procs import Agent, Server, running


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    root: Path = tmp_path_factory.mktemp("attributes")
    attrs_file = root / "client_attributes.json"
    attrs_file.write_text(json.dumps({"tags": ["task-vm", "vm"],
                                      "labels": {"country": "Germany", "city": "Cologne"}}))
    bad_file = root / "broken.json"
    bad_file.write_text("{not json")
    server = Server(root / "server").start()
    specs = {
        "with-file": {"tags": ["from-config"], "attributes_file_path": str(attrs_file)},
        "no-file": {"tags": ["plain"]},
        "bad-file": {"tags": ["fallback"], "attributes_file_path": str(bad_file)},
    }
    agents = [Agent(root / f"agent-{cid}", server, cid, config={"client": spec})
              for cid, spec in specs.items()]
    ctx = {"root": root, "file": attrs_file, "agents": {a.id: a for a in agents}}
    with running(server, agents):
        try:
            yield server, ctx
        finally:  # agents a test restarted
            for agent in ctx["agents"].values():
                agent.stop()


def test_the_file_overrides_the_configured_tags_and_labels(fleet: tuple[Server, dict]) -> None:
    server, _ = fleet
    api = server.api
    resp = api.get("/clients/with-file/attributes")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": {"tags": ["task-vm", "vm"],
                                    "labels": {"country": "Germany", "city": "Cologne"}}}
    # RPort's bdd client_attributes/filter
    rows = api.get("/clients", params={"fields[clients]": "tags", "filter[id]": "with-file"}).json()
    assert rows["data"] == [{"tags": ["task-vm", "vm"]}]
    assert [c["id"] for c in api.get("/clients", params={"filter[tags]": "vm"}).json()["data"]] \
        == ["with-file"]
    assert [c["id"] for c in api.get("/clients", params={"filter[labels]": "city: Cologne"})
            .json()["data"]] == ["with-file"]
    assert api.get("/clients", params={"filter[labels]": "not_existing"}).json()["data"] == []
    # without a file (or with one that cannot be read) the configuration's tags apply
    assert api.get("/clients/no-file/attributes").json()["data"] == {"tags": ["plain"], "labels": {}}
    assert api.get("/clients/bad-file/attributes").json()["data"] == {"tags": ["fallback"],
                                                                      "labels": {}}
    assert "client attributes: " in fleet[1]["agents"]["bad-file"].log()


def test_put_rewrites_the_file_and_shows_at_once(fleet: tuple[Server, dict]) -> None:
    server, ctx = fleet
    api = server.api
    new = {"tags": ["test", "edge"], "labels": {"test": "test", "city": "Lille"}}
    resp = api.put("/clients/with-file/attributes", json=new)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": "ok"}
    # on the client's disk, private to the agent's user
    path: Path = ctx["file"]
    assert json.loads(path.read_text()) == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # at once in the API: attributes, filters (RPort's bdd client_attributes/update), tags list,
    # multi-client targeting by label
    assert api.get("/clients/with-file/attributes").json()["data"] == new
    rows = api.get("/clients", params={"fields[clients]": "tags,labels",
                                       "filter[labels]": "test: test"}).json()["data"]
    assert rows == [new]
    assert api.get("/clients", params={"filter[tags]": "vm"}).json()["data"] == []
    tags = {t["tag"]: t["client_ids"] for t in api.get("/client-tags").json()["data"]}
    assert tags["edge"] == ["with-file"] and "task-vm" not in tags
    resp = api.post("/commands", json={"command": "/usr/bin/true", "labels": {"labels": ["city: Lille"]}})
    assert resp.status_code == 200, resp.text
    multi = api.get(f"/commands/{resp.json()['data']['jid']}").json()["data"]
    assert multi["target_client_ids"] == ["with-file"]

    # the agent restarts: it reads the file it wrote, and the server shows the same again
    agent: Agent = ctx["agents"]["with-file"]
    agent.stop()
    server.wait_disconnected("with-file")
    restarted = Agent(ctx["root"] / "agent-with-file", server, "with-file",
                      config={"client": {"tags": ["from-config"], "attributes_file_path": str(path)}})
    ctx["agents"]["with-file"] = restarted
    server.wait_connected("with-file")
    assert api.get("/clients/with-file/attributes").json()["data"] == new


def test_put_without_an_attributes_file_is_409(fleet: tuple[Server, dict]) -> None:
    server, _ = fleet
    resp = server.api.put("/clients/no-file/attributes", json={"tags": [], "labels": {}})
    assert resp.status_code == 409, resp.text
    item = resp.json()["errors"][0]
    assert item["title"].startswith("client error: attributes file path not set"), item
    assert item["code"] == "ERR_CODE_CLIENT_ERROR"
    assert server.api.get("/clients/no-file/attributes").json()["data"]["tags"] == ["plain"]


def test_put_where_the_file_cannot_be_written_is_409(fleet: tuple[Server, dict]) -> None:
    server, ctx = fleet
    target = ctx["root"] / "no-such-dir" / "attrs.json"
    agent = Agent(ctx["root"] / "agent-unwritable", server, "unwritable",
                  config={"client": {"attributes_file_path": str(target)}})
    try:
        server.wait_connected("unwritable")
        resp = server.api.put("/clients/unwritable/attributes", json={"tags": ["a"]})
        assert resp.status_code == 409, resp.text
        assert "can't write attributes to file" in resp.json()["errors"][0]["title"]
        assert server.api.get("/clients/unwritable/attributes").json()["data"]["tags"] == []
    finally:
        agent.stop()


@pytest.mark.parametrize("body, detail", [
    ({"tags": "vm"}, "tags must be a list of strings"),
    ({"labels": {"a": 1}}, "labels must map names to strings"),
    ({"tags": [], "color": "red"}, 'unknown field "color"'),
    ([], "JSON object"),
])
def test_put_invalid_bodies_are_400(fleet: tuple[Server, dict], body: Any, detail: str) -> None:
    server, _ = fleet
    resp = server.api.put("/clients/with-file/attributes", json=body)
    assert resp.status_code == 400, resp.text
    assert detail in resp.json()["errors"][0]["detail"]
    resp = server.api.put("/clients/with-file/attributes", content=b"")
    assert resp.status_code == 400 and resp.json()["errors"][0]["title"] == "Missing body with json data."


def test_attributes_need_a_connected_client(fleet: tuple[Server, dict]) -> None:
    server, ctx = fleet
    for method in ("GET", "PUT"):
        resp = server.api.request(method, "/clients/nope/attributes", json={"tags": []})
        assert resp.status_code == 404, resp.text
        assert resp.json()["errors"][0]["title"] == 'Active client with id="nope" not found.'
    agent = Agent(ctx["root"] / "agent-gone", server, "gone", config={"client": {"tags": ["t"]}})
    server.wait_connected("gone")
    agent.stop()
    server.wait_disconnected("gone")
    for method in ("GET", "PUT"):
        resp = server.api.request(method, "/clients/gone/attributes", json={"tags": []})
        assert resp.status_code == 404, resp.text
        assert resp.json()["errors"][0]["title"] == 'Active client with id="gone" not found.'
