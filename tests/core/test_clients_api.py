"""GET/DELETE /clients against a real rportd with three real agents: sort, filter, sparse fields,
paging, the error envelope, and the life of a client from connected to deleted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..procs import Agent, Server, running
from ..services import both_databases

ERROR_ITEM_KEYS = {"code", "title", "detail"}

# Names chosen so that case-insensitive order (alfa network < Mike < Zulu) differs from both
# the id order and the case-sensitive order (Mike < Zulu < alfa network).
AGENTS: dict[str, dict[str, Any]] = {
    "alpha": {"args": ["--name", "Zulu", "--tag", "Linux", "--tag", "Office Berlin",
                       "--label", "city: Cologne", "--label", "zone: EU"]},
    "beta": {"args": ["--name", "alfa network", "--tag", "Windows", "--label", "city=Berlin"]},
    # Labels and tags from the agent's configuration file rather than flags.
    "gamma": {"config": {"client": {"name": "Mike", "tags": ["Linux", "DB"],
                                    "labels": {"city": "Cologne", "zone": "US"}}}},
}


def assert_errors(resp: Any, status: int, *titles: str) -> list[dict[str, str]]:
    """The standard envelope, exactly: {"errors": [{"code", "title", "detail"}, ...]}."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"errors"}, body
    assert isinstance(body["errors"], list) and body["errors"], body
    for item in body["errors"]:
        assert set(item) == ERROR_ITEM_KEYS, item
        assert all(isinstance(item[k], str) for k in ERROR_ITEM_KEYS), item
        assert item["code"], item
    if titles:
        assert [item["title"] for item in body["errors"]] == list(titles), body
    return body["errors"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with the three agents above, shared by the read-only tests of this module."""
    root: Path = tmp_path_factory.mktemp("clients-api")
    server = Server(root / "server").start()
    agents = [Agent(root / f"agent-{cid}", server, cid, **spec) for cid, spec in AGENTS.items()]
    with running(server, agents):
        yield server


def ids(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [row["id"] for row in resp.json()["data"]]


def test_list_all_with_count(fleet: Server) -> None:
    resp = fleet.api.get("/clients")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"data", "meta"}
    assert body["meta"] == {"count": 3}
    assert [c["id"] for c in body["data"]] == ["alpha", "beta", "gamma"]  # default sort: id
    by_id = {c["id"]: c for c in body["data"]}
    assert by_id["alpha"]["name"] == "Zulu"
    assert by_id["alpha"]["tags"] == ["Linux", "Office Berlin"]
    assert by_id["alpha"]["labels"] == {"city": "Cologne", "zone": "EU"}
    assert by_id["beta"]["labels"] == {"city": "Berlin"}  # key=value form of --label
    # Labels and tags from the configuration file reach the API as well.
    assert by_id["gamma"]["name"] == "Mike"
    assert by_id["gamma"]["tags"] == ["Linux", "DB"]
    assert by_id["gamma"]["labels"] == {"city": "Cologne", "zone": "US"}
    for client in body["data"]:
        assert client["connection_state"] == "connected"
        assert client["disconnected_at"] is None
        assert client["client_auth_id"] == "user1"
        assert client["address"] == "127.0.0.1"

    status = fleet.api.get("/status").json()["data"]
    assert (status["clients_connected"], status["clients_disconnected"]) == (3, 0)


def test_sort(fleet: Server) -> None:
    api = fleet.api
    assert ids(api.get("/clients", params={"sort": "id"})) == ["alpha", "beta", "gamma"]
    assert ids(api.get("/clients", params={"sort": "-id"})) == ["gamma", "beta", "alpha"]
    # Case-insensitive: "alfa network" < "Mike" < "Zulu".
    assert ids(api.get("/clients", params={"sort": "name"})) == ["beta", "gamma", "alpha"]
    assert ids(api.get("/clients", params={"sort": "-name"})) == ["alpha", "gamma", "beta"]
    # All agents run on this host: equal host names, so ties are broken by id ascending, in
    # both directions.
    hostnames = {c["hostname"] for c in api.get("/clients").json()["data"]}
    assert len(hostnames) == 1
    assert ids(api.get("/clients", params={"sort": "hostname"})) == ["alpha", "beta", "gamma"]
    assert ids(api.get("/clients", params={"sort": "-hostname"})) == ["alpha", "beta", "gamma"]

    for params in ([("sort", "name"), ("sort", "id")], {"sort": "name,id"}):
        assert_errors(api.get("/clients", params=params), 400,
                      "Only one sort field is supported for clients.")
    assert_errors(api.get("/clients", params={"sort": "mem_total"}), 400,
                  "unsupported sort field 'mem_total'")


def test_filters(fleet: Server) -> None:
    api = fleet.api

    def f(**params: str) -> list[str]:
        return ids(api.get("/clients", params=params))

    assert f(**{"filter[tags]": "Linux"}) == ["alpha", "gamma"]
    assert f(**{"filter[tags]": "linux"}) == ["alpha", "gamma"]  # case-insensitive
    assert f(**{"filter[tags]": "Windows,DB"}) == ["beta", "gamma"]  # a,b is OR
    assert f(**{"filter[tags]": "and(Linux,DB)"}) == ["gamma"]
    assert f(**{"filter[tags]": "Office Berlin"}) == ["alpha"]
    assert f(**{"filter[labels]": "city: Cologne"}) == ["alpha", "gamma"]
    assert f(**{"filter[labels]": "city: Berlin"}) == ["beta"]
    assert f(**{"filter[labels]": "zone: *"}) == ["alpha", "gamma"]
    assert f(**{"filter[name]": "*et*"}) == ["beta"]
    assert f(**{"filter[name]": "*ET*"}) == ["beta"]
    assert f(**{"filter[name]": "et"}) == []  # without * the match is exact, not a substring
    assert f(**{"filter[name]": "M*"}) == ["gamma"]
    assert f(**{"filter[name]": "*u"}) == ["alpha"]
    assert f(**{"filter[name]": "u*"}) == []  # anchored: "Zulu" has a u inside, not at the start
    assert f(**{"filter[id|name]": "alpha,Mike"}) == ["alpha", "gamma"]
    assert f(**{"filter[connection_state]": "connected"}) == ["alpha", "beta", "gamma"]
    assert f(**{"filter[connection_state]": "disconnected"}) == []
    assert f(**{"filter[client_auth_id]": "user1"}) == ["alpha", "beta", "gamma"]
    # Separate filter params are ANDed.
    assert f(**{"filter[tags]": "Linux", "filter[labels]": "zone: EU"}) == ["alpha"]
    # Filters combine with sort, and meta.count counts the filtered rows.
    resp = api.get("/clients", params={"filter[tags]": "Linux", "sort": "-id"})
    assert ids(resp) == ["gamma", "alpha"] and resp.json()["meta"] == {"count": 2}

    assert_errors(api.get("/clients", params={"filter[x]": "1"}), 400,
                  "unsupported filter field 'filter[x]'")


def test_fields_and_paging(fleet: Server) -> None:
    api = fleet.api
    resp = api.get("/clients", params={"fields[clients]": "id,name"})
    assert resp.status_code == 200
    assert resp.json()["data"] == [{"id": "alpha", "name": "Zulu"},
                                   {"id": "beta", "name": "alfa network"},
                                   {"id": "gamma", "name": "Mike"}]
    assert_errors(api.get("/clients", params={"fields[bogus]": "x"}), 400,
                  'unsupported resource in fields: "bogus"')
    assert_errors(api.get("/clients", params={"fields[clients]": "id,nope"}), 400,
                  'unsupported field "nope" for resource "clients"')

    resp = api.get("/clients", params={"page[limit]": "1", "page[offset]": "1"})
    assert ids(resp) == ["beta"] and resp.json()["meta"] == {"count": 3}
    resp = api.get("/clients", params={"page[limit]": "2", "page[offset]": "2", "sort": "-id"})
    assert ids(resp) == ["alpha"] and resp.json()["meta"] == {"count": 3}
    resp = api.get("/clients", params={"page[offset]": "5"})
    assert ids(resp) == [] and resp.json()["meta"] == {"count": 3}
    assert ids(api.get("/clients", params={"page[limit]": "500"})) == ["alpha", "beta", "gamma"]

    assert_errors(api.get("/clients", params={"page[limit]": "501"}), 400,
                  "pagination limit too big (501) maximum is 500")
    assert_errors(api.get("/clients", params={"page[limit]": "0"}), 400,
                  "pagination limit must be positive")
    assert_errors(api.get("/clients", params={"page[limit]": "ten"}), 400,
                  "pagination limit must be a number")
    assert_errors(api.get("/clients", params={"page[offset]": "-1"}), 400,
                  "pagination offset must not be negative")
    assert_errors(api.get("/clients", params={"frobnicate": "1"}), 400,
                  "unsupported query parameter 'frobnicate'")
    # Every problem is reported, one item each.
    assert_errors(api.get("/clients", params={"filter[x]": "1", "page[limit]": "501"}), 400,
                  "unsupported filter field 'filter[x]'",
                  "pagination limit too big (501) maximum is 500")


def test_get_one(fleet: Server) -> None:
    api = fleet.api
    resp = api.get("/clients/gamma")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"data"}  # no meta on a single resource
    client = body["data"]
    listed = {c["id"]: c for c in api.get("/clients").json()["data"]}["gamma"]
    assert client == listed  # every field, the same as in the list
    fields = ("id name os os_arch os_family os_kernel os_full_name os_version "
              "os_virtualization_system os_virtualization_role cpu_family cpu_model "
              "cpu_model_name cpu_vendor num_cpus mem_total timezone hostname ipv4 ipv6 tags "
              "labels version address tunnels client_auth_id connection_state disconnected_at "
              "last_heartbeat_at allowed_user_groups groups updates_status ext_ip_addresses "
              "client_configuration").split()
    assert set(fields) <= set(client)
    assert client["id"] == "gamma" and client["name"] == "Mike"
    assert client["labels"] == {"city": "Cologne", "zone": "US"}
    assert client["num_cpus"] >= 1 and client["mem_total"] > 0
    assert isinstance(client["ipv4"], list) and isinstance(client["version"], str)
    assert client["version"]

    resp = api.get("/clients/alpha", params={"fields[clients]": "id,tags"})
    assert resp.status_code == 200
    assert resp.json() == {"data": {"id": "alpha", "tags": ["Linux", "Office Berlin"]}}

    errors = assert_errors(api.get("/clients/nope"), 404, 'client with id "nope" not found')
    assert errors[0]["code"] == "ERR_CODE_NOT_FOUND"
    assert_errors(api.get("/clients/alpha", params={"sort": "id"}), 400,
                  "unsupported query parameter 'sort'")
    assert_errors(api.get("/clients/alpha", params={"fields[clients]": "bogus"}), 400,
                  'unsupported field "bogus" for resource "clients"')


def test_unknown_route_and_wrong_method(fleet: Server) -> None:
    api = fleet.api
    errors = assert_errors(api.get("/no-such-route"), 404, "not found")
    assert errors[0]["detail"] == "GET /api/v1/no-such-route"
    assert_errors(api.get(fleet.api_url + "/elsewhere"), 404, "not found")
    resp = api.post("/status")
    errors = assert_errors(resp, 405, "method not allowed")
    assert errors[0]["detail"] == "POST /api/v1/status"
    assert "GET" in resp.headers["allow"]
    assert_errors(api.put("/clients/alpha", json={}), 405, "method not allowed")
    assert_errors(api.delete("/clients"), 405, "method not allowed")
    # A trailing slash is another path: a 404, not a redirect to the path without it.
    for path in ("/clients/", "/status/", "/tunnels/"):
        resp = api.get(path, follow_redirects=False)
        errors = assert_errors(resp, 404, "not found")
        assert errors[0]["detail"] == f"GET /api/v1{path}"


@both_databases
def test_delete_lifecycle(server: Server, make_agent: Callable[..., Agent]) -> None:
    api = server.api
    make_agent(server, "keeper")
    leaver = make_agent(server, "leaver", args=["--tag", "temp"])

    errors = assert_errors(api.delete("/clients/leaver"), 400,
                           "Client is active, should be disconnected")
    assert errors[0]["code"]
    assert server.client("leaver")["connection_state"] == "connected"

    leaver.stop()
    gone = server.wait_disconnected("leaver")
    stamp = gone["disconnected_at"]
    assert isinstance(stamp, str) and stamp.endswith("Z")
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - parsed).total_seconds()) < 600
    assert gone["tags"] == ["temp"]  # a disconnected client keeps its data

    status = api.get("/status").json()["data"]
    assert (status["clients_connected"], status["clients_disconnected"]) == (1, 1)
    assert ids(api.get("/clients", params={"filter[connection_state]": "disconnected"})) == ["leaver"]
    assert api.get("/clients").json()["meta"] == {"count": 2}

    resp = api.delete("/clients/leaver")
    assert resp.status_code == 204 and resp.content == b""
    assert_errors(api.get("/clients/leaver"), 404, 'client with id "leaver" not found')
    assert_errors(api.delete("/clients/leaver"), 404, 'client with id "leaver" not found')
    status = api.get("/status").json()["data"]
    assert (status["clients_connected"], status["clients_disconnected"]) == (1, 0)
    assert ids(api.get("/clients")) == ["keeper"]
