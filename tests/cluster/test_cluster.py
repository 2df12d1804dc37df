"""Three rportd nodes on one PostgreSQL and one nats-server, 30 real agents spread over them
(10 each, every one with the other two nodes as fallback servers): any node lists and reaches
every agent, and when a node is killed its agents, tunnels and jobs carry on elsewhere.

One cluster for the module (the tests run in order; the last one kills node b).
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from ..procs import Agent, Server, wait_for
from ..services import Nats, PostgreSQL
from ..targets import HashServer, recv_all

NODES = ("a", "b", "c")
PER_NODE = 10
SECRET = "cluster-test-secret-0123456789"
JWT_SECRET = "cluster-test-jwt-secret-0123456789abcdef"
FAILOVER_DEADLINE = 10.0  # the bound for agents and their tunnels to be back


class Cluster:
    def __init__(self, nodes: dict[str, Server], agents: dict[str, Agent],
                 home: dict[str, str], database_url: str, nats: Nats) -> None:
        self.nodes = nodes
        self.agents = agents
        self.home = home  # client id -> the node it connected to first
        self.database_url = database_url
        self.nats = nats

    def config(self, node: str) -> dict[str, dict[str, Any]]:
        return _node_config(node, self.database_url, self.nats)

    def of(self, node: str) -> list[str]:
        return sorted(cid for cid, n in self.home.items() if n == node)


def _node_config(name: str, database_url: str, nats: Nats) -> dict[str, dict[str, Any]]:
    return {
        "database": {"url": database_url},
        "cluster": {"nats_url": nats.url, "node_id": name, "secret": SECRET},
        "api": {"jwt_secret": JWT_SECRET},
        # distinct loopback addresses, so the answers say which node a tunnel listens on
        "server": {"tunnel_host": f"127.0.0.{NODES.index(name) + 1}", "used_ports": ["20000-29999"],
                   "keep_alive": "2s", "keep_alive_timeout": "2s"},
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgresql: PostgreSQL,
            nats: Nats) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    database_url = postgresql.create_database("cluster")
    nodes: dict[str, Server] = {}
    agents: dict[str, Agent] = {}
    try:
        for name in NODES:
            nodes[name] = Server(root / name, extra=_node_config(name, database_url, nats)).start()
        home: dict[str, str] = {}
        for name, server in nodes.items():
            others = [nodes[n].agent_url for n in NODES if n != name]
            for i in range(PER_NODE):
                client_id = f"{name}{i:02d}"
                home[client_id] = name
                agents[client_id] = Agent(root / f"agent-{client_id}", server, client_id, config={
                    "client": {"fallback_servers": others,
                               "attributes_file_path": str(root / f"attributes-{client_id}.json")},
                    "remote-commands": {"allow": [".*"], "deny": []},
                    "remote-scripts": {"enabled": True}})
        for client_id, node in home.items():
            nodes[node].wait_connected(client_id, timeout=60)
        yield Cluster(nodes, agents, home, database_url, nats)
    finally:
        for agent in agents.values():
            agent.stop()
        for server in nodes.values():
            server.stop()


def _clients(server: Server) -> dict[str, dict[str, Any]]:
    assert server.api is not None
    resp = server.api.get("/clients")
    assert resp.status_code == 200, resp.text
    return {c["id"]: c for c in resp.json()["data"]}


def test_every_node_lists_every_client(cluster: Cluster) -> None:
    for name, server in cluster.nodes.items():
        clients = wait_for(lambda s=server: (c := _clients(s)) and len(c) == 30
                           and all(x["connection_state"] == "connected" for x in c.values()) and c,
                           20, f"node {name} to list 30 connected clients")
        assert set(clients) == set(cluster.home)
        # the facts each agent sent in its hello reached every node
        assert all(c["hostname"] != "unknown" for c in clients.values())
        status = server.api.get("/status").json()["data"]
        assert (status["clients_connected"], status["clients_disconnected"]) == (30, 0)
        assert status["tunnel_host"] == f"127.0.0.{NODES.index(name) + 1}"
        assert status["cluster"]["node_id"] == name
        assert [(n["node_id"], n["tunnel_host"]) for n in status["cluster"]["nodes"]] == [
            ("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")]
    # the routes answered by the agent's node are marked in the OpenAPI document
    doc = cluster.nodes["a"].api.get("/openapi.json").json()
    marked = sorted(f"{m.upper()} {p[7:]}" for p, item in doc["paths"].items()
                    for m, op in item.items() if op.get("x-rport-agent"))
    assert marked == ["DELETE /clients/{client_id}/tunnels/{tunnel_id}",
                      "GET /clients/{client_id}/commands/{jid}/stream",
                      "POST /clients/{client_id}/commands",
                      "POST /clients/{client_id}/commands/{jid}/cancel",
                      "POST /clients/{client_id}/scripts",
                      "PUT /clients/{client_id}/attributes",
                      "PUT /clients/{client_id}/tunnels"]


def test_a_second_node_with_the_same_id_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    twin = Server(tmp_path / "twin", extra={**cluster.config("a"), "logging": {"log_level": "info"}})
    with pytest.raises(RuntimeError, match="process exited"):
        twin.start()
    assert twin.proc is not None and twin.proc.proc.returncode == 1
    assert "another live node already has node_id 'a'" in twin.log()
    assert "Traceback" not in twin.log()

def _sessions(agent: Agent) -> list[str]:
    """The agent's "connected to <url> as client <id>" log lines."""
    return [line for line in agent.log().splitlines() if " as client " in line]


