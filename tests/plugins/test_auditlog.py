"""End to end: the audit log (plugin auditlog) with a real rportd, a real agent and a real target.
Actions through the API (tunnels, commands, client groups, the client ACL, API tokens, agent
credentials, logins, users and user groups, scripts, the library, schedules and their runs, file
uploads, client attributes) are recorded under RPort's application and action names with the
caller, their address, the client and the affected id; ``GET /auditlog`` filters, sorts and
pages as RPort's; it needs the ``auditlog`` permission, and non-administrators see only their own
entries; entries survive a restart and are rotated out (archived or deleted) by age and count.

Entries are written shortly after the API answers (the writer is a subscriber of the event
bus): tests poll ``GET /auditlog`` until they appear, never sleep.
"""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..procs import Agent, Server, running, wait_for
from ..services import both_databases
from ..targets import EchoServer, connect, recv_exactly

CLIENT = "audit1"
USERS = [
    {"username": "admin", "password": "foobaz", "groups": ["Administrators"]},
    {"username": "alice", "password": "alice-pass", "groups": ["Ops"]},
]
FIELDS = ["timestamp", "username", "remote_ip", "application", "action", "affected_id",
          "client_id", "client_hostname", "request", "response"]
OPEN_COMMANDS = {"allow": [".*"], "deny": []}
DB_USERS = {"auth": "", "auth_user_table": "users", "auth_group_table": "groups",
            "auth_group_details_table": "group_details"}


