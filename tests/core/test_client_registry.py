"""GET /clients and /status on the registry's kept documents, counts and orders: the answers
are exactly what building every visible client's document and filtering, sorting and paging
them would give, while a page costs only its own documents; every change (a client's own
fields, a tunnel, a client group, an ACL, a connection, a removal) shows at once.

A real rportd and a real agent in the test's process (so that the test can count how many
documents the plugins were asked to make, through a plugin of its own, and fill the registry
with hundreds of known clients as a restart from the store does), a real TCP echo target, and
the real API over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx
from rport.agent.client import create_agent
from rport.agent.config import load_agent_config
from rport.core.access import uncached_client_user_groups
from rport.core.api.query import apply_list_query, parse_list_query
from rport.core.api.routes import CLIENTS, build_client_document
from rport.core.clients import Client
from rport.core.config import load_server_config
from rport.core.plugin import hookimpl
from rport.core.server import create_server
from rport.core.users import User

from ..targets import EchoServer

TIMEOUT = 20.0
USERS = [
    {"username": "admin", "password": "foobaz", "groups": ["Administrators"]},
    {"username": "alice", "password": "alice-pass", "groups": ["Ops", "Lab"]},
]
KNOWN = 300
NAMES = ["Zulu", "alfa", "Mike", "mike", "", "bravo 7", "ÄÖ", "zulu"]
OSES = ["Linux", "linux", "Windows", "darwin", "unknown"]
VERSIONS = ["0.1.0", "0.9.14", "", "1.0"]


class DocumentCounter:
    """A plugin that adds a field to every client's document and counts how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def rport_client_document(self, server: Any, client: Any, doc: dict) -> None:
        self.calls += 1
        doc["counted"] = True