def _send_file(host: str, port: int, data: bytes) -> str:
    with socket.create_connection((host, port), timeout=20) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_all(sock).decode()


def test_tunnel_through_another_node(cluster: Cluster) -> None:
    """A tunnel to an agent held by node b, opened through node a's API, listens on node b
    (whose tunnel_host the answer names) and carries a file intact."""
    a, b, c = (cluster.nodes[n] for n in NODES)
    client_id = cluster.of("b")[0]
    data = os.urandom(4 << 20)
    with HashServer() as target:
        resp = a.api.put(f"/clients/{client_id}/tunnels",
                         params={"remote": f"127.0.0.1:{target.port}"})
        assert resp.status_code == 200, resp.text
        tunnel = resp.json()["data"]
        assert tunnel["tunnel_host"] == "127.0.0.2"
        lport = int(tunnel["lport"])
        assert f"tunnel {tunnel['id']} of {client_id} opened" in b.log()
        answer = _send_file(tunnel["tunnel_host"], lport, data)
        assert answer == f"{hashlib.sha256(data).hexdigest()} {len(data)}\n"
        # every node lists it with the client, and the tunnel list of node c has it
        for server in (a, b, c):
            doc = wait_for(lambda s=server: (d := s.client(client_id)) and d["tunnels"] and d,
                           10, "the tunnel in the client's document")
            assert [t["id"] for t in doc["tunnels"]] == [tunnel["id"]]
        listed = c.api.get("/tunnels").json()["data"]
        assert [(t["client_id"], t["id"]) for t in listed] == [(client_id, tunnel["id"])]
        # the same errors as on one node: a duplicate through node c
        dup = c.api.put(f"/clients/{client_id}/tunnels", params={"remote": f"127.0.0.1:{target.port}"})
        assert dup.status_code == 400 and dup.json()["errors"][0]["code"] == "ERR_CODE_TUNNEL_EXIST"
        # a port taken by a tunnel on node b is taken for the whole cluster
        other = cluster.of("a")[0]
        clash = a.api.put(f"/clients/{other}/tunnels",
                          params={"remote": f"127.0.0.1:{target.port}", "local": str(lport)})
        assert clash.status_code in (400, 409), clash.text
        assert clash.json()["errors"][0]["code"] == "ERR_CODE_LOCAL_PORT_IN_USE"
        # and deleted through node c
        gone = c.api.delete(f"/clients/{client_id}/tunnels/{tunnel['id']}")
        assert gone.status_code == 204, gone.text
        wait_for(lambda: not a.client(client_id)["tunnels"], 10, "node a to see the tunnel gone")
        missing = a.api.delete(f"/clients/{client_id}/tunnels/{tunnel['id']}")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "ERR_CODE_TUNNEL_NOT_FOUND"


