"""End to end: per-client access control for non-admin API users (RPort's
``allowed_user_groups``) with a real rportd and real agents, driven through the API:

* ``POST /clients/{id}/acl`` (administrators only, its validation, null clears it);
* what a non-admin sees: ``GET /clients`` (and its count), ``GET /clients/{id}`` (403 for a
  client they may not use, 404 for an unknown one), ``GET /tunnels``, ``GET /client-tags``,
  ``GET /client-groups``;
* what a non-admin may do: tunnels (a real echo through a tunnel on a visible client; PUT and
  DELETE refused on another), single- and multi-client commands (nothing runs when one target
  is refused);
* access granted through a client group's ``allowed_user_groups`` (and lost when it is deleted);
* the ACL surviving an agent reconnect and an rportd restart on the same data dir.

Users come from an ``[api] auth_file``: admin (Administrators), alice (Ops), bob (Dev).
Waits are on conditions, never on fixed sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..procs import Agent, Server, running, wait_for
from ..services import both_databases
from ..targets import EchoServer, connect, recv_exactly

USERS = [
    {"username": "admin", "password": "foobaz", "groups": ["Administrators"]},
    {"username": "alice", "password": "alice-pass", "groups": ["Ops"]},
    {"username": "bob", "password": "bob-pass", "groups": ["Dev"]},
]
PASSWORDS = {u["username"]: u["password"] for u in USERS}
FORBIDDEN = "current user should belong to Administrators group to access this resource"
DENIED_CODE = "ERR_CODE_CLIENT_ACCESS_DENIED"
FINAL = ("successful", "failed", "unknown", "cancelled", "skipped")


def denied(*ids: str) -> str:
    return f"Access denied to client(s) with ID(s): {', '.join(ids)}"


def assert_error(resp: httpx.Response, status: int, code: str, title: str) -> dict[str, str]:
    """The standard envelope with exactly one item: code and title exact, detail a string."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    item = body["errors"][0]
    assert set(item) == {"code", "title", "detail"} and all(isinstance(v, str) for v in item.values()), item
    assert (item["code"], item["title"]) == (code, title), item
    return item


def with_users(server: Server) -> Server:
    """Switch a not-yet-started server to the users of USERS (an [api] auth_file)."""
    users = server.workdir / "api-users.json"
    users.write_text(json.dumps(USERS))
    server.config["api"].update({"auth": "", "auth_file": str(users)})
    return server


def user_client(server: Server, username: str) -> httpx.Client:
    return httpx.Client(base_url=server.api_url + "/api/v1", auth=(username, PASSWORDS[username]),
                        timeout=10)


def client_ids(api: httpx.Client) -> tuple[list[str], int]:
    resp = api.get("/clients")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return [c["id"] for c in body["data"]], body["meta"]["count"]


def set_acl(api: httpx.Client, client_id: str, groups: list[str] | None) -> None:
    resp = api.post(f"/clients/{client_id}/acl", json={"allowed_user_groups": groups})
    assert resp.status_code == 204 and resp.content == b"", resp.text


# -- fixtures --------------------------------------------------------------------------------


class Fleet:
    def __init__(self, server: Server) -> None:
        self.server = server
        assert server.api is not None
        self.admin = server.api
        self.alice = user_client(server, "alice")
        self.bob = user_client(server, "bob")

    def close(self) -> None:
        self.alice.close()
        self.bob.close()