def entries(api: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], int]:
    resp = api.get("/auditlog", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["data"], body["meta"]["count"]


def entry(api: httpx.Client, application: str, action: str, **filters: str) -> dict[str, Any]:
    """The newest entry of application/action (and filters), once it is written."""
    params = {"filter[application]": application, "filter[action]": action,
              **{f"filter[{k}]": v for k, v in filters.items()}, "sort": "-timestamp"}
    rows = wait_for(lambda: entries(api, **params)[0], what=f"audit entry {application} {action}")
    assert list(rows[0]) == FIELDS, rows[0]
    return rows[0]


def assert_error(resp: httpx.Response, status: int, title: str) -> dict[str, str]:
    assert resp.status_code == status, resp.text
    errors = resp.json()["errors"]
    assert title in [e["title"] for e in errors], errors
    return next(e for e in errors if e["title"] == title)


class Site:
    def __init__(self, server: Server, echo: EchoServer, hostname: str, root: Path) -> None:
        self.server = server
        self.root = root
        assert server.api is not None
        self.api = server.api
        self.echo = echo
        self.hostname = hostname


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server whose API users are in the database with group permissions (admin and alice
    of USERS, imported at start; alice's group Ops has no permission until a test grants it)
    with one agent that may run any command and scripts, with an attributes file, and an echo
    target."""
    root: Path = tmp_path_factory.mktemp("auditlog")
    users, agents = root / "api-users.json", root / "agents.json"
    users.write_text(json.dumps(USERS))
    agents.write_text(json.dumps({"user1": "1234"}))  # a file: agent credentials are writable
    server = Server(root / "server", extra={
        "server": {"auth": "", "auth_file": str(agents)}, "api": DB_USERS,
        "plugins": {"users": {"import_auth_file": str(users)}}}).start()
    agent = Agent(root / "agent", server, CLIENT, config={
        "remote-commands": OPEN_COMMANDS, "remote-scripts": {"enabled": True},
        "client": {"attributes_file_path": str(root / "attributes.json")}})
    with EchoServer() as echo, running(server, [agent]):
        hostname = server.client(CLIENT)["hostname"]
        yield Site(server, echo, hostname, root)


def test_api_actions_are_recorded_with_who_where_and_what(site: Site) -> None:
    api = site.api
    # a tunnel, used, then deleted
    resp = api.put(f"/clients/{CLIENT}/tunnels",
                   params={"remote": f"127.0.0.1:{site.echo.port}", "name": "audited"})
    assert resp.status_code == 200, resp.text
    tunnel = resp.json()["data"]
    with connect(int(tunnel["lport"])) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
    created = entry(api, "client.tunnel", "create", affected_id=tunnel["id"])
    assert (created["username"], created["remote_ip"], created["client_id"]) == \
        ("admin", "127.0.0.1", CLIENT)
    assert created["client_hostname"] == site.hostname
    assert json.loads(created["request"]) == {"remote": f"127.0.0.1:{site.echo.port}",
                                              "name": "audited"}
    assert json.loads(created["response"]) == tunnel
    assert created["timestamp"].endswith("Z")
    resp = api.delete(f"/clients/{CLIENT}/tunnels/{tunnel['id']}", params={"force": "1"})
    assert resp.status_code == 204, resp.text
    deleted = entry(api, "client.tunnel", "delete", affected_id=tunnel["id"])
    assert (deleted["client_id"], json.loads(deleted["request"])) == (CLIENT, {"force": "1"})

    # a command: its start (by the API) and its end (the agent's result), same job id
    resp = api.post(f"/clients/{CLIENT}/commands", json={"command": "/bin/echo audited"})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    start = entry(api, "client.command", "execute.start", affected_id=jid)
    assert json.loads(start["request"])["command"] == "/bin/echo audited"
    assert json.loads(start["response"]) == {"jid": jid}
    assert start["client_id"] == CLIENT
    done = entry(api, "client.command", "execute.done", affected_id=jid)
    job = json.loads(done["response"])
    assert (job["status"], job["result"]["stdout"]) == ("successful", "audited\n")
    assert (done["username"], done["client_id"]) == ("admin", CLIENT)

    # a client group, created, replaced, deleted; the client's ACL
    group = {"id": "audited-group", "params": {"client_id": [CLIENT]}}
    assert api.post("/client-groups", json=group).status_code == 201
    assert json.loads(entry(api, "client.group", "create",
                            affected_id="audited-group")["request"]) == group
    assert api.put("/client-groups/audited-group", json=group).status_code == 204
    entry(api, "client.group", "update", affected_id="audited-group")
    assert api.delete("/client-groups/audited-group").status_code == 204
    entry(api, "client.group", "delete", affected_id="audited-group")
    assert api.post(f"/clients/{CLIENT}/acl", json={"allowed_user_groups": ["Ops"]}).status_code == 204
    acl = entry(api, "client.acl", "update", affected_id=CLIENT)
    assert (acl["client_id"], json.loads(acl["request"])) == (CLIENT, {"allowed_user_groups": ["Ops"]})

    # secrets are never recorded: an agent credential's password, an API token's value
    resp = api.post("/clients-auth", json={"id": "audited-auth", "password": "s3cret-pass-word"})
    assert resp.status_code == 201, resp.text
    auth = entry(api, "client.auth", "create", affected_id="audited-auth")
    assert json.loads(auth["request"]) == {"id": "audited-auth", "password": "<redacted>"}
    resp = api.post("/me/tokens", json={"scope": "read", "name": "audited-token"})
    assert resp.status_code == 200, resp.text
    token = resp.json()["data"]
    made = entry(api, "auth.user.me.token", "create", affected_id=token["prefix"])
    assert token["token"] not in json.dumps(made) and made["response"] == ""
    everything = api.get("/auditlog", params={"page[limit]": 100}).text
    assert "s3cret-pass-word" not in everything and token["token"] not in everything

    # a request refused is no action: nothing recorded
    before = entries(api, **{"filter[application]": "client.tunnel"})[1]
    resp = api.put(f"/clients/{CLIENT}/tunnels", params={"remote": "bad"})
    assert resp.status_code == 400
    assert entries(api, **{"filter[application]": "client.tunnel"})[1] == before


def test_logins_are_recorded_and_failures_too(site: Site) -> None:
    base = site.server.api_url + "/api/v1"
    with httpx.Client(base_url=base, timeout=10) as anonymous:
        assert anonymous.get("/login", auth=("alice", "alice-pass")).status_code == 200
        assert anonymous.post("/login", json={"username": "alice",
                                               "password": "wrong"}).status_code == 401
    ok = entry(site.api, "auth.api.session", "create", username="alice")
    failed = entry(site.api, "auth.api.session", "failed", username="alice")
    for row in (ok, failed):
        assert (row["affected_id"], row["remote_ip"], row["request"]) == ("alice", "127.0.0.1", "")
    assert "wrong" not in json.dumps(failed)


def test_users_scripts_library_schedules_uploads_and_attributes(site: Site) -> None:
    """The state-changing routes of the users, scripts, library, scheduler and uploads plugins
    and client attributes, and the runs of a schedule, under RPort's names
    (server/auditlog/constants.go; "user" for a deleted user is RPort's own)."""
    api = site.api
    # users and user groups (a password is never recorded)
    resp = api.post("/users", json={"username": "carol", "password": "carol-password",
                                    "groups": ["Ops"]})
    assert resp.status_code == 201, resp.text
    assert json.loads(entry(api, "auth.user", "create", affected_id="carol")["request"]) == {
        "username": "carol", "password": "<redacted>", "groups": ["Ops"]}
    assert api.put("/users/carol", json={"groups": ["Dev"]}).status_code == 204
    entry(api, "auth.user", "update", affected_id="carol")
    assert api.put("/user-groups/Dev", json={"permissions": {"scripts": True}}).status_code == 200
    group = entry(api, "auth.user.group", "update", affected_id="Dev")
    assert json.loads(group["request"]) == {"permissions": {"scripts": True}}
    assert api.delete("/user-groups/Dev").status_code == 204
    entry(api, "auth.user.group", "delete", affected_id="Dev")
    assert api.delete("/users/carol").status_code == 204
    assert entry(api, "user", "delete", affected_id="carol")["username"] == "admin"
    assert api.delete("/users/alice/sessions").status_code == 204
    entry(api, "auth.api.sessions", "delete", affected_id="alice")
    assert api.put("/me", json={"two_fa_send_to": "admin@example.com"}).status_code == 204
    entry(api, "auth.user.me", "update", affected_id="admin")

    # a script on the client and on clients: started by the API, ended by the agent's result
    script = base64.b64encode(b"echo scripted").decode()
    resp = api.post(f"/clients/{CLIENT}/scripts", json={"script": script})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    start = entry(api, "client.script", "execute.start", affected_id=jid)
    assert (start["client_id"], json.loads(start["response"])) == (CLIENT, {"jid": jid})
    assert json.loads(start["request"])["script"] == script
    done = entry(api, "client.script", "execute.done", affected_id=jid)
    assert json.loads(done["response"])["result"]["stdout"] == "scripted\n"
    resp = api.post("/scripts", json={"script": script, "client_ids": [CLIENT]})
    assert resp.status_code == 200, resp.text
    multi = entry(api, "client.script", "execute.start", affected_id=resp.json()["data"]["jid"])
    assert multi["client_id"] == CLIENT and multi["client_hostname"] == site.hostname

    # the library
    resp = api.post("/library/commands", json={"name": "audited", "cmd": "/usr/bin/true"})
    assert resp.status_code == 201, resp.text
    stored = resp.json()["data"]
    created = entry(api, "library.command", "create", affected_id=stored["id"])
    assert json.loads(created["response"]) == stored
    assert api.put(f"/library/commands/{stored['id']}",
                   json={"name": "audited", "cmd": "/usr/bin/false"}).status_code == 200
    entry(api, "library.command", "update", affected_id=stored["id"])
    assert api.delete(f"/library/commands/{stored['id']}").status_code == 204
    entry(api, "library.command", "delete", affected_id=stored["id"])
    resp = api.post("/library/scripts", json={"name": "audited", "script": "pwd"})
    assert resp.status_code == 201, resp.text
    entry(api, "library.script", "create", affected_id=resp.json()["data"]["id"])

    # a schedule: created (an entry per client), its runs recorded as the API records a
    # multi-client job it starts (for the schedule's creator, naming the schedule), replaced
    # and deleted
    resp = api.post("/schedules", json={"name": "audited", "schedule": "@every 1s",
                                        "type": "command", "command": "/bin/echo scheduled",
                                        "client_ids": [CLIENT]})
    assert resp.status_code == 201, resp.text
    sid = resp.json()["data"]["id"]
    assert entry(api, "schedule", "create", affected_id=sid)["client_id"] == CLIENT
    run = wait_for(lambda: [r for r in api.get("/commands").json()["data"]
                            if r["schedule_id"] == sid], what="a run of the schedule")[-1]
    started = entry(api, "client.command", "execute.start", affected_id=run["jid"])
    assert (started["username"], started["remote_ip"], started["client_id"]) == ("admin", "", CLIENT)
    assert json.loads(started["request"])["schedule_id"] == sid
    assert json.loads(entry(api, "client.command", "execute.done",
                            affected_id=run["jid"])["response"])["schedule_id"] == sid
    resp = api.put(f"/schedules/{sid}", json={"name": "audited", "schedule": "@every 1h",
                                              "type": "command", "command": "/bin/echo later",
                                              "client_ids": [CLIENT]})
    assert resp.status_code == 200, resp.text
    assert entry(api, "schedule", "update", affected_id=sid)["client_id"] == CLIENT
    assert api.delete(f"/schedules/{sid}").status_code == 204
    entry(api, "schedule", "delete", affected_id=sid)

    # a file upload: received (the upload's fields), then each client's result
    dest = site.root / "pushed.txt"
    resp = api.post("/files", files={"upload": ("pushed.txt", b"audited")},
                    data={"dest": str(dest), "client_id": CLIENT, "mode": "0640"})
    assert resp.status_code == 200, resp.text
    upload = resp.json()["data"]
    received = entry(api, "uploads", "create", affected_id=upload["uuid"])
    assert (received["client_id"], json.loads(received["response"])) == (CLIENT, upload)
    assert json.loads(received["request"])["filepath"] == str(dest)
    assert json.loads(received["request"])["mode"] == 0o640
    result = json.loads(entry(api, "uploads", "success", affected_id=upload["uuid"])["response"])
    assert (result["status"], result["client_id"]) == ("success", CLIENT)
    assert dest.read_bytes() == b"audited"

    # client attributes (written by the agent)
    attributes = {"tags": ["audited"], "labels": {"city": "Lille"}}
    assert api.put(f"/clients/{CLIENT}/attributes", json=attributes).status_code == 200
    changed = entry(api, "client.attributes", "update", affected_id=CLIENT)
    assert (changed["client_id"], json.loads(changed["request"])) == (CLIENT, attributes)


def test_filters_sort_and_paging(site: Site) -> None:
    api = site.api
    for n in range(12):
        group = {"id": f"paged-{n:02d}", "params": {"client_id": [CLIENT]}}
        assert api.post("/client-groups", json=group).status_code == 201
    wait_for(lambda: entries(api, **{"filter[affected_id]": "paged-*"})[1] == 12,
             what="12 entries")
    # RPort's default page: 10 entries, meta.count all that match; oldest first without sort
    rows, count = entries(api, **{"filter[affected_id]": "paged-*"})
    assert count == 12 and [r["affected_id"] for r in rows] == [f"paged-{n:02d}" for n in range(10)]
    rows, _ = entries(api, **{"filter[affected_id]": "paged-*", "sort": "-timestamp",
                              "page[limit]": "5", "page[offset]": "2"})
    assert [r["affected_id"] for r in rows] == [f"paged-{n:02d}" for n in (9, 8, 7, 6, 5)]
    rows, _ = entries(api, **{"filter[affected_id]": "paged-*", "sort": "-affected_id",
                              "page[limit]": "2"})
    assert [r["affected_id"] for r in rows] == ["paged-11", "paged-10"]
    # values: a list (or), and(...), wildcards (case-insensitive), several filters (and)
    rows, count = entries(api, **{"filter[affected_id]": "paged-01,paged-03"})
    assert count == 2 and {r["affected_id"] for r in rows} == {"paged-01", "paged-03"}
    assert entries(api, **{"filter[affected_id]": "PAGED-0*", "filter[username]": "admin",
                           "filter[application|action]": "client.group"})[1] == 10
    assert entries(api, **{"filter[affected_id]": "and(paged-*,*-11)"})[1] == 1
    assert entries(api, **{"filter[affected_id]": "PAGED-01"})[1] == 0  # plain: exact, as RPort
    # time ranges
    rows, _ = entries(api, **{"filter[affected_id]": "paged-*", "sort": "timestamp",
                              "page[limit]": "12"})
    middle = rows[6]["timestamp"]
    assert entries(api, **{"filter[affected_id]": "paged-*",
                           "filter[timestamp][since]": middle})[1] == 6
    assert entries(api, **{"filter[affected_id]": "paged-*",
                           "filter[timestamp][lt]": middle})[1] == 6
    assert entries(api, **{"filter[affected_id]": "paged-*",
                           "filter[timestamp][gt]": "2000-01-01",
                           "filter[timestamp][until]": "2999-12-31T00:00:00+02:00"})[1] == 12
    assert entries(api, **{"filter[timestamp][lt]": "2000-01-01"})[1] == 0
    # fields
    rows, _ = entries(api, **{"filter[affected_id]": "paged-00",
                              "fields[auditlog]": "action,affected_id"})
    assert rows == [{"action": "create", "affected_id": "paged-00"}]
    # RPort's errors, all of them in one 400
    resp = api.get("/auditlog", params={"sort": "request", "page[limit]": "101",
                                        "filter[nope]": "x"})
    assert_error(resp, 400, "unsupported sort field 'request'")
    assert_error(resp, 400, "pagination limit too big (101) maximum is 100")
    assert_error(resp, 400, "unsupported filter field 'filter[nope]'")
    assert_error(api.get("/auditlog", params={"filter[timestamp][after]": "2021-01-01"}), 400,
                 "unsupported filter field 'filter[timestamp][after]'")
    item = assert_error(api.get("/auditlog", params={"filter[timestamp][gt]": "yesterday"}),
                        400, "invalid time 'yesterday' in 'filter[timestamp][gt]': use a date "
                             "(2021-10-28) or an RFC 3339 time (2021-10-28T10:00:00Z)")
    assert item["code"] == "ERR_CODE_BAD_QUERY_PARAM"
    assert_error(api.get("/auditlog", params={"filter[timestamp]": "2021-01-01"}), 400,
                 "unsupported filter field 'filter[timestamp]'")


def test_non_administrators_need_the_permission_and_see_only_their_own_entries(site: Site) -> None:
    with httpx.Client(base_url=site.server.api_url + "/api/v1", auth=("alice", "alice-pass"),
                      timeout=10) as alice:
        resp = alice.post("/me/tokens", json={"scope": "read", "name": "alice-token"})
        assert resp.status_code == 200, resp.text
        # RPort's "auditlog" permission: refused until one of her groups grants it
        item = assert_error(alice.get("/auditlog"), 403, 'user does not have "auditlog" permission')
        assert item["code"] == "ERR_CODE_PERMISSION_DENIED"
        resp = site.api.put("/user-groups/Ops", json={"permissions": {"auditlog": True}})
        assert resp.status_code == 200, resp.text
        mine = wait_for(lambda: entries(alice, **{"filter[action]": "create",
                                                  "filter[application]": "auth.user.me.token"})[0],
                        what="alice's entry")
        assert {r["username"] for r in mine} == {"alice"}
        everything, count = entries(alice, **{"page[limit]": "100"})
        assert count == len(everything) and {r["username"] for r in everything} == {"alice"}
        item = assert_error(alice.get("/auditlog", params={"filter[username]": "admin"}), 403,
                            "filter forbidden")
        assert item["detail"] == "only members of group Administrators can filter by usernames"
        assert_error(alice.get("/auditlog", params={"filter[username|action]": "x"}), 403,
                     "filter forbidden")
        # filter[*] names no column: allowed, and still only alice's entries
        rows, _ = entries(alice, **{"filter[*]": "auth.user.me.token", "page[limit]": "100"})
        assert rows and {r["username"] for r in rows} == {"alice"}
    # the administrator sees everybody's
    assert {"admin", "alice"} <= {r["username"] for r in entries(site.api, **{"page[limit]": "100"})[0]}


def test_status_and_openapi_describe_it(site: Site) -> None:
    status = site.api.get("/status").json()["data"]
    assert status["auditlog"] == {"enabled": True, "rotation": "monthly"}
    doc = site.api.get("/openapi.json").json()
    op = doc["paths"]["/api/v1/auditlog"]["get"]
    assert op["x-rport-permission"] == "auditlog"
    assert {"200", "400", "401", "403"} <= set(op["responses"])
    assert doc["paths"]["/api/v1/clients/{client_id}/tunnels"]["put"]["x-rport-audit"] == {
        "application": "client.tunnel", "action": "create"}


# -- persistence and rotation (own servers) ---------------------------------------------------


def _old_entries(db: Path, count: int, age: float) -> None:
    """Rows written by an earlier rportd ``age`` seconds ago (straight into its SQLite store,
    while it is stopped)."""
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO auditlog (timestamp, username, remote_ip, application, action, "
            "affected_id, client_id, client_hostname, request, response) "
            "VALUES (?, 'old', '192.0.2.1', 'client.group', 'create', ?, '', '', '', '')",
            [(time.time() - age + n, f"old-{n}") for n in range(count)])


@both_databases
def test_entries_survive_a_restart_and_are_rotated_out_by_count(make_server: Any) -> None:
    server = make_server(extra={"plugins": {"auditlog": {"max_entries": 5,
                                                         "check_interval": "1s"}}})
    api = server.api
    for n in range(3):
        assert api.post("/client-groups", json={"id": f"kept-{n}", "params": {}}).status_code == 201
    wait_for(lambda: entries(api, **{"filter[affected_id]": "kept-*"})[1] == 3, what="3 entries")
    server.stop()
    server.start()
    api = server.api
    rows, count = entries(api, **{"filter[affected_id]": "kept-*"})
    assert count == 3 and [r["affected_id"] for r in rows] == ["kept-0", "kept-1", "kept-2"]
    # past max_entries the oldest leave the table, into the archive of their month
    for n in range(4):
        assert api.post("/client-groups", json={"id": f"more-{n}", "params": {}}).status_code == 201
    wait_for(lambda: entries(api, **{"filter[affected_id]": "more-*"})[1] == 4, what="4 entries")
    wait_for(lambda: entries(api)[1] == 5, what="rotation down to 5 entries")
    assert [r["affected_id"] for r in entries(api)[0]] == ["kept-2", "more-0", "more-1",
                                                            "more-2", "more-3"]
    archives = sorted((server.data_dir / "auditlog").glob("auditlog-*.jsonl.gz"))
    assert [p.name for p in archives] == [f"auditlog-{time.strftime('%Y-%m', time.gmtime())}.jsonl.gz"]
    archived = [json.loads(line) for line in gzip.open(archives[0], "rt")]
    assert [a["affected_id"] for a in archived] == ["kept-0", "kept-1"]
    assert list(archived[0]) == FIELDS and archived[0]["username"] == "admin"
    assert (archives[0].stat().st_mode & 0o777) == 0o600
    assert "entries archived" in server.log()


def test_old_entries_are_rotated_out_by_age_at_start_up(make_server: Any) -> None:
    """Daily rotation: entries of two and three days ago leave at start-up (deleted, without
    archive; the archives of other runs beyond keep_archives go too)."""
    server = make_server(extra={"api": {"audit_log_rotation": "daily"},
                                "plugins": {"auditlog": {"archive": False}}})
    server.stop()
    _old_entries(server.data_dir / "rportd.db", 2, 3 * 86400)
    _old_entries(server.data_dir / "rportd.db", 2, 2 * 86400)
    _old_entries(server.data_dir / "rportd.db", 1, 3600)  # an hour ago: stays
    server.start()
    api = server.api
    wait_for(lambda: entries(api)[1] == 1, what="old entries rotated out")
    assert entries(api)[0][0]["affected_id"] == "old-0" and entries(api)[0][0]["remote_ip"] == "192.0.2.1"
    assert not (server.data_dir / "auditlog").exists()
    assert "4 entries deleted" in server.log()
    assert api.get("/status").json()["data"]["auditlog"] == {"enabled": True, "rotation": "daily"}


def test_disabled_audit_log_records_nothing_and_has_no_route(make_server: Any) -> None:
    server = make_server(extra={"api": {"enable_audit_log": False, "use_ip_obfuscation": True}})
    api = server.api
    assert api.post("/client-groups", json={"id": "unseen", "params": {}}).status_code == 201
    resp = api.get("/auditlog")
    assert resp.status_code == 404 and resp.json()["errors"][0]["title"] == "not found"
    assert api.get("/status").json()["data"]["auditlog"] == {"enabled": False, "rotation": "monthly"}


def test_ip_obfuscation_and_bad_settings(make_server: Any) -> None:
    server = make_server(extra={"api": {"use_ip_obfuscation": True}})
    assert server.api.post("/client-groups", json={"id": "hidden-ip", "params": {}}).status_code == 201
    assert entry(server.api, "client.group", "create")["remote_ip"] == "127.0.0.x"
    server.stop()
    server.config["api"]["audit_log_rotation"] = "hourly"
    server.config["plugins"] = {"auditlog": {"max_entries": 0}}
    with pytest.raises(RuntimeError, match="api.audit_log_rotation: must be one of daily, "
                                           "weekly, monthly, yearly, not 'hourly'"):
        server.start()
    server.config["api"]["audit_log_rotation"] = "weekly"
    with pytest.raises(RuntimeError, match="plugins.auditlog.max_entries: must be at least 1"):
        server.start()
    server.config["plugins"] = {"auditlog": {"max_value_items": 0}}
    with pytest.raises(RuntimeError, match="plugins.auditlog.max_value_items: must be at least 1"):
        server.start()
    # Long lists keep their first items (a command for 10,000 clients is an entry per client,
    # each holding the request and its list of ids).
    server.config["plugins"] = {"auditlog": {"max_value_items": 2}}
    server.start()
    ids = [f"web-{n}" for n in range(5)]
    assert server.api.post("/client-groups", json={
        "id": "long-list", "params": {"client_id": ids}}).status_code == 201
    recorded = json.loads(entry(server.api, "client.group", "create", affected_id="long-list")["request"])
    assert recorded["params"]["client_id"] == ["web-0", "web-1", "... [3 more items]"]