def test_single_command_and_live_output_through_another_node(cluster: Cluster) -> None:
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    client_id = cluster.of("b")[1]
    resp = c.api.post(f"/clients/{client_id}/commands",
                      json={"command": "for i in 1 2 3; do echo line$i; sleep 0.2; done"})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    # answered (by node b, through node c) once the job is committed: any node has it at once
    early = a.api.get(f"/clients/{client_id}/commands/{jid}")
    assert early.status_code == 200 and early.json()["data"]["status"] in ("running", "successful")
    # live output, followed through node a while node b holds the agent
    with a.api.stream("GET", f"/clients/{client_id}/commands/{jid}/stream", timeout=30) as sse:
        assert sse.status_code == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        text = ""
        for chunk in sse.iter_text():
            text += chunk
            if "event: status" in text:
                break
    assert "line3" in text and '"status": "successful"' in text
    job = a.api.get(f"/clients/{client_id}/commands/{jid}").json()["data"]
    assert job["status"] == "successful" and job["result"]["stdout"] == "line1\nline2\nline3\n"
    # a refusal keeps its status code and body through the forwarding
    bad = a.api.post(f"/clients/{client_id}/commands", json={"command": ""})
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "ERR_CODE_EMPTY_COMMAND"
    big = a.api.post(f"/clients/{client_id}/commands", content=b"{" + b" " * 20000 + b"}",
                     headers={"content-type": "application/json"})
    assert big.status_code == 413