@pytest.fixture(scope="module")
def fleet_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One server (users of USERS) with agents web1 (tag Web) and db1 (tag DB)."""
    root: Path = tmp_path_factory.mktemp("client-access")
    server = with_users(Server(root / "server")).start()
    agents = [Agent(root / "agent-web1", server, "web1", args=["--tag", "Web"]),
              Agent(root / "agent-db1", server, "db1", args=["--tag", "DB"])]
    with running(server, agents):
        fleet = Fleet(server)
        try:
            yield fleet
        finally:
            fleet.close()


@pytest.fixture
def fleet(fleet_module: Fleet) -> Iterator[Fleet]:
    """The shared fleet in a known state: web1 allowed to Ops, db1 to nobody, no client
    group, no tunnel. Each test starts from that."""
    admin = fleet_module.admin
    for group in admin.get("/client-groups").json()["data"]:
        assert admin.delete(f"/client-groups/{group['id']}").status_code == 204
    for tunnel in admin.get("/tunnels").json()["data"]:
        resp = admin.delete(f"/clients/{tunnel['client_id']}/tunnels/{tunnel['id']}", params={"force": "1"})
        assert resp.status_code == 204, resp.text
    set_acl(admin, "web1", ["Ops"])
    set_acl(admin, "db1", None)
    yield fleet_module


# -- tests -----------------------------------------------------------------------------------


def test_non_admins_see_only_the_clients_their_groups_allow(fleet: Fleet) -> None:
    assert client_ids(fleet.alice) == (["web1"], 1)
    resp = fleet.bob.get("/clients")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": [], "meta": {"count": 0}}
    ids, count = client_ids(fleet.admin)
    assert sorted(ids) == ["db1", "web1"] and count == 2

    # The client's JSON carries its ACL (admin's view and alice's alike).
    assert fleet.server.client("web1")["allowed_user_groups"] == ["Ops"]
    assert fleet.server.client("db1")["allowed_user_groups"] is None
    resp = fleet.alice.get("/clients/web1")
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["id"] == "web1" and resp.json()["data"]["allowed_user_groups"] == ["Ops"]

    # A client alice may not use is a 403; an unknown one stays the route's own 404.
    assert_error(fleet.alice.get("/clients/db1"), 403, DENIED_CODE, denied("db1"))
    assert_error(fleet.bob.get("/clients/web1"), 403, DENIED_CODE, denied("web1"))
    resp = fleet.alice.get("/clients/nope")
    assert resp.status_code == 404, resp.text
    assert set(resp.json()) == {"errors"} and resp.json()["errors"][0]["code"] != DENIED_CODE

    # List options apply to the visible clients only.
    resp = fleet.alice.get("/clients", params={"filter[id]": "db1"})
    assert resp.json() == {"data": [], "meta": {"count": 0}}


def test_tunnels_only_on_visible_clients(fleet: Fleet) -> None:
    with EchoServer() as echo:
        # alice tunnels to a real echo server through web1 and pushes bytes through it
        resp = fleet.alice.put("/clients/web1/tunnels", params={"remote": str(echo.port)})
        assert resp.status_code == 200, resp.text
        mine = resp.json()["data"]
        with connect(int(mine["lport"])) as sock:
            payload = b"through web1, as alice\n" * 100
            sock.sendall(payload)
            assert recv_exactly(sock, len(payload)) == payload

        # not on db1: refused, and nothing is created there
        assert_error(fleet.alice.put("/clients/db1/tunnels", params={"remote": str(echo.port)}),
                     403, DENIED_CODE, denied("db1"))
        all_tunnels = fleet.admin.get("/tunnels").json()["data"]
        assert [t["client_id"] for t in all_tunnels] == ["web1"]

        # admin's tunnel on db1 is not in alice's list, and alice cannot delete it
        resp = fleet.admin.put("/clients/db1/tunnels", params={"remote": str(echo.port)})
        assert resp.status_code == 200, resp.text
        theirs = resp.json()["data"]
        resp = fleet.alice.get("/tunnels")
        assert resp.status_code == 200, resp.text
        assert [(t["client_id"], t["id"]) for t in resp.json()["data"]] == [("web1", mine["id"])]
        assert resp.json()["meta"]["count"] == 1
        assert sorted(t["client_id"] for t in fleet.admin.get("/tunnels").json()["data"]) == ["db1", "web1"]
        resp = fleet.bob.get("/tunnels")
        assert resp.status_code == 200 and resp.json()["data"] == [], resp.text

        assert_error(fleet.alice.delete(f"/clients/db1/tunnels/{theirs['id']}", params={"force": "1"}),
                     403, DENIED_CODE, denied("db1"))
        assert [t["id"] for t in fleet.server.client("db1")["tunnels"]] == [theirs["id"]]

        # alice deletes her own
        resp = fleet.alice.delete(f"/clients/web1/tunnels/{mine['id']}", params={"force": "1"})
        assert resp.status_code == 204, resp.text
        assert fleet.server.client("web1")["tunnels"] == []


def test_commands_only_on_visible_clients(fleet: Fleet) -> None:
    admin, alice = fleet.admin, fleet.alice
    assert_error(alice.post("/clients/db1/commands", json={"command": "/usr/bin/true"}),
                 403, DENIED_CODE, denied("db1"))
    resp = alice.get("/clients/db1/commands")
    assert_error(resp, 403, DENIED_CODE, denied("db1"))

    before = admin.get("/commands").json()
    db1_jobs = admin.get("/clients/db1/commands").json()["meta"]["count"]
    assert_error(alice.post("/commands", json={"command": "/usr/bin/true", "client_ids": ["web1", "db1"]}),
                 403, DENIED_CODE, denied("db1"))
    # Tags (labels, groups) select only among the clients alice may see: a tag that only a
    # hidden client has selects nothing, and no answer names the hidden client to her.
    resp = alice.post("/commands", json={"command": "/usr/bin/true", "tags": {"tags": ["DB"]}})
    assert_error(resp, 400, "ERR_CODE_NO_TARGETS", "at least 1 client should be specified")
    assert "db1" not in resp.text
    after = admin.get("/commands").json()
    assert after["meta"]["count"] == before["meta"]["count"]
    assert [r["jid"] for r in after["data"]] == [r["jid"] for r in before["data"]]
    assert admin.get("/clients/db1/commands").json()["meta"]["count"] == db1_jobs

    resp = alice.post("/commands", json={"command": "/usr/bin/echo alice-was-here", "client_ids": ["web1"]})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]

    def finished() -> dict[str, Any] | None:
        r = alice.get(f"/commands/{jid}")
        assert r.status_code == 200, r.text
        multi = r.json()["data"]
        return multi if multi["jobs"] and all(j["status"] in FINAL for j in multi["jobs"]) else None

    multi = wait_for(finished, 30, f"multi-job {jid} to finish", interval=0.05)
    assert multi["created_by"] == "alice"
    (job,) = multi["jobs"]
    assert job["client_id"] == "web1" and job["status"] == "successful", job
    assert job["result"]["stdout"] == "alice-was-here\n"
    assert jid in [r["jid"] for r in admin.get("/commands").json()["data"]]

    # a tag both have runs on the one she may use only
    resp = alice.post("/commands", json={"command": "/usr/bin/true",
                                         "tags": {"operator": "OR", "tags": ["Web", "DB"]}})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    multi = wait_for(finished, 30, f"multi-job {jid} to finish", interval=0.05)
    assert [j["client_id"] for j in multi["jobs"]] == ["web1"]


def test_access_through_a_client_group(fleet: Fleet) -> None:
    admin, bob = fleet.admin, fleet.bob
    tags = bob.get("/client-tags")
    assert tags.status_code == 200 and tags.json() == {"data": [], "meta": {"count": 0}}, tags.text
    resp = admin.post("/client-groups", json={"id": "dbs", "params": {"client_id": ["db1"]},
                                              "allowed_user_groups": ["Dev"]})
    assert resp.status_code == 201, resp.text
    resp = admin.post("/client-groups", json={"id": "webs", "params": {"client_id": ["web1"]}})
    assert resp.status_code == 201, resp.text
    resp = admin.post("/client-groups", json={"id": "everything", "params": {"client_id": ["*"]}})
    assert resp.status_code == 201, resp.text

    assert client_ids(bob) == (["db1"], 1)
    resp = bob.get("/clients/db1")
    assert resp.status_code == 200 and resp.json()["data"]["id"] == "db1", resp.text
    assert resp.json()["data"]["allowed_user_groups"] is None  # the client's own ACL is unchanged
    assert_error(bob.get("/clients/web1"), 403, DENIED_CODE, denied("web1"))

    # groups: only those with a client bob sees, counted over those clients only
    resp = bob.get("/client-groups")
    assert resp.status_code == 200, resp.text
    groups = {g["id"]: g for g in resp.json()["data"]}
    assert sorted(groups) == ["dbs", "everything"] and resp.json()["meta"]["count"] == 2
    assert (groups["dbs"]["client_ids"], groups["dbs"]["num_clients"]) == (["db1"], 1)
    assert (groups["everything"]["client_ids"], groups["everything"]["num_clients"]) == (["db1"], 1)
    resp = bob.get("/client-groups/everything")
    assert resp.status_code == 200 and resp.json()["data"]["client_ids"] == ["db1"], resp.text
    resp = admin.get("/client-groups/everything")
    assert resp.json()["data"]["client_ids"] == ["db1", "web1"], resp.text
    # alice (Ops, web1 only) sees the other side
    resp = fleet.alice.get("/client-groups")
    assert sorted(g["id"] for g in resp.json()["data"]) == ["everything", "webs"], resp.text
    # a group without a client she may see is not there for her, alone either (its params
    # name db1), nor as a target
    resp = fleet.alice.get("/client-groups/dbs")
    assert resp.status_code == 404 and "db1" not in resp.text, resp.text
    resp = fleet.alice.post("/commands", json={"command": "/usr/bin/true", "group_ids": ["dbs"]})
    assert resp.status_code == 400 and "db1" not in resp.text, resp.text
    assert resp.json()["errors"][0]["title"] == 'Unknown group with id="dbs".'

    resp = bob.get("/client-tags")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": [{"tag": "DB", "client_ids": ["db1"]}], "meta": {"count": 1}}

    # deleting the group takes bob's access away again
    assert admin.delete("/client-groups/dbs").status_code == 204
    assert_error(bob.get("/clients/db1"), 403, DENIED_CODE, denied("db1"))
    assert client_ids(bob) == ([], 0)
    resp = bob.get("/client-groups")
    assert resp.json() == {"data": [], "meta": {"count": 0}}, resp.text


def test_acl_is_for_administrators_and_validated(fleet: Fleet) -> None:
    admin, alice = fleet.admin, fleet.alice
    assert_error(alice.post("/clients/web1/acl", json={"allowed_user_groups": ["Ops", "Dev"]}),
                 403, "ERR_CODE_FORBIDDEN", FORBIDDEN)
    # on a client alice may not use, the client check answers first; either way: refused
    resp = alice.post("/clients/db1/acl", json={"allowed_user_groups": ["Ops"]})
    assert resp.status_code == 403, resp.text
    assert fleet.server.client("web1")["allowed_user_groups"] == ["Ops"]
    assert fleet.server.client("db1")["allowed_user_groups"] is None

    for body in ([], {}, {"allowed_user_groups": "Ops"}, {"allowed_user_groups": [1]},
                 {"allowed_user_groups": [""]}, {"other": ["Ops"]}):
        assert_error(admin.post("/clients/web1/acl", json=body), 400, "ERR_CODE_INVALID_CLIENT_ACL",
                     "Invalid client ACL.")
    assert fleet.server.client("web1")["allowed_user_groups"] == ["Ops"]  # unchanged
    resp = admin.post("/clients/nope/acl", json={"allowed_user_groups": ["Ops"]})
    assert resp.status_code == 404, resp.text
    assert set(resp.json()) == {"errors"}

    # several groups (repeats dropped); bob's Dev now included
    set_acl(admin, "db1", ["Dev", "Ops", "Dev"])
    assert fleet.server.client("db1")["allowed_user_groups"] == ["Dev", "Ops"]
    assert sorted(client_ids(alice)[0]) == ["db1", "web1"]
    assert client_ids(fleet.bob) == (["db1"], 1)

    # an empty list: stored as such, and nobody (but admins) sees the client
    set_acl(admin, "db1", [])
    assert fleet.server.client("db1")["allowed_user_groups"] == []
    assert client_ids(alice) == (["web1"], 1)

    # null clears it: alice loses web1
    set_acl(admin, "web1", None)
    assert fleet.server.client("web1")["allowed_user_groups"] is None
    assert client_ids(alice) == ([], 0)
    assert_error(alice.get("/clients/web1"), 403, DENIED_CODE, denied("web1"))


@both_databases
def test_acl_survives_agent_reconnect_and_server_restart(make_server: Callable[..., Server],
                                                         make_agent: Callable[..., Agent]) -> None:
    server = with_users(make_server("persist", start=False)).start()
    first = make_agent(server, "web1")
    make_agent(server, "db1")
    assert server.api is not None
    set_acl(server.api, "web1", ["Ops"])

    def alice_sees() -> list[tuple[str, Any, str]]:
        with user_client(server, "alice") as alice:
            resp = alice.get("/clients")
            assert resp.status_code == 200, resp.text
            return [(c["id"], c["allowed_user_groups"], c["connection_state"]) for c in resp.json()["data"]]

    assert alice_sees() == [("web1", ["Ops"], "connected")]

    # the agent goes away and comes back as a new process with the same id
    first.stop()
    server.wait_disconnected("web1")
    assert alice_sees() == [("web1", ["Ops"], "disconnected")]
    make_agent(server, "web1")
    assert alice_sees() == [("web1", ["Ops"], "connected")]

    # rportd restarts on the same data dir: the ACL comes back from the store
    server.stop()
    server.start()
    assert server.api is not None
    ids, _ = client_ids(server.api)
    assert sorted(ids) == ["db1", "web1"]  # both restored (connected or not yet)
    assert [(cid, acl) for cid, acl, _ in alice_sees()] == [("web1", ["Ops"])]
    server.wait_connected("web1")
    server.wait_connected("db1")
    assert alice_sees() == [("web1", ["Ops"], "connected")]
    assert server.client("web1")["allowed_user_groups"] == ["Ops"]
    assert server.client("db1")["allowed_user_groups"] is None
    with user_client(server, "alice") as alice:
        assert_error(alice.get("/clients/db1"), 403, DENIED_CODE, denied("db1"))
