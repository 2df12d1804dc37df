"""End to end: client groups and client tags (plugin targeting) with a real rportd and real
agents, driven through the API as RPort's documentation and the reference (rport-api.md §1.5)
describe: CRUD, members computed live from the current clients, params (wildcards, tags with
and/or, labels, connection state), RPort's validation messages, list options, permissions,
persistence across a restart, GET /client-tags and the ``groups`` field of a client.

Waits are on conditions, never on fixed sleeps."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..procs import Agent, Server, running, wait_for
from ..services import both_databases

PARAM_KEYS = ("client_id", "name", "os", "os_arch", "os_family", "os_kernel", "hostname", "ipv4",
              "ipv6", "tag", "version", "address", "client_auth_id", "connection_state", "labels")
NO_PARAMS = dict.fromkeys(PARAM_KEYS)
FORBIDDEN = "current user should belong to Administrators group to access this resource"

FLEET: dict[str, list[str]] = {
    "web1": ["--name", "Web Server 1", "--tag", "Linux", "--tag", "web", "--label", "zone: EU"],
    "web2": ["--name", "Web Server 2", "--tag", "Linux", "--label", "zone: US"],
    "win1": ["--name", "DB Box", "--tag", "Windows", "--label", "zone: EU", "--label", "env: prod1"],
}


def assert_errors(resp: httpx.Response, status: int, *items: tuple[str, str] | str) -> list[dict[str, str]]:
    """The standard envelope with a code on every item; ``items`` are titles or (title, detail)."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"errors"}, body
    for item in body["errors"]:
        assert set(item) == {"code", "title", "detail"} and item["code"], item
    got = [(e["title"], e["detail"]) if isinstance(want, tuple) else e["title"]
           for e, want in zip(body["errors"], items)]
    assert len(body["errors"]) == len(items) and got == list(items), body
    return body["errors"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with the three agents above, shared by the tests of this module; each test
    deletes the groups it creates."""
    root: Path = tmp_path_factory.mktemp("targeting")
    server = Server(root / "server").start()
    agents = [Agent(root / f"agent-{cid}", server, cid, args=args) for cid, args in FLEET.items()]
    with running(server, agents):
        yield server


@pytest.fixture
def api(fleet: Server) -> Iterator[httpx.Client]:
    assert fleet.api is not None
    yield fleet.api
    for group in fleet.api.get("/client-groups").json()["data"]:
        assert fleet.api.delete(f"/client-groups/{group['id']}").status_code == 204


def create(api: httpx.Client, gid: str, params: dict[str, Any], **fields: Any) -> dict[str, Any]:
    resp = api.post("/client-groups", json={"id": gid, "params": params, **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


def group_clients(api: httpx.Client, params: dict[str, Any]) -> list[str]:
    """The members of a group with these params (created, read back, deleted)."""
    create(api, "probe", params)
    try:
        return api.get("/client-groups/probe").json()["data"]["client_ids"]
    finally:
        api.delete("/client-groups/probe")


# -- CRUD ---------------------------------------------------------------------------------------


def test_create_read_update_delete(api: httpx.Client) -> None:
    resp = api.post("/client-groups", json={"id": "linux", "description": "Linux boxes",
                                            "params": {"tag": ["Linux"]}})
    assert resp.status_code == 201, resp.text
    expected = {"id": "linux", "description": "Linux boxes", "params": {**NO_PARAMS, "tag": ["Linux"]},
                "allowed_user_groups": [], "client_ids": ["web1", "web2"], "num_clients": 2,
                "num_clients_connected": 2}
    assert resp.json() == {"data": expected}
    assert api.get("/client-groups/linux").json() == {"data": expected}
    listed = api.get("/client-groups").json()
    assert listed == {"data": [expected], "meta": {"count": 1}}

    # PUT replaces the whole group (RPort: 204, no body).
    resp = api.put("/client-groups/linux", json={"id": "linux", "params": {"tag": ["Windows"]},
                                                 "allowed_user_groups": ["Ops"]})
    assert resp.status_code == 204, resp.text
    assert api.get("/client-groups/linux").json()["data"] == {
        **expected, "description": "", "params": {**NO_PARAMS, "tag": ["Windows"]},
        "allowed_user_groups": ["Ops"], "client_ids": ["win1"], "num_clients": 1,
        "num_clients_connected": 1}

    # A GET result can be PUT back as it is (computed fields are ignored).
    doc = api.get("/client-groups/linux").json()["data"]
    assert api.put("/client-groups/linux", json=doc).status_code == 204
    assert api.get("/client-groups/linux").json()["data"] == doc

    # PUT is an upsert; a body without id takes the path's.
    assert api.put("/client-groups/web", json={"params": {"tag": ["web"]}}).status_code == 204
    assert api.get("/client-groups/web").json()["data"]["client_ids"] == ["web1"]
    assert_errors(api.put("/client-groups/web", json={"id": "other", "params": {}}), 400,
                  '"group_id" route param doesn\'t match group ID from request body.')

    assert api.delete("/client-groups/linux").status_code == 204
    assert_errors(api.get("/client-groups/linux"), 404, 'Client Group[id="linux"] not found.')
    assert api.delete("/client-groups/linux").status_code == 204  # RPort: 204 always
    assert [g["id"] for g in api.get("/client-groups").json()["data"]] == ["web"]


def test_duplicate_is_409(api: httpx.Client) -> None:
    create(api, "dup", {"tag": ["Linux"]})
    assert_errors(api.post("/client-groups", json={"id": "dup", "params": {}}), 409,
                  'Client group with id "dup" already exists.')
    assert api.get("/client-groups/dup").json()["data"]["params"]["tag"] == ["Linux"]  # unchanged


def test_unknown_group_is_404(api: httpx.Client) -> None:
    assert_errors(api.get("/client-groups/nope"), 404, 'Client Group[id="nope"] not found.')


# -- params and membership ------------------------------------------------------------------


@pytest.mark.parametrize(("params", "expected"), [
    ({}, []),  # no params: no clients
    ({"name": ["web server*"]}, ["web1", "web2"]),  # wildcard, case-insensitive
    ({"name": ["*1"]}, ["web1"]),
    ({"name": ["*B*"]}, ["web1", "web2", "win1"]),
    ({"name": ["Web*2*"]}, ["web2"]),
    ({"name": ["web server 1*1"]}, []),  # no overlap: the trailing 1 is needed twice
    ({"client_id": ["WEB1", "win*"]}, ["web1", "win1"]),
    ({"tag": ["linux"]}, ["web1", "web2"]),
    ({"tag": {"and": ["Linux", "web"]}}, ["web1"]),
    ({"tag": {"OR": ["web", "windows"]}}, ["web1", "win1"]),
    ({"tag": ["Linux"], "name": ["*2"]}, ["web2"]),  # keys AND
    ({"labels": ["zone:EU"]}, ["web1", "win1"]),
    ({"labels": ["zone: EU", "env: prod1"]}, ["web1", "win1"]),
    ({"labels": ["env:*"]}, ["win1"]),
    ({"address": ["127.0.0.1"], "client_auth_id": ["user1"]}, ["web1", "web2", "win1"]),
    ({"connection_state": ["connected"], "tag": ["Windows"]}, ["win1"]),
    ({"connection_state": ["disconnected"]}, []),
    ({"ipv6": ["no-such-address"]}, []),
])
def test_membership(api: httpx.Client, params: dict[str, Any], expected: list[str]) -> None:
    assert group_clients(api, params) == expected


def test_facts_params_follow_the_client_document(api: httpx.Client, fleet: Server) -> None:
    web1 = fleet.client("web1")
    assert web1 is not None
    params = {key: [web1[key]] for key in ("os", "os_arch", "os_family", "os_kernel", "hostname",
                                           "version")}
    assert "web1" in group_clients(api, params)
    assert group_clients(api, {"ipv4": web1["ipv4"] or []}) == sorted(
        cid for cid in FLEET if fleet.client(cid)["ipv4"] == web1["ipv4"])


def test_validation_errors(api: httpx.Client) -> None:
    def post(body: Any) -> httpx.Response:
        return api.post("/client-groups", json=body)

    invalid = "Invalid client group."
    assert_errors(post({"id": ""}), 400, (invalid, "group ID cannot be empty"))
    assert_errors(post({"id": "x" * 31}), 400, (invalid, "invalid group ID: max length 30, got 31"))
    assert_errors(post({"id": "a/b"}), 400,
                  (invalid, 'invalid group ID "a/b": can contain only "A-Za-z0-9_-*"'))
    assert_errors(post({"id": "g", "params": {"tag": {"xor": ["a"]}}}), 400,
                  (invalid, "error, only and/or is allowed for tags group definitions"))
    assert_errors(post({"id": "g", "params": {"tag": "Linux"}}), 400,
                  (invalid, "error parsing tags group definitions"))
    errors = assert_errors(post({"id": "g", "params": {"tags": ["Linux"]}}), 400, invalid)
    assert errors[0]["detail"].startswith('unsupported params key "tags" (did you mean "tag"?)')
    assert errors[0]["code"] == "ERR_CODE_INVALID_CLIENT_GROUP"
    # Several problems: one item each.
    assert_errors(post({"id": "", "params": {"os": "Linux"}}), 400,
                  (invalid, "group ID cannot be empty"), (invalid, 'params "os" must be a list of strings'))
    assert_errors(post({"id": "g", "colour": "red"}), 400, ("Invalid JSON data.", 'json: unknown field "colour"'))
    assert_errors(api.post("/client-groups", content=b""), 400, "Missing body with json data.")
    assert_errors(api.post("/client-groups", content=b"{"), 400, "Invalid JSON data.")
    assert_errors(api.put("/client-groups/g", json={"id": "g", "params": {"name": "x"}}), 400,
                  (invalid, 'params "name" must be a list of strings'))
    assert api.get("/client-groups").json() == {"data": [], "meta": {"count": 0}}


def test_list_options(api: httpx.Client) -> None:
    create(api, "a-linux", {"tag": ["Linux"]}, description="zz")
    create(api, "b-windows", {"tag": ["Windows"]}, description="aa")
    create(api, "c-empty", {"tag": ["nothing"]})

    def ids(**query: str) -> list[str]:
        resp = api.get("/client-groups", params=query)
        assert resp.status_code == 200, resp.text
        return [g.get("id") for g in resp.json()["data"]]

    assert ids() == ["a-linux", "b-windows", "c-empty"]
    assert ids(sort="-id") == ["c-empty", "b-windows", "a-linux"]
    assert ids(sort="description") == ["c-empty", "b-windows", "a-linux"]
    assert ids(**{"filter[id]": "*-linux,c*"}) == ["a-linux", "c-empty"]
    assert ids(**{"filter[description]": "AA"}) == ["b-windows"]
    resp = api.get("/client-groups", params={"page[limit]": "1", "page[offset]": "1"})
    assert resp.json()["meta"] == {"count": 3} and [g["id"] for g in resp.json()["data"]] == ["b-windows"]
    resp = api.get("/client-groups", params={"fields[client_groups]": "id,num_clients"})
    assert resp.json()["data"] == [{"id": "a-linux", "num_clients": 2}, {"id": "b-windows", "num_clients": 1},
                                   {"id": "c-empty", "num_clients": 0}]
    resp = api.get("/client-groups/a-linux", params={"fields[client_groups]": "client_ids"})
    assert resp.json() == {"data": {"client_ids": ["web1", "web2"]}}
    assert_errors(api.get("/client-groups", params={"filter[params]": "x"}), 400,
                  "unsupported filter field 'filter[params]'")
    assert_errors(api.get("/client-groups", params={"page[limit]": "501"}), 400,
                  "pagination limit too big (501) maximum is 500")
    assert_errors(api.get("/client-groups/a-linux", params={"x": "1"}), 400,
                  "unsupported query parameter 'x'")


# -- client tags and the groups of a client ---------------------------------------------------


def test_client_tags(api: httpx.Client) -> None:
    resp = api.get("/client-tags")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": [
        {"tag": "Linux", "client_ids": ["web1", "web2"]},
        {"tag": "web", "client_ids": ["web1"]},
        {"tag": "Windows", "client_ids": ["win1"]},
    ], "meta": {"count": 3}}
    resp = api.get("/client-tags", params={"fields[client_tags]": "tag", "sort": "-tag"})
    assert resp.json()["data"] == [{"tag": "Windows"}, {"tag": "web"}, {"tag": "Linux"}]
    resp = api.get("/client-tags", params={"filter[tag]": "w*", "page[limit]": "1"})
    assert resp.json() == {"data": [{"tag": "web", "client_ids": ["web1"]}], "meta": {"count": 2}}


def test_client_document_groups(api: httpx.Client, fleet: Server) -> None:
    assert fleet.client("web1")["groups"] == []
    create(api, "linux", {"tag": ["Linux"]})
    create(api, "eu", {"labels": ["zone: EU"]})
    create(api, "all", {"client_id": ["*"]})
    assert fleet.client("web1")["groups"] == ["all", "eu", "linux"]
    assert fleet.client("web2")["groups"] == ["all", "linux"]
    assert fleet.client("win1")["groups"] == ["all", "eu"]
    # The core's client filters see the field too.
    resp = api.get("/clients", params={"filter[groups]": "eu", "fields[clients]": "id,groups"})
    assert resp.json()["data"] == [{"id": "web1", "groups": ["all", "eu", "linux"]},
                                   {"id": "win1", "groups": ["all", "eu"]}]
    api.delete("/client-groups/eu")
    assert fleet.client("win1")["groups"] == ["all"]


# -- permissions ------------------------------------------------------------------------------


@both_databases
def test_writes_need_an_administrator(make_server: Callable[..., Server],
                                      make_agent: Callable[..., Agent]) -> None:
    server = make_server("perm", start=False)
    users = server.workdir / "api-users.json"
    users.write_text(json.dumps([
        {"username": "admin", "password": "foobaz", "groups": ["Administrators"]},
        {"username": "bob", "password": "pass1234", "groups": ["Users"]},
    ]))
    server.config["api"].update({"auth": "", "auth_file": str(users)})
    server.start()
    make_agent(server, "l1", args=["--tag", "Linux"])
    admin = server.api
    assert admin is not None
    # bob's group "Users" may see the members of "linux" (RPort's allowed_user_groups)
    assert admin.post("/client-groups", json={"id": "linux", "params": {"tag": ["Linux"]},
                                              "allowed_user_groups": ["Users"]}).status_code == 201
    assert admin.post("/client-groups", json={"id": "empty", "params": {"tag": ["none"]}}).status_code == 201
    with httpx.Client(base_url=server.api_url + "/api/v1", auth=("bob", "pass1234"), timeout=10) as bob:
        assert_errors(bob.post("/client-groups", json={"id": "x"}), 403, FORBIDDEN)
        assert_errors(bob.put("/client-groups/linux", json={"id": "linux"}), 403, FORBIDDEN)
        assert_errors(bob.delete("/client-groups/linux"), 403, FORBIDDEN)
        # Non-administrators read groups, but (as in RPort) not those without a client they see.
        listed = bob.get("/client-groups").json()
        assert [g["id"] for g in listed["data"]] == ["linux"] and listed["meta"] == {"count": 1}
        assert bob.get("/client-groups/linux").json()["data"]["client_ids"] == ["l1"]
        assert bob.get("/client-tags").json()["data"] == [{"tag": "Linux", "client_ids": ["l1"]}]
    assert [g["id"] for g in admin.get("/client-groups").json()["data"]] == ["empty", "linux"]


# -- live membership and persistence ------------------------------------------------------------


@both_databases
def test_members_follow_the_clients_and_groups_survive_a_restart(
        server: Server, make_agent: Callable[..., Agent]) -> None:
    api = server.api
    assert api is not None

    def linux() -> dict[str, Any]:
        assert server.api is not None  # a new client after each (re)start
        resp = server.api.get("/client-groups/linux")
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    assert api.post("/client-groups", json={"id": "linux", "params": {"tag": ["Linux"]}}).status_code == 201
    assert linux()["client_ids"] == []
    first = make_agent(server, "lin-a", args=["--tag", "Linux", "--label", "zone: EU"])
    make_agent(server, "win-a", args=["--tag", "Windows"])
    assert linux()["client_ids"] == ["lin-a"]
    # A newly connected matching agent appears at once.
    make_agent(server, "lin-b", args=["--tag", "Linux"])
    doc = linux()
    assert (doc["client_ids"], doc["num_clients"], doc["num_clients_connected"]) == (
        ["lin-a", "lin-b"], 2, 2)
    assert server.client("lin-b")["groups"] == ["linux"]

    # A disconnected client stays a member (it is still a known client), not a connected one.
    first.stop()
    server.wait_disconnected("lin-a")
    assert (linux()["client_ids"], linux()["num_clients_connected"]) == (["lin-a", "lin-b"], 1)

    # Groups are stored: they survive a restart, with members computed from the clients then.
    server.stop()
    server.start()
    assert linux()["params"]["tag"] == ["Linux"]
    wait_for(lambda: linux()["num_clients_connected"] == 1, what="lin-b to reconnect")
    assert linux()["client_ids"] == ["lin-a", "lin-b"]
    assert server.client("lin-a")["groups"] == ["linux"]