def test_cancel_through_other_nodes(cluster: Cluster) -> None:
    """A job on node b's agent cancelled through node a; a sequential multi-client job run by
    node a cancelled through node c (which does not run it)."""
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    client_id = cluster.of("b")[4]
    resp = c.api.post(f"/clients/{client_id}/commands", json={"command": "sleep 30"})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    cancel = a.api.post(f"/clients/{client_id}/commands/{jid}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["data"] == {"jid": jid, "cancelled": True}
    job = wait_for(lambda: (j := c.api.get(f"/clients/{client_id}/commands/{jid}").json()["data"])
                   ["status"] != "running" and j, 20, "the job to end")
    assert job["status"] == "cancelled"
    again = a.api.post(f"/clients/{client_id}/commands/{jid}/cancel")
    assert again.status_code == 409 and again.json()["errors"][0]["code"] == "ERR_CODE_JOB_NOT_RUNNING"

    targets = [cluster.of("b")[6], cluster.of("c")[6], cluster.of("a")[6]]
    multi = a.api.post("/commands", json={"command": "sleep 30", "client_ids": targets})
    assert multi.status_code == 200, multi.text
    mjid = multi.json()["data"]["jid"]
    # (every job is listed from the start, "queued" until sent: the first one runs)
    wait_for(lambda: c.api.get(f"/commands/{mjid}").json()["data"]["jobs"][0]["pid"], 20,
             "the first job")
    stop = c.api.post(f"/commands/{mjid}/cancel")
    assert stop.status_code == 200, stop.text

    def ended() -> list[dict[str, Any]] | None:
        jobs = c.api.get(f"/commands/{mjid}").json()["data"]["jobs"]
        return jobs if len(jobs) == 3 and all(j["status"] not in ("running", "queued")
                                               for j in jobs) else None

    jobs = wait_for(ended, 20, "the multi-client job to stop")
    assert [j["status"] for j in jobs] == ["cancelled", "skipped", "skipped"], jobs

def test_command_on_30_agents_from_node_c(cluster: Cluster) -> None:
    c = cluster.nodes["c"]
    ids = sorted(cluster.home)
    resp = c.api.post("/commands", json={"command": "echo hello from $(hostname) && echo ok",
                                         "client_ids": ids, "execute_concurrently": True})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    # answered once the multi-job and a job per client are committed: node a lists them at once
    listed = cluster.nodes["a"].api.get(f"/commands/{jid}/jobs", params={"page[limit]": 1})
    assert listed.json()["meta"]["count"] == 30, listed.text

    def finished() -> list[dict[str, Any]] | None:
        jobs = c.api.get(f"/commands/{jid}").json()["data"]["jobs"]
        return jobs if len(jobs) == 30 and all(j["status"] not in ("running", "queued")
                                               for j in jobs) else None

    jobs = wait_for(finished, 60, "the 30 jobs to finish")
    assert sorted(j["client_id"] for j in jobs) == ids
    # counted and paged by PostgreSQL: none left to finish; the last two by job id
    left = c.api.get(f"/commands/{jid}/jobs", params={
        "filter[status]": "queued,running", "sort": "jid", "page[limit]": "1"})
    assert left.json() == {"data": [], "meta": {"count": 0}}, left.text
    last = c.api.get(f"/commands/{jid}/jobs", params={
        "filter[status]": "successful", "sort": "-jid", "page[limit]": "2", "fields[jobs]": "jid"})
    assert last.json() == {"data": [{"jid": j} for j in sorted(x["jid"] for x in jobs)[:-3:-1]],
                           "meta": {"count": 30}}, last.text
    assert all(j["status"] == "successful" and j["result"]["stdout"].endswith("ok\n") for j in jobs), \
        [j for j in jobs if j["status"] != "successful"]
    # a sequential one from node a: each job's result, arriving on the agent's node, lets
    # node a go on to the next client
    seq = cluster.nodes["a"].api.post("/commands", json={
        "command": "echo seq", "client_ids": [cluster.of("b")[2], cluster.of("c")[2], cluster.of("a")[2]]})
    assert seq.status_code == 200, seq.text
    seq_jid = seq.json()["data"]["jid"]
    wait_for(lambda: (j := cluster.nodes["b"].api.get(f"/commands/{seq_jid}").json()["data"]["jobs"])
             and len(j) == 3 and all(x["status"] == "successful" for x in j), 60,
             "the sequential job to finish")


def test_scripts_and_attributes_through_another_node(cluster: Cluster) -> None:
    """A script for node b's agent sent to node a runs on node b (the agent's node, where its
    live output is); a multi-client script from node c reaches agents of a and b; attributes
    set through node a are written by b's agent and seen by node c."""
    a, b, c = (cluster.nodes[n] for n in NODES)
    client_id = cluster.of("b")[7]
    script = base64.b64encode(b"echo scripted on $(hostname)\necho done").decode()
    resp = a.api.post(f"/clients/{client_id}/scripts", json={"script": script})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    job = wait_for(lambda: (j := c.api.get(f"/clients/{client_id}/commands/{jid}").json()["data"])
                   ["status"] != "running" and j, 20, "the script's job")
    assert job["status"] == "successful" and job["is_script"], job
    assert job["result"]["stdout"].endswith("done\n")
    bad = a.api.post(f"/clients/{client_id}/scripts", json={"script": "not base64!"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "ERR_CODE_INVALID_SCRIPT"

    targets = [cluster.of("a")[7], cluster.of("b")[8]]
    multi = c.api.post("/scripts", json={"script": script, "client_ids": targets,
                                         "execute_concurrently": True})
    assert multi.status_code == 200, multi.text
    mjid = multi.json()["data"]["jid"]
    jobs = wait_for(lambda: (j := a.api.get(f"/commands/{mjid}").json()["data"]["jobs"]) and len(j) == 2
                    and all(x["status"] not in ("running", "queued") for x in j) and j, 20,
                    "the multi-client script")
    assert sorted(j["client_id"] for j in jobs) == sorted(targets)
    assert all(j["status"] == "successful" and j["result"]["stdout"].endswith("done\n")
               for j in jobs), jobs

    attributes = {"tags": ["moved-by-a"], "labels": {"city": "Lille"}}
    resp = a.api.put(f"/clients/{client_id}/attributes", json=attributes)
    assert resp.status_code == 200, resp.text
    stored = cluster.nodes["a"].workdir.parent / f"attributes-{client_id}.json"
    assert __import__("json").loads(stored.read_text()) == attributes  # written by the agent
    for server in (b, c):
        wait_for(lambda s=server: s.api.get(f"/clients/{client_id}/attributes").json()["data"]
                 == attributes, 5, f"the attributes on node {server.workdir.name}")
    found = c.api.get("/clients", params={"filter[labels]": "city: Lille"}).json()["data"]
    assert [x["id"] for x in found] == [client_id]


def test_upload_through_a_node_that_does_not_hold_the_agents(cluster: Cluster) -> None:
    """A file uploaded to node a for agents held by b, c and a reaches each of them intact
    (relayed to the holders by pulls, larger than a NATS message); the agents' answers
    (ignored, refused by their policy) come back through the relay too."""
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    targets = [cluster.of("b")[9], cluster.of("c")[9], cluster.of("a")[9]]
    data = os.urandom(3 << 20)  # several relayed chunks, more than NATS's 1 MiB max_payload
    dest = cluster.nodes["a"].workdir.parent / "pushed" / "payload.bin"

    def push(path: Path, clients: list[str]) -> dict[str, dict[str, Any]]:
        form = {"dest": str(path), "client_id": clients, "md5": hashlib.md5(data).hexdigest()}
        resp = a.api.post("/files", files={"upload": ("payload.bin", data)}, data=form)
        assert resp.status_code == 200, resp.text
        uuid = resp.json()["data"]["uuid"]
        upload = wait_for(lambda: (u := c.api.get(f"/files/{uuid}").json()["data"])
                          and all(x["status"] != "pending" for x in u["clients"]) and u,
                          30, "the upload's results")
        return {x["client_id"]: x for x in upload["clients"]}

    results = push(dest, targets)
    assert all(r["status"] == "success" and r["size"] == len(data) for r in results.values()), \
        [(r["client_id"], r["status"], r.get("message"), r.get("size")) for r in results.values()]
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    # the file exists now: b's agent declines it (no data sent), through the relay
    again = push(dest, targets[:1])[targets[0]]
    assert again["status"] == "ignored", again
    # a protected folder of the agent: refused by it, its reason relayed
    refused = push(Path("/usr/bin/rport-cluster-test"), targets[:1])[targets[0]]
    assert refused["status"] == "error" and "protected" in refused["message"], refused
    for server in cluster.nodes.values():
        assert "Traceback" not in server.log()


def test_logins_bans_acls_and_groups_are_cluster_wide(cluster: Cluster) -> None:
    a, b, c = (cluster.nodes[n] for n in NODES)
    # a login token from node a is valid on node c (one jwt_secret, sessions in the database)
    token = a.api.post("/login", json={"username": "admin", "password": "foobaz"}).json()["data"]["token"]
    with httpx.Client(base_url=c.api_url + "/api/v1", timeout=10) as anon:
        me = anon.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["data"]["username"] == "admin"

    # failed logins from one address through node a ban it on node c too
    def from_5(node: Server) -> httpx.Client:
        return httpx.Client(base_url=node.api_url + "/api/v1", timeout=10,
                            transport=httpx.HTTPTransport(local_address="127.0.0.5"))

    with from_5(a) as attacker_a, from_5(c) as attacker_c:
        for _ in range(5):
            assert attacker_a.get("/status", auth=("admin", "guess")).status_code == 401
        banned = wait_for(lambda: (r := attacker_c.get("/status", auth=("admin", "foobaz")))
                          .status_code == 401 and r, 5, "the ban on node c")
        assert "too many failed logins from 127.0.0.5" in banned.json()["errors"][0]["detail"]
    assert c.api.get("/status").status_code == 200  # only that address

    # what an administrator sets on a client through node b is seen on node c
    client_id = cluster.of("a")[5]
    assert b.api.post(f"/clients/{client_id}/acl",
                      json={"allowed_user_groups": ["ops"]}).status_code == 204
    wait_for(lambda: c.client(client_id)["allowed_user_groups"] == ["ops"], 5, "the ACL on node c")

    # a client group created through node a, with members on every node, listed by node c
    created = a.api.post("/client-groups", json={"id": "tens", "params": {"client_id": ["*05"]}})
    assert created.status_code == 201, created.text
    group = wait_for(lambda: (r := c.api.get("/client-groups/tens")).status_code == 200 and r.json()["data"],
                     5, "the group on node c")
    assert group["client_ids"] == ["a05", "b05", "c05"]
    # and node c's document of a client it had already shown names the new group
    assert c.client(client_id)["id"] == "a05"
    wait_for(lambda: c.client(client_id)["groups"] == ["tens"], 5, "the group in the document")

def test_nodes_act_only_on_signed_messages(cluster: Cluster, nats: Nats) -> None:
    """Whoever else reaches the NATS subjects cannot make a node act: a request signed with
    another secret gets no answer (and is logged), one signed with the cluster's is served."""
    import asyncio

    import nats as nats_py

    from rport.core.cluster.wire import pack, signing_key, unpack

    async def ask(secret: str) -> dict[str, Any] | None:
        nc = await nats_py.connect(nats.url)
        try:
            msg = await nc.request("rport.node.a.ping", pack(signing_key(secret), {"from": "x"}),
                                   timeout=2)
            return unpack(signing_key(secret), msg.data)[0]
        except nats_py.errors.TimeoutError:
            return None
        finally:
            await nc.close()

    assert asyncio.run(ask("not the cluster's secret")) is None
    wait_for(lambda: "dropped a request on rport.node.a.ping: bad signature" in cluster.nodes["a"].log(),
             5, "the forged request in node a's log")
    assert asyncio.run(ask(SECRET)) == {"node": "a"}

def test_kill_node_b(cluster: Cluster) -> None:
    """kill -9 node b: its agents come back on a and c with their tunnels (in less than 10 s)
    and the job that ran on one of them keeps its result."""
    a, b, c = (cluster.nodes[n] for n in NODES)
    moved = cluster.of("b")
    with HashServer() as target:
        tunnels = {}
        for client_id in moved[:3]:
            resp = c.api.put(f"/clients/{client_id}/tunnels", params={"remote": f"127.0.0.1:{target.port}"})
            assert resp.status_code == 200, resp.text
            tunnels[client_id] = resp.json()["data"]
        slow = c.api.post(f"/clients/{moved[3]}/commands", json={"command": "sleep 2; echo survived"})
        assert slow.status_code == 200, slow.text
        slow_jid = slow.json()["data"]["jid"]
        wait_for(lambda: f"job {slow_jid} started" in cluster.agents[moved[3]].log(), 10,
                 "the agent to start the job")
        # a sequence that node b runs, on agents of node a: it must go on once b is gone
        steps = cluster.of("a")[:3]
        run = b.api.post("/commands", json={"command": "sleep 2; echo step", "client_ids": steps,
                                            "execute_concurrently": False})
        assert run.status_code == 200, run.text
        sequence = run.json()["data"]["jid"]
        first = wait_for(lambda: b.api.get(f"/commands/{sequence}").json()["data"]["jobs"][0]["jid"],
                         10, "the sequence's jobs")
        wait_for(lambda: f"job {first} started" in cluster.agents[steps[0]].log(), 10,
                 "the sequence's first job to start")

        assert b.proc is not None
        b.proc.proc.send_signal(signal.SIGKILL)
        b.proc.proc.wait()
        killed = time.monotonic()

        b_url = f"wss://{b.agent_url}/"
        before = {cid: len(_sessions(cluster.agents[cid])) for cid in moved}

        def back() -> dict[str, dict[str, Any]] | None:
            # each agent connected again, to another node, and node a sees it connected there
            # with its tunnels listening there
            for cid in moved:
                sessions = _sessions(cluster.agents[cid])
                if len(sessions) <= before[cid] or b_url in sessions[-1]:
                    return None
            clients = _clients(a)
            if not all(clients[cid]["connection_state"] == "connected" for cid in moved):
                return None
            if not all(clients[cid]["tunnels"] and clients[cid]["tunnels"][0]["tunnel_host"] != "127.0.0.2"
                       for cid in tunnels):
                return None
            return clients

        clients = wait_for(back, FAILOVER_DEADLINE, "node b's agents and tunnels on a and c")
        took = time.monotonic() - killed
        print(f"node b's {len(moved)} agents and {len(tunnels)} tunnels back after {took:.1f}s")
        data = os.urandom(1 << 20)
        for client_id, old in tunnels.items():
            (new,) = clients[client_id]["tunnels"]
            # the same tunnel, on the same (cluster-wide) port, listening on the new node
            assert (new["id"], new["lport"], new["rhost"], new["rport"]) == \
                (old["id"], old["lport"], old["rhost"], old["rport"])
            assert new["tunnel_host"] in ("127.0.0.1", "127.0.0.3")
            answer = _send_file(new["tunnel_host"], int(new["lport"]), data)
            assert answer == f"{hashlib.sha256(data).hexdigest()} {len(data)}\n"
        # the job that ran while its node died: its result was delivered to the new node
        job = wait_for(lambda: (j := c.api.get(f"/clients/{moved[3]}/commands/{slow_jid}").json()["data"])
                       and j["status"] != "running" and j, 20, "the job's result")
        assert job["status"] == "successful" and job["result"]["stdout"] == "survived\n"
        # every earlier job of node b's agents kept its final status (one was cancelled)
        for client_id in moved:
            jobs = a.api.get(f"/clients/{client_id}/commands", params={"fields[jobs]": "jid,status"})
            assert all(j["status"] in ("successful", "cancelled") for j in jobs.json()["data"]), jobs.text
        # node b's sequence went on on another node: every step ran, once
        jobs = wait_for(lambda: (js := a.api.get(f"/commands/{sequence}").json()["data"]["jobs"])
                        and all(j["status"] not in ("queued", "running") for j in js) and js,
                        30, "node b's sequence to end on another node")
        assert [(j["client_id"], j["status"], j["result"]["stdout"]) for j in jobs] == \
            [(cid, "successful", "step\n") for cid in steps], jobs
        assert sum(f"multi-job {sequence} goes on here: its node b is gone" in n.log()
                   for n in (a, c)) == 1
        # and every node still lists all 30, connected
        for server in (a, c):
            listed = _clients(server)
            assert len(listed) == 30 and all(x["connection_state"] == "connected" for x in listed.values())

