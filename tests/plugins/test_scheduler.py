"""End to end: schedules (plugin scheduler) with a real rportd and real agents: RPort's
``/schedules`` (create, read, list, replace, delete, its validation messages), runs that fire
at the schedule's times as multi-client jobs with ``schedule_id`` (commands and scripts),
``last_execution``, ``overlaps``, and schedules kept across a server restart, on SQLite and
PostgreSQL. Short schedules (``@every 1s``, RPort's syntax) keep it quick: the tests wait for
the jobs to appear, never on a fixed sleep."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from ..procs import Agent, Server, running, wait_for
from ..services import both_databases
from .test_commands import FINAL, assert_error

SCHEDULE_KEYS = {"id", "created_at", "created_by", "name", "schedule", "type", "client_ids",
                 "group_ids", "tags", "labels", "command", "interpreter", "cwd", "is_sudo",
                 "timeout_sec", "execute_concurrently", "abort_on_error", "overlaps",
                 "next_run_at", "last_execution"}


def runs_of(api: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    """The multi-client jobs a schedule started, newest first."""
    rows = api.get("/commands").json()["data"]
    return [r for r in rows if r["schedule_id"] == schedule_id]


def wait_runs(api: httpx.Client, schedule_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    return wait_for(lambda: len(runs := runs_of(api, schedule_id)) >= count and runs, timeout,
                    f"{count} run(s) of schedule {schedule_id}", interval=0.1)


def finished(api: httpx.Client, jid: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        multi = api.get(f"/commands/{jid}").json()["data"]
        jobs = multi["jobs"]
        return multi if jobs and len(jobs) == len(multi["target_client_ids"]) and \
            all(j["status"] in FINAL for j in jobs) else None
    return wait_for(done, 30, f"multi-job {jid} to finish", interval=0.05)


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = api.post("/schedules", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


@both_databases
def test_a_schedule_fires_and_survives_a_restart(make_server: Callable[..., Server],
                                                 make_agent: Callable[..., Agent]) -> None:
    server = make_server()
    make_agent(server, "cron-a", config={"remote-commands": {"allow": [".*"], "deny": []}})
    api = server.api
    sched = create(api, name="every second", schedule="@every 1s", type="command",
                   command="/usr/bin/printf '<summary>tick</summary>'", client_ids=["cron-a"],
                   timeout_sec=20)
    assert set(sched) == SCHEDULE_KEYS, set(sched) ^ SCHEDULE_KEYS
    assert (sched["name"], sched["schedule"], sched["type"], sched["client_ids"]) == \
        ("every second", "@every 1s", "command", ["cron-a"])
    assert sched["created_by"] == "admin" and sched["last_execution"] is None
    assert sched["overlaps"] is False and sched["abort_on_error"] is None

    first = wait_runs(api, sched["id"], 1)[-1]
    multi = finished(api, first["jid"])
    assert multi["schedule_id"] == sched["id"] and multi["created_by"] == "admin"
    job, = multi["jobs"]
    assert job["status"] == "successful" and job["schedule_id"] == sched["id"], job
    assert job["result"]["summary"] == "tick"
    last = wait_for(lambda: (s := api.get(f"/schedules/{sched['id']}").json()["data"])
                    ["last_execution"] and s["last_execution"]["status"] == "successful"
                    and s["last_execution"], what="last_execution")
    assert last["client_count"] == 1 and last["success_count"] == 1 and last["summary"] == "tick"
    assert last["started_at"]

    # stored before the answer, so it survives a restart and fires again afterwards
    server.stop()
    server.start()
    api = server.api
    server.wait_connected("cron-a")
    before = {r["jid"] for r in runs_of(api, sched["id"])}
    new = wait_for(lambda: [r for r in runs_of(api, sched["id"]) if r["jid"] not in before],
                   30, "a run after the restart", interval=0.1)
    assert finished(api, new[0]["jid"])["jobs"][0]["status"] == "successful"
    assert "Running schedule: " + sched["id"] in server.log()

    resp = api.delete(f"/schedules/{sched['id']}")
    assert resp.status_code == 204
    assert_error(api.get(f"/schedules/{sched['id']}"), 404,
                 f"Cannot find a schedule by the provided id: {sched['id']}")


# -- one server for the rest --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("scheduler")
    server = Server(root / "server").start()
    agents = [Agent(root / f"agent-{cid}", server, cid, config={
        "client": {"tags": ["cron"]}, "remote-scripts": {"enabled": True},
        "remote-commands": {"allow": [".*"], "deny": []}}) for cid in ("sch-a", "sch-b")]
    with running(server, agents):
        yield server


@pytest.fixture
def api(fleet: Server) -> Iterator[httpx.Client]:
    assert fleet.api is not None
    yield fleet.api
    for sched in fleet.api.get("/schedules", params={"page[limit]": "100"}).json()["data"]:
        fleet.api.delete(f"/schedules/{sched['id']}")


def test_a_scheduled_script_on_clients_by_tag(api: httpx.Client) -> None:
    script = base64.b64encode(b"echo scheduled script on $(hostname)\n").decode()
    sched = create(api, schedule="@every 1s", type="script", script=script,
                   tags={"tags": ["cron"], "operator": "OR"}, execute_concurrently=True)
    assert sched["script"] == script and "command" not in sched
    multi = finished(api, wait_runs(api, sched["id"], 1)[-1]["jid"])
    assert multi["is_script"] is True and multi["concurrent"] is True
    assert sorted(j["client_id"] for j in multi["jobs"]) == ["sch-a", "sch-b"]
    for job in multi["jobs"]:
        assert job["status"] == "successful" and job["is_script"] is True, job
        assert job["result"]["stdout"].startswith("scheduled script on ")
    last = wait_for(lambda: (s := api.get(f"/schedules/{sched['id']}").json()["data"]["last_execution"])
                    and s["success_count"] == 2 and s, what="last_execution of 2 clients")
    assert last["client_count"] == 2 and last["status"] is None and last["summary"] is None


def test_without_overlaps_a_run_waits_for_the_previous(api: httpx.Client, fleet: Server,
                                                       tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    sched = create(api, schedule="@every 1s", type="command", client_ids=["sch-a"],
                   command=f"while [ ! -e {gate} ]; do sleep 0.05; done", timeout_sec=60)
    first = wait_runs(api, sched["id"], 1)[-1]
    fleet.proc.wait_log(f"Skipping non-overlapping schedule {sched['id']}, because it has jobs "
                        "in progress.")
    assert len(runs_of(api, sched["id"])) == 1  # skipped while the first run runs
    gate.touch()
    assert finished(api, first["jid"])["jobs"][0]["status"] == "successful"
    wait_runs(api, sched["id"], 2)  # ...and runs again once it has finished


def test_a_deleted_schedule_runs_no_more(api: httpx.Client) -> None:
    gone = create(api, schedule="@every 1s", type="command", client_ids=["sch-b"],
                  command="/usr/bin/true")
    wait_runs(api, gone["id"], 1)
    assert api.delete(f"/schedules/{gone['id']}").status_code == 204
    count = len(runs_of(api, gone["id"]))
    # a second schedule of the same period runs twice meanwhile: the deleted one would have too
    other = create(api, schedule="@every 1s", type="command", client_ids=["sch-b"],
                   command="/usr/bin/true")
    wait_runs(api, other["id"], 3)
    assert len(runs_of(api, gone["id"])) <= count + 1  # at most a run already under way


def test_replace_list_and_filter(api: httpx.Client) -> None:
    a = create(api, name="nightly", schedule="0 3 * * *", type="command", command="/usr/bin/true",
               client_ids=["sch-a"])
    b = create(api, name="hourly", schedule="@hourly", type="command", command="/usr/bin/true",
               group_ids=[], client_ids=["sch-b"], abort_on_error=False, overlaps=True)
    assert b["abort_on_error"] is False and b["overlaps"] is True
    body = api.get("/schedules", params={"sort": "-name"}).json()
    assert [s["name"] for s in body["data"]] == ["nightly", "hourly"] and body["meta"]["count"] == 2
    assert [s["id"] for s in api.get("/schedules", params={"filter[client_ids]": "sch-b"})
            .json()["data"]] == [b["id"]]
    assert [s["id"] for s in api.get("/schedules", params={"filter[name]": "night*"})
            .json()["data"]] == [a["id"]]

    # PUT replaces every field (a client may send back what it read: read-only fields ignored)
    resp = api.put(f"/schedules/{a['id']}", json={**a, "name": "weekdays", "schedule": "0 4 * * 1-5"})
    assert resp.status_code == 200, resp.text
    updated = resp.json()["data"]
    assert (updated["name"], updated["schedule"]) == ("weekdays", "0 4 * * 1-5")
    assert updated["created_at"] == a["created_at"] and updated["id"] == a["id"]
    assert updated["next_run_at"] != a["next_run_at"]
    assert_error(api.put("/schedules/nope", json={"schedule": "@daily", "type": "command",
                                                  "command": "x", "client_ids": ["sch-a"]}), 404,
                 "Cannot find a schedule by the provided id: nope")
    assert_error(api.delete("/schedules/nope"), 404, "Cannot find a schedule by the provided id: nope")


@pytest.mark.parametrize("body, status, title", [
    ({"schedule": "@daily", "type": "job", "command": "x"}, 400, "Invalid type."),
    ({"schedule": "* * *", "type": "command", "command": "x"}, 400, "Invalid schedule."),
    ({"schedule": "61 * * * *", "type": "command", "command": "x"}, 400, "Invalid schedule."),
    ({"schedule": "@every 0s", "type": "command", "command": "x"}, 400, "Invalid schedule."),
    ({"schedule": "@sometimes", "type": "command", "command": "x"}, 400, "Invalid schedule."),
    ({"schedule": "@daily", "type": "command"}, 400, "Empty command."),
    ({"schedule": "@daily", "type": "script", "command": "x"}, 400, "Empty script."),
    ({"schedule": "@daily", "type": "script", "script": "%%%"}, 400, "Invalid script."),
    ({"schedule": "@daily", "type": "command", "command": "x", "interpreter": "a b"}, 400,
     "Invalid interpreter."),
    ({"schedule": "@daily", "type": "command", "command": "x", "bogus": 1}, 400, "Invalid JSON data."),
    ({"schedule": "@daily", "type": "command", "command": "x"}, 400, "Missing targeting parameters."),
    ({"schedule": "@daily", "type": "command", "command": "x", "client_ids": ["nope"]}, 404,
     'Client with id="nope" not found.'),
])
def test_invalid_schedules(api: httpx.Client, body: dict[str, Any], status: int, title: str) -> None:
    assert_error(api.post("/schedules", json={"client_ids": ["sch-a"], **body}
                          if "client_ids" not in body and title != "Missing targeting parameters."
                          else body), status, title)


def test_openapi(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert paths["/api/v1/schedules"]["post"]["x-rport-permission"] == "scheduler"
    assert set(paths["/api/v1/schedules/{id}"]) == {"get", "put", "delete"}
    assert paths["/api/v1/schedules"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["required"] == ["schedule", "type"]
