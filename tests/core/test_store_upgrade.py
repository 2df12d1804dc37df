"""Upgrade in place: a ``rportd.db`` made by rportd 0.1 (no migration history; see
tests/fixtures/rportd-0.1/README.md) is adopted by the current rportd with nothing lost, checked
through the API with real agents."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any, Callable

import httpx

from ..procs import Agent, Server, wait_for

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "rportd-0.1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
HEADS = {"core": "0001", "tunnels": "0002", "commands": "0003", "targeting": "0001",
         "auth_jwt": "0002", "users": "0002", "auditlog": "0001",
         "library": "0001", "scheduler": "0001", "uploads": "0001"}
TUNNEL_KEYS = ("id", "rhost", "rport", "lhost", "lport_random", "acl", "idle_timeout_minutes",
               "name", "scheme", "owner", "auto_close", "http_proxy")


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()["data"] if resp.content else None


def versions(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'alembic_version_%'")]
        return {t.removeprefix("alembic_version_"): conn.execute(f"SELECT version_num FROM {t}").fetchone()[0]
                for t in tables}


def test_a_database_of_rportd_0_1_is_upgraded_with_nothing_lost(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    server = make_server("upgraded", start=False, extra=EXPECTED["config"])
    server.data_dir.mkdir(parents=True)
    db = server.data_dir / "rportd.db"
    shutil.copyfile(FIXTURE / "rportd.db", db)
    server.start()
    api = server.api
    assert api is not None
    log = server.log()
    assert "a database of rportd 0.1" in log and "adopting its tables" in log, log
    assert "tables of plugin 'commands' migrated from nothing to 0003" in log
    backups = list(server.data_dir.glob("rportd.db.before-migration-*"))
    assert len(backups) == 1 and versions(backups[0]) == {}  # the copy is the untouched 0.1 file
    assert versions(db) == HEADS

    # Clients: both known, disconnected since when they were, with their records.
    for cid, before in EXPECTED["clients"].items():
        after = ok(api.get(f"/clients/{cid}"))
        assert after == before, cid
    assert sorted(c["id"] for c in ok(api.get("/clients"))) == ["fx-db", "fx-web"]

    # Client groups, agent credentials, the login session (its token), the API token.
    groups = [{k: g[k] for k in ("id", "description", "params", "allowed_user_groups")}
              for g in ok(api.get("/client-groups"))]
    assert sorted(groups, key=lambda g: g["id"]) == sorted(EXPECTED["client_groups"], key=lambda g: g["id"])
    assert ok(api.get("/client-groups/linux"))["client_ids"] == ["fx-web"]
    assert ok(api.get("/clients-auth")) == EXPECTED["clients_auth"]
    bearer = {"Authorization": f"Bearer {EXPECTED['session_token']}"}
    with httpx.Client(base_url=server.api_url + "/api/v1", timeout=10) as anonymous:
        assert ok(anonymous.get("/me", headers=bearer))["username"] == "admin"
        token = EXPECTED["api_token"]["token"]
        assert ok(anonymous.get("/status", auth=("admin", token)))["version"]
    assert [t["prefix"] for t in ok(api.get("/me/tokens"))] == [t["prefix"] for t in EXPECTED["api_tokens"]]

    # Jobs and multi-jobs, as the API showed them before, children in their order.
    for job in EXPECTED["jobs"]:
        assert ok(api.get(f"/clients/fx-web/commands/{job['jid']}")) == job
    assert {j["jid"] for j in ok(api.get("/clients/fx-web/commands"))} >= {j["jid"] for j in EXPECTED["jobs"]}
    for multi in EXPECTED["multi_jobs"]:
        assert ok(api.get(f"/commands/{multi['jid']}")) == multi
    assert [j["status"] for j in EXPECTED["multi_jobs"][1]["jobs"]] == ["failed", "skipped"]

    # The agent reconnects with its credential from the store; its kept tunnels come back (not
    # the deleted one), each listening again.
    agent = make_agent(server, "fx-web", auth=EXPECTED["agent_auth"]["fx-web"],
                       config={"remote-commands": {"allow": [".*"], "deny": []}})
    restored = wait_for(lambda: (t := ok(api.get("/clients/fx-web"))["tunnels"])
                        and len(t) == len(EXPECTED["tunnels"]) and t, what="the tunnels to come back")
    assert [{k: t[k] for k in TUNNEL_KEYS} for t in restored] == [
        {k: t[k] for k in TUNNEL_KEYS} for t in EXPECTED["tunnels"]]
    assert EXPECTED["deleted_tunnel"] not in {t["id"] for t in restored}
    for tunnel in restored:
        with socket.create_connection(("127.0.0.1", int(tunnel["lport"])), timeout=5):
            pass

    # It works on: a new job is stored next to the old ones, and a restart migrates nothing.
    job = ok(api.post("/clients/fx-web/commands", json={"command": "echo after the upgrade"}))
    done = wait_for(lambda: (j := ok(api.get(f"/clients/fx-web/commands/{job['jid']}")))
                    and j["status"] == "successful" and j, what="the new job")
    assert done["result"]["stdout"] == "after the upgrade\n"
    agent.stop()
    server.stop()
    server.start()
    second = (server.workdir / "rportd-2.log").read_text()
    assert "migrated" not in second and "adopting" not in second, second
    assert len(list(server.data_dir.glob("rportd.db.before-migration-*"))) == 1
    old = [j["jid"] for j in EXPECTED["jobs"]] + [
        j["jid"] for m in EXPECTED["multi_jobs"] for j in m["jobs"] if j["client_id"] == "fx-web"]
    listed = [j["jid"] for j in ok(server.api.get("/clients/fx-web/commands"))]
    assert sorted(listed) == sorted([*old, job["jid"]]) and listed[0] == job["jid"]  # newest first
    assert "Traceback" not in server.log()