async def until(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def known_clients(rng: random.Random) -> list[Client]:
    """Disconnected clients with repeated and differently-cased values (ties to break)."""
    clients = []
    for i in range(KNOWN):
        facts = {"os": rng.choice(OSES), "hostname": rng.choice(["h1", "H1", "h2", f"h{i}"])}
        clients.append(Client(
            id=rng.choice(["c", "C", "node-"]) + str(i), name=rng.choice(NAMES),
            facts=facts, tags=rng.sample(["web", "db", "Linux", "office"], rng.randint(0, 2)),
            labels={"zone": rng.choice(["EU", "US"])} if rng.random() < 0.5 else {},
            version=rng.choice(VERSIONS), address=f"192.0.2.{i % 250}", auth_id="c1",
            disconnected_at=1.7e9 + i,
            allowed_user_groups=rng.choice([None, ["Ops"], ["Dev"], ["Lab", "Dev"]])))
    return clients


QUERIES = [
    {},
    {"page[limit]": "10"},
    {"page[limit]": "7", "page[offset]": "290"},
    {"sort": "name"},
    {"sort": "-name", "page[limit]": "25", "page[offset]": "3"},
    {"sort": "os", "fields[clients]": "id,os,name"},
    {"sort": "-os"},
    {"sort": "hostname", "page[limit]": "50"},
    {"sort": "-hostname", "page[offset]": "100"},
    {"sort": "version"},
    {"sort": "-version", "page[limit]": "3"},
    {"sort": "-id"},
    {"filter[name]": "mike"},
    {"filter[name]": "*u*", "sort": "-name"},
    {"filter[tags]": "and(web,db)"},
    {"filter[tags]": "web,Linux", "sort": "hostname", "page[limit]": "5", "page[offset]": "2"},
    {"filter[labels]": "zone: EU", "filter[os]": "linux"},
    {"filter[connection_state]": "connected"},
    {"filter[*]": "*office*", "fields[clients]": "id,tags"},
    {"filter[name|hostname]": "h1,zulu", "sort": "name"},
    {"filter[groups]": "g-*"},
    {"filter[allowed_user_groups]": "Dev"},
]


def expected(server: Any, user: User, params: dict[str, str]) -> dict[str, Any]:
    """The answer as computed without the registry's help: every visible client's document
    made afresh, then filtered, sorted and paged."""
    query = parse_list_query(list(params.items()), CLIENTS)
    clients = list(server.clients)
    if not user.is_admin:
        clients = [c for c in clients
                   if not uncached_client_user_groups(server, c).isdisjoint(user.groups)]
    docs = [build_client_document(server, c) for c in clients]
    rows, count = apply_list_query(docs, query, CLIENTS)
    return json.loads(json.dumps({"data": rows, "meta": {"count": count}}))


async def same_answers(api: dict[str, httpx.AsyncClient], server: Any) -> None:
    users = {"admin": User("admin", groups=("Administrators",)),
             "alice": User("alice", groups=("Ops", "Lab"))}
    for name, client in api.items():
        for params in QUERIES:
            resp = await client.get("/clients", params=params)
            assert resp.status_code == 200, resp.text
            assert resp.json() == expected(server, users[name], params), (name, params)


def test_clients_are_listed_from_kept_documents(tmp_path: Path) -> None:
    async def main() -> None:
        echo = EchoServer()
        users_file = tmp_path / "users.json"
        users_file.write_text(json.dumps(USERS))
        config = load_server_config(overrides={
            "server": {"address": "127.0.0.1:0", "auth": "c1:pw",
                       "data_dir": str(tmp_path / "rportd")},
            "api": {"address": "127.0.0.1:0", "auth_file": str(users_file),
                    "user_login_wait": "0s"},
        })
        counter = DocumentCounter()
        server = create_server(config, extra_plugins=[("counter", counter)])
        await server.start()
        agent_task = None
        base = f"http://{server.api_address}/api/v1"
        api = {"admin": httpx.AsyncClient(base_url=base, auth=("admin", "foobaz"), timeout=10),
               "alice": httpx.AsyncClient(base_url=base, auth=("alice", "alice-pass"), timeout=10)}
        admin = api["admin"]
        try:
            for client in known_clients(random.Random(7)):
                server.clients.put(client)
            status = (await admin.get("/status")).json()["data"]
            assert (status["clients_connected"], status["clients_disconnected"]) == (0, KNOWN)

            # A page costs its own documents, once; /status costs none.
            counter.calls = 0
            resp = await admin.get("/clients", params={"page[limit]": "10", "sort": "-name"})
            assert resp.status_code == 200 and resp.json()["meta"]["count"] == KNOWN
            assert counter.calls == 10
            await admin.get("/clients", params={"page[limit]": "10", "sort": "-name"})
            await admin.get("/status")
            assert counter.calls == 10

            # A real agent connects: the counts and its document follow.
            agent = create_agent(load_agent_config(overrides={"client": {
                "server": f"{server.agent_address.host}:{server.agent_address.port}",
                "auth": "c1:pw", "id": "live", "name": "mike", "tags": ["web", "db"],
                "fingerprint": server.identity.fingerprint,
                "data_dir": str(tmp_path / "agent")}}))
            agent_task = asyncio.create_task(agent.run())
            await until(lambda: server.clients.session("live") is not None, "the agent to connect")
            await until(lambda: "live" in server.state["tunnels"].tunnels, "its tunnels' turn")
            status = (await admin.get("/status")).json()["data"]
            assert (status["clients_connected"], status["clients_disconnected"]) == (1, KNOWN)
            await same_answers(api, server)

            # Every kept document is made again only when its client changes.
            counter.calls = 0
            await same_answers({"admin": admin}, server)
            made_by_expected = counter.calls  # expected() makes every document afresh
            counter.calls = 0
            for params in QUERIES:
                await admin.get("/clients", params=params)
            assert counter.calls == 0, "the kept documents were made again"
            assert made_by_expected > 0

            # A client group (targeting's "groups" and the user groups it gives).
            resp = await admin.post("/client-groups", json={
                "id": "g-web", "params": {"tag": ["web"]}, "allowed_user_groups": ["Lab"]})
            assert resp.status_code == 201, resp.text
            live = (await admin.get("/clients/live")).json()["data"]
            assert live["groups"] == ["g-web"]
            await same_answers(api, server)
            assert (await admin.delete("/client-groups/g-web")).status_code == 204
            await same_answers(api, server)

            # A tunnel opened and closed (the tunnels plugin's field).
            resp = await admin.put("/clients/live/tunnels", params={"remote": str(echo.port)})
            assert resp.status_code == 200, resp.text
            tunnel_id = resp.json()["data"]["id"]
            rows = (await admin.get("/clients", params={"filter[id]": "live"})).json()["data"]
            assert [t["id"] for t in rows[0]["tunnels"]] == [tunnel_id]
            resp = await admin.delete(f"/clients/live/tunnels/{tunnel_id}")
            assert resp.status_code == 204, resp.text
            rows = (await admin.get("/clients", params={"filter[id]": "live"})).json()["data"]
            assert rows[0]["tunnels"] == []

            # An ACL set by an administrator; a client's own fields changed in place.
            resp = await admin.post("/clients/live/acl", json={"allowed_user_groups": ["Ops"]})
            assert resp.status_code == 204, resp.text
            alice = await api["alice"].get("/clients", params={"filter[id]": "live"})
            assert [c["id"] for c in alice.json()["data"]] == ["live"]
            renamed = server.clients.get("c0") or server.clients.get("C0") \
                or server.clients.get("node-0")
            assert renamed is not None
            renamed.name = "aaa first"
            renamed.facts = {**renamed.facts, "os": "AAA"}
            await same_answers(api, server)

            # The agent goes away; a known client is deleted.
            agent_task.cancel()
            await asyncio.gather(agent_task, return_exceptions=True)
            agent_task = None
            await until(lambda: server.clients.session("live") is None, "the agent to go")
            status = (await admin.get("/status")).json()["data"]
            assert (status["clients_connected"], status["clients_disconnected"]) == (0, KNOWN + 1)
            assert (await admin.delete(f"/clients/{renamed.id}")).status_code == 204
            status = (await admin.get("/status")).json()["data"]
            assert (status["clients_connected"], status["clients_disconnected"]) == (0, KNOWN)
            await same_answers(api, server)
        finally:
            if agent_task is not None:
                agent_task.cancel()
                await asyncio.gather(agent_task, return_exceptions=True)
            for client in api.values():
                await client.aclose()
            await server.stop()
            echo.close()

    asyncio.run(main())
