"""End to end: remote commands (plugin commands) with a real rportd and real rport agents
running real commands, driven through the API as the seed (003, "Command execution") and the
reference (rport-api.md §1.4, §1.5, §5) describe: the seed's curl/jq example, every job status,
cwd/interpreters/sudo, the agent's ``[remote-commands]`` allow/deny rules in both orders,
``send_back_limit``, multi-client runs (client ids, groups, tags, labels; sequential with
abort_on_error, concurrent, a disconnected client), persistence across a server restart with
a job running, and the live output stream (server-sent events).

Waits are on conditions (polling the job until it leaves ``running``), never on fixed sleeps;
commands that must run "for a while" wait for a file the test creates instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..attackers import register_clients
from ..procs import Agent, Server, running, wait_for
from ..services import both_databases

FINAL = ("successful", "failed", "unknown", "cancelled", "skipped")
JOB_KEYS = {"jid", "status", "finished_at", "client_id", "client_name", "command", "cwd",
            "interpreter", "pid", "started_at", "created_by", "timeout_sec", "multi_job_id",
            "schedule_id", "error", "result", "is_sudo", "is_script", "stream_result"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
MARK = "CMD_TEST_MARK"

OPEN = {"allow": [".*"], "deny": [], "send_back_limit": 1048576}
"""An agent that runs anything (bare ``date`` as in the seed, pipes, scripts)."""

# Agents started with args (default [remote-commands]) or a config (its [remote-commands]).
FLEET_ARGS: dict[str, dict[str, Any]] = {
    "std": {"args": []},
    "m-a": {"args": ["--tag", "x", "--tag", "web", "--label", "zone: EU", "--label", "env: prod1"],
            "env": {MARK: "present"}},
    "m-b": {"args": ["--tag", "x", "--label", "zone: EU", "--label", "env: prod2"]},
    "m-c": {"args": ["--tag", "web", "--label", "zone: US"], "env": {MARK: "present"}},
    "gone": {"args": []},
}
FLEET_CONFIG: dict[str, dict[str, Any]] = {
    "open": OPEN,
    "zipdeny": {"allow": ["^/usr/bin/.*"], "deny": ["^/usr/bin/zip"]},
    "denyallow": {"order": ["deny", "allow"], "deny": [".*"], "allow": ["zip$"]},
    "off": {"enabled": False},
}


# -- helpers ----------------------------------------------------------------------------------


def assert_error(resp: httpx.Response, status: int, title: str | re.Pattern[str],
                 detail: str | None = None) -> dict[str, str]:
    """RPort's error envelope, one item with a code; ``title`` exact (or a regex searched)."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    item = body["errors"][0]
    assert set(item) == {"code", "title", "detail"} and item["code"], item
    if isinstance(title, str):
        assert item["title"] == title, item
    else:
        assert title.search(item["title"]), item
    if detail is not None:
        assert detail in item["detail"], item
    return item


def run(api: httpx.Client, client_id: str, **body: Any) -> str:
    resp = api.post(f"/clients/{client_id}/commands", json=body)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(data) == {"jid"} and re.fullmatch(r"[0-9a-f-]{36}", data["jid"]), data
    return data["jid"]


def get_job(api: httpx.Client, client_id: str, jid: str) -> dict[str, Any]:
    resp = api.get(f"/clients/{client_id}/commands/{jid}")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def wait_job(api: httpx.Client, client_id: str, jid: str, timeout: float = 30) -> dict[str, Any]:
    """The job once its status has left ``running``."""
    return wait_for(lambda: (j := get_job(api, client_id, jid))["status"] != "running" and j,
                    timeout, f"job {jid} on {client_id} to finish", interval=0.05)


def run_done(api: httpx.Client, client_id: str, **body: Any) -> dict[str, Any]:
    return wait_job(api, client_id, run(api, client_id, **body))


def run_multi(api: httpx.Client, **body: Any) -> str:
    resp = api.post("/commands", json=body)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(data) == {"jid"}, data
    return data["jid"]


def wait_multi(api: httpx.Client, jid: str, count: int, timeout: float = 30) -> dict[str, Any]:
    """The multi-client job once it has ``count`` jobs, all final."""
    def done() -> dict[str, Any] | None:
        resp = api.get(f"/commands/{jid}")
        assert resp.status_code == 200, resp.text
        multi = resp.json()["data"]
        jobs = multi["jobs"]
        return multi if len(jobs) == count and all(j["status"] in FINAL for j in jobs) else None
    return wait_for(done, timeout, f"multi-job {jid} to finish on {count} clients", interval=0.05)


def group_pids(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def sse_events(resp: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, decoded data) of a text/event-stream response; comments are skipped."""
    event, data = "message", []
    for line in resp.iter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


# -- the shared fleet -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with the agents above; ``gone`` connects once, then stops (a known,
    disconnected client)."""
    root: Path = tmp_path_factory.mktemp("commands")
    server = Server(root / "server").start()
    agents = [Agent(root / f"agent-{cid}", server, cid, args=spec["args"], env=spec.get("env"))
              for cid, spec in FLEET_ARGS.items()]
    agents += [Agent(root / f"agent-{cid}", server, cid, config={"remote-commands": rc})
               for cid, rc in FLEET_CONFIG.items()]
    with running(server, agents):
        gone = next(a for a in agents if a.id == "gone")
        gone.stop()
        server.wait_disconnected("gone")
        yield server


@pytest.fixture
def api(fleet: Server) -> Iterator[httpx.Client]:
    assert fleet.api is not None
    yield fleet.api
    for group in fleet.api.get("/client-groups").json()["data"]:
        fleet.api.delete(f"/client-groups/{group['id']}")


# -- 1. the seed's single-host example, with curl and jq ---------------------------------------


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_seed_single_host_example_with_curl_and_jq(fleet: Server) -> None:
    env = {**os.environ, "CLIENTID": "open", "API": fleet.api_url}
    post = subprocess.run(
        """curl -s -u admin:foobaz $API/api/v1/clients/$CLIENTID/commands \\
        -H "Content-Type: application/json" -X POST \\
        --data-raw '{
          "command": "date",
          "timeout_sec": 10
        }'|jq""", shell=True, env=env, capture_output=True, text=True, check=True, timeout=30)
    jid = json.loads(post.stdout)["data"]["jid"]
    assert re.fullmatch(r"[0-9a-f-]{36}", jid)

    def fetch() -> dict[str, Any]:
        out = subprocess.run("curl -s -u admin:foobaz $API/api/v1/clients/$CLIENTID/commands/$JOBID|jq",
                             shell=True, env={**env, "JOBID": jid}, capture_output=True, text=True,
                             check=True, timeout=30)
        return json.loads(out.stdout)["data"]
    job = wait_for(lambda: (j := fetch())["status"] != "running" and j, 30, "the seed's job")

    assert set(job) == JOB_KEYS, sorted(set(job) ^ JOB_KEYS)
    assert job["jid"] == jid
    assert job["status"] == "successful"
    assert job["client_id"] == "open"
    assert isinstance(job["client_name"], str)
    assert job["command"] == "date"
    assert job["cwd"] == ""
    assert job["is_sudo"] is False
    assert job["interpreter"] == "/bin/sh"
    assert isinstance(job["pid"], int) and job["pid"] > 0
    assert RFC3339.match(job["started_at"]) and RFC3339.match(job["finished_at"]), job
    assert job["started_at"] <= job["finished_at"]
    assert job["created_by"] == "admin"
    assert job["timeout_sec"] == 10
    assert job["multi_job_id"] is None and job["schedule_id"] is None
    assert job["error"] == ""
    assert job["is_script"] is False and job["stream_result"] is True
    # date's default format, e.g. "Thu Oct 15 15:30:12 UTC 2020\n"
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}\n", job["result"]["stdout"]), job
    assert job["result"]["stderr"] == ""


def test_list_jobs_of_a_client(api: httpx.Client) -> None:
    jids = [run(api, "std", command="/usr/bin/true") for _ in range(2)]
    for jid in jids:
        wait_job(api, "std", jid)
    resp = api.get("/clients/std/commands")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    rows = body["data"]
    assert body["meta"]["count"] == len(rows) >= 2
    assert all(set(r) == {"jid", "status", "finished_at"} for r in rows), rows
    assert {r["jid"] for r in rows} >= set(jids)
    assert all(r["status"] == "successful" for r in rows if r["jid"] in jids)

    resp = api.get("/clients/std/commands", params={"fields[jobs]": "jid,command,client_id"})
    assert resp.status_code == 200, resp.text
    rows = resp.json()["data"]
    assert all(set(r) == {"jid", "command", "client_id"} for r in rows), rows
    mine = [r for r in rows if r["jid"] in jids]
    assert len(mine) == 2 and all(r == {"jid": r["jid"], "command": "/usr/bin/true", "client_id": "std"}
                                  for r in mine)
    # jobs of other clients are not listed
    assert all(r["client_id"] == "std" for r in rows)


# -- 2. every status ----------------------------------------------------------------------------


def test_status_successful_and_failed(api: httpx.Client) -> None:
    ok = run_done(api, "std", command="/usr/bin/true")
    assert ok["status"] == "successful" and ok["error"] == "" and ok["finished_at"]

    failed = run_done(api, "std", command="/usr/bin/false")
    assert failed["status"] == "failed", failed
    assert failed["error"] == "exit status 1"
    assert failed["finished_at"]

    code = run_done(api, "std", command="/usr/bin/ls /nonexistent-dir-for-rport-tests")
    assert code["status"] == "failed" and code["error"] == "exit status 2", code
    assert "nonexistent-dir-for-rport-tests" in code["result"]["stderr"]


def test_status_failed_for_a_missing_cwd(api: httpx.Client) -> None:
    resp = api.post("/clients/std/commands", json={"command": "/usr/bin/pwd", "cwd": "/nonexistent/cwd/x"})
    assert resp.status_code == 200, resp.text
    job = wait_job(api, "std", resp.json()["data"]["jid"])
    assert job["status"] == "failed", job
    assert "/nonexistent/cwd/x" in job["error"] and "No such file or directory" in job["error"], job
    assert job["finished_at"]


def test_status_unknown_on_timeout_leaves_the_process_running(api: httpx.Client) -> None:
    job = run_done(api, "std", command="/usr/bin/sleep 30", timeout_sec=1)
    pid = job["pid"]
    try:
        assert job["status"] == "unknown", job
        assert job["finished_at"] is None
        assert "timeout" in job["error"]
        # the process keeps running, as RPort's
        os.kill(pid, 0)
        assert pid_alive(pid)
        assert group_pids(pid), "the command's processes ended at the timeout"
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not group_pids(pid), 10, "the timed-out command to be killed")
    # a late end does not change an unknown job into something else... nor break the agent
    assert run_done(api, "std", command="/usr/bin/true")["status"] == "successful"


def test_status_cancelled(api: httpx.Client) -> None:
    jid = run(api, "std", command="/usr/bin/sleep 30", timeout_sec=60)
    job = get_job(api, "std", jid)
    assert job["status"] == "running" and job["pid"], job
    pid = job["pid"]
    assert pid_alive(pid)
    resp = api.post(f"/clients/std/commands/{jid}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == {"jid": jid, "cancelled": True}
    job = wait_job(api, "std", jid)
    assert job["status"] == "cancelled", job
    assert job["finished_at"]
    wait_for(lambda: not group_pids(pid), 10, "the cancelled command's processes to end")
    assert not pid_alive(pid)
    # a finished job cannot be cancelled again
    assert_error(api.post(f"/clients/std/commands/{jid}/cancel"), 409, "job is not running")
    assert_error(api.post("/clients/std/commands/nope/cancel"), 404, 'Job[id="nope"] not found.')


def test_cancel_a_timed_out_job(api: httpx.Client) -> None:
    """A job in status unknown (its timeout passed, the process runs on) can be cancelled: the
    process group ends and the job no longer says the command is still running."""
    job = run_done(api, "std", command="/usr/bin/sleep 30", timeout_sec=1)
    pid = job["pid"]
    try:
        assert job["status"] == "unknown", job
        assert group_pids(pid)
        resp = api.post(f"/clients/std/commands/{job['jid']}/cancel")
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"] == {"jid": job["jid"], "cancelled": True}
        wait_for(lambda: not group_pids(pid), 10, "the cancelled command's processes to end")
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job = wait_for(lambda: (j := get_job(api, "std", job["jid"]))["status"] != "unknown" and j, 5,
                   "the cancelled job to leave status unknown", interval=0.05)
    assert job["status"] == "cancelled", job
    assert job["finished_at"]
    assert "still running" not in job["error"]


# -- 3. cwd, interpreters, sudo, validation -----------------------------------------------------


def test_cwd(api: httpx.Client, tmp_path: Path) -> None:
    job = run_done(api, "std", command="/usr/bin/pwd", cwd=str(tmp_path))
    assert job["status"] == "successful", job
    assert job["cwd"] == str(tmp_path)
    assert os.path.realpath(job["result"]["stdout"].strip()) == os.path.realpath(tmp_path)


def test_interpreter_bash(api: httpx.Client) -> None:
    script = 'arr=(x y z); echo "${arr[1]} ${#arr[@]}"; [[ $BASH_VERSION ]] && echo bash'
    job = run_done(api, "open", command=script, interpreter="bash")
    assert job["status"] == "successful", job
    assert job["interpreter"] == "bash"
    assert job["result"]["stdout"] == "y 3\nbash\n"
    # the same text is no POSIX sh script: /bin/sh (the default) fails on it
    sh = run_done(api, "open", command=script)
    assert sh["interpreter"] == "/bin/sh"
    assert sh["status"] == "failed" and sh["error"].startswith("exit status"), sh


def test_interpreter_python3(api: httpx.Client) -> None:
    job = run_done(api, "open", command='import sys\nprint("py", sys.version_info[0], 6 * 7)',
                   interpreter="python3")
    assert job["status"] == "successful", job
    assert job["interpreter"] == "python3"
    assert job["result"]["stdout"] == "py 3 42\n"


def test_shebang_runs_the_script_itself(api: httpx.Client) -> None:
    job = run_done(api, "open", command='#!/usr/bin/python3\nimport sys\nprint("shebang", 6 * 7, file=sys.stderr)')
    assert job["status"] == "successful", job
    assert job["result"]["stderr"] == "shebang 42\n" and job["result"]["stdout"] == ""


def test_interpreter_absent_on_the_client_is_409(api: httpx.Client) -> None:
    before = api.get("/clients/open/commands").json()["meta"]["count"]
    item = assert_error(api.post("/clients/open/commands", json={
        "command": "/usr/bin/date", "interpreter": "nonexistent-shell"}), 409,
        'client error: interpreter "nonexistent-shell" not found on this client')
    assert item["code"] == "ERR_CODE_CLIENT_ERROR"
    # a refused command leaves no job, as RPort
    assert api.get("/clients/open/commands").json()["meta"]["count"] == before


def test_invalid_interpreter_is_400(api: httpx.Client) -> None:
    assert_error(api.post("/clients/open/commands", json={
        "command": "/usr/bin/date", "interpreter": "bad interp!"}), 400, "Invalid interpreter.")


@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed")
def test_is_sudo(api: httpx.Client) -> None:
    job = run_done(api, "std", command="/usr/bin/id -u", is_sudo=True)
    assert job["is_sudo"] is True
    assert job["status"] == "successful", job
    assert job["result"]["stdout"] == "0\n"


@pytest.mark.skipif(shutil.which("sudo") is not None, reason="sudo is installed")
def test_is_sudo_without_sudo_is_refused(api: httpx.Client) -> None:
    assert_error(api.post("/clients/std/commands", json={"command": "/usr/bin/id -u", "is_sudo": True}),
                 409, "client error: is_sudo is set but sudo is not installed on this client")


def test_request_validation(api: httpx.Client, fleet: Server) -> None:
    for command in ("", "   ", None):
        assert_error(api.post("/clients/std/commands", json={"command": command}), 400,
                     "Command cannot be empty.")
    assert_error(api.post("/clients/std/commands", json={"timeout_sec": 3}), 400, "Command cannot be empty.")
    assert_error(api.post("/clients/std/commands", json={"command": "/usr/bin/date", "bogus": 1}), 400,
                 "Invalid JSON data.", 'json: unknown field "bogus"')
    assert_error(api.post("/clients/std/commands", content=b'{"command": "/usr/bin/date"',
                          headers={"Content-Type": "application/json"}), 400, "Invalid JSON data.")
    assert_error(api.post("/clients/std/commands", json=["/usr/bin/date"]), 400, "Invalid JSON data.")
    assert_error(api.post("/clients/std/commands", content=b"",
                          headers={"Content-Type": "application/json"}), 400, "Missing body with json data.")
    assert_error(api.post("/clients/x/commands", json={"command": "/usr/bin/date"}), 404,
                 'Active client with id="x" not found.')
    # a known but disconnected client is no active client
    assert fleet.client("gone")["connection_state"] == "disconnected"  # type: ignore[index]
    assert_error(api.post("/clients/gone/commands", json={"command": "/usr/bin/date"}), 404,
                 'Active client with id="gone" not found.')
    assert_error(api.get("/clients/std/commands/x"), 404, 'Job[id="x"] not found.')
    assert_error(api.get("/clients/std/commands/x/stream"), 404, 'Job[id="x"] not found.')


def test_request_bodies_that_are_json_but_unusable(api: httpx.Client) -> None:
    """Valid JSON that cannot be used is RPort's 400, never a 500 (and never stored): a lone
    surrogate, nesting deeper than any body of this API, another encoding than UTF-8, values of
    the wrong type (a string "false" is not false), NUL characters, a 64-bit overflow."""
    json_headers = {"Content-Type": "application/json"}
    bodies = {
        "surrogate": b'{"command": "\\ud800"}',
        "surrogate-key": b'{"command": "/usr/bin/date", "\\ud800": 1}',
        "deep": b'{"command": "/usr/bin/date", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "utf-16": '{"command": "/usr/bin/date"}'.encode("utf-16"),
    }
    for name, raw in bodies.items():
        for path in ("/clients/std/commands", "/commands", "/client-groups"):
            item = assert_error(api.post(path, content=raw, headers=json_headers), 400,
                                "Invalid JSON data.")
            assert item["code"] == "ERR_CODE_INVALID_JSON", (name, path, item)
    for body, detail in [
        ({"command": 123}, "command must be a string"),
        ({"command": "/usr/bin/date", "is_sudo": "false"}, "is_sudo must be true or false"),
        ({"command": "/usr/bin/date\u0000"}, "command must not contain a NUL character"),
        ({"command": "/bin/pwd", "cwd": "/tmp\u0000x"}, "cwd must not contain a NUL character"),
        ({"command": "/usr/bin/date", "timeout_sec": 10 ** 20},
         "timeout_sec must be a whole number of seconds (64-bit)"),
    ]:
        assert_error(api.post("/clients/std/commands", json=body), 400, "Invalid JSON data.", detail)
    many = {"command": "/usr/bin/date", "client_ids": ["std"]}
    for extra, detail in [
        ({"execute_concurrently": "false"}, "execute_concurrently must be true or false"),
        ({"abort_on_error": 1}, "abort_on_error must be true or false"),
    ]:
        assert_error(api.post("/commands", json={**many, **extra}), 400, "Invalid JSON data.", detail)
    assert_error(api.post("/commands", json={"command": "/usr/bin/date",
                                             "tags": {"tags": ["x"], "extra": 1}}),
                 400, "Invalid JSON data.", 'json: unknown field "extra" in "tags"')
    # null is the default, as Go decodes it
    job = run_done(api, "std", command="/usr/bin/true", is_sudo=None, cwd=None, timeout_sec=None)
    assert job["status"] == "successful" and job["is_sudo"] is False, job
    # the server is fine, and lists what it has
    assert api.get("/clients/std/commands", params={"fields[jobs]": "jid,command,error"}).status_code == 200


def test_default_timeout(api: httpx.Client) -> None:
    job = run_done(api, "std", command="/usr/bin/true", timeout_sec=0)
    assert job["timeout_sec"] == 60 and job["status"] == "successful"


# -- 4. allow / deny -----------------------------------------------------------------------------


def test_allow_deny_order_allow_first(api: httpx.Client) -> None:
    """order allow,deny with allow ['^/usr/bin/.*'], deny ['^/usr/bin/zip'] (the seed's example)."""
    job = run_done(api, "zipdeny", command="/usr/bin/date")
    assert job["status"] == "successful", job
    assert_error(api.post("/clients/zipdeny/commands", json={"command": "/usr/bin/zip"}), 409,
                 re.compile(r"^client error: command is not allowed: /usr/bin/zip: .*deny pattern "
                            r"'\^/usr/bin/zip'"))
    assert_error(api.post("/clients/zipdeny/commands", json={"command": "/bin/date"}), 409,
                 re.compile(r"^client error: command is not allowed: /bin/date: .*no allow pattern"))


def test_allow_deny_order_deny_first(api: httpx.Client) -> None:
    """order deny,allow with deny ['.*'], allow ['zip$']: only commands ending in zip."""
    job = run_done(api, "denyallow", command="/usr/bin/echo zip")
    assert job["status"] == "successful", job
    assert job["result"]["stdout"] == "zip\n"
    assert_error(api.post("/clients/denyallow/commands", json={"command": "/usr/bin/date"}), 409,
                 re.compile(r"^client error: command is not allowed: /usr/bin/date: .*deny pattern '\.\*'"))


@pytest.mark.parametrize("command", ["/usr/bin/date; /usr/bin/id", "/usr/bin/date | /usr/bin/cat",
                                     "/usr/bin/date && /usr/bin/id", "/usr/bin/date > /tmp/x",
                                     "/usr/bin/date\n/usr/bin/id"])
def test_default_deny_blocks_chaining(api: httpx.Client, command: str) -> None:
    item = assert_error(api.post("/clients/std/commands", json={"command": command}), 409,
                        re.compile(r"^client error: command is not allowed: .*: it matches the deny pattern", re.DOTALL))
    assert command in item["title"]


def test_default_allow_needs_a_full_path(api: httpx.Client) -> None:
    assert_error(api.post("/clients/std/commands", json={"command": "date"}), 409,
                 re.compile(r"^client error: command is not allowed: date: it matches no allow pattern"))


def test_commands_disabled(api: httpx.Client) -> None:
    item = assert_error(api.post("/clients/off/commands", json={"command": "/usr/bin/date"}), 409,
                        re.compile("disabled"))
    assert item["title"].startswith("client error: ")


# -- 5. send_back_limit -------------------------------------------------------------------------

LIMIT = 1048576
TEN_MB = "/usr/bin/head -c 10000000 /dev/zero | /usr/bin/tr '\\0' {char}"


def wait_job_of(agent: Agent, api: httpx.Client, jid: str, timeout: float = 30) -> dict[str, Any]:
    """Like wait_job, but fails at once if the agent's link breaks on a protocol violation."""
    def done() -> dict[str, Any] | None:
        violation = [line for line in agent.log().splitlines() if "protocol violation" in line]
        assert not violation, f"the agent's connection broke: {violation[0]}"
        job = get_job(api, agent.id, jid)
        return job if job["status"] != "running" else None
    return wait_for(done, timeout, f"job {jid} on {agent.id} to finish", interval=0.05)


def big_output(agent: Agent, api: httpx.Client) -> None:
    """send_back_limit applies to stdout and stderr separately; the result reaches the server and
    the agent stays connected."""
    job = wait_job_of(agent, api, run(api, agent.id, command=TEN_MB.format(char="a")))
    assert job["status"] == "successful", job["error"]
    out = job["result"]["stdout"]
    assert len(out) == LIMIT and set(out) == {"a"}
    assert job["result"]["stderr"] == ""
    assert job["error"] == f"overflow of stdOut buffer: maximum send_back_limit of {LIMIT} bytes exceeded"

    job = wait_job_of(agent, api, run(api, agent.id, command=TEN_MB.format(char="b") + " >&2"))
    assert job["status"] == "successful", job["error"]
    err = job["result"]["stderr"]
    assert len(err) == LIMIT and set(err) == {"b"}
    assert job["result"]["stdout"] == ""
    assert job["error"] == f"overflow of stdErr buffer: maximum send_back_limit of {LIMIT} bytes exceeded"

    # exactly the limit is no overflow
    job = wait_job_of(agent, api, run(
        api, agent.id, command=f"/usr/bin/head -c {LIMIT} /dev/zero | /usr/bin/tr '\\0' c"))
    assert job["status"] == "successful" and job["error"] == "", job["error"]
    assert len(job["result"]["stdout"]) == LIMIT

    # the agent is still there for the next command
    job = wait_job_of(agent, api, run(api, agent.id, command="/usr/bin/echo still here"))
    assert job["status"] == "successful" and job["result"]["stdout"] == "still here\n"


def test_send_back_limit(fleet: Server, make_agent: Any) -> None:
    """With the server's default settings (max_request_bytes_client 512 KiB)."""
    agent = make_agent(fleet, "big", config={"remote-commands": OPEN})
    assert fleet.api is not None
    big_output(agent, fleet.api)


def test_send_back_limit_with_a_large_server_message_limit(make_server: Any, make_agent: Any) -> None:
    server: Server = make_server("big-server", extra={"server": {"max_request_bytes_client": 8 << 20}})
    agent = make_agent(server, "big2", config={"remote-commands": OPEN})
    assert server.api is not None
    big_output(agent, server.api)


# -- 6. many clients ---------------------------------------------------------------------------

MULTI_KEYS = {"jid", "started_at", "created_by", "schedule_id", "client_ids", "group_ids", "tags",
              "command", "cwd", "interpreter", "timeout_sec", "concurrent", "abort_on_err", "jobs",
              "is_sudo", "is_script"}


def make_group(api: httpx.Client, gid: str = "gx") -> None:
    resp = api.post("/client-groups", json={"id": gid, "params": {"tag": ["x"]}})
    assert resp.status_code == 201, resp.text


def test_multi_by_client_ids(api: httpx.Client) -> None:
    jid = run_multi(api, command="/usr/bin/date", client_ids=["m-c", "m-a"], timeout_sec=30)
    multi = wait_multi(api, jid, 2)
    assert set(multi) >= MULTI_KEYS, sorted(MULTI_KEYS - set(multi))
    assert multi["jid"] == jid and multi["created_by"] == "admin"
    assert RFC3339.match(multi["started_at"])
    assert multi["client_ids"] == ["m-c", "m-a"] and multi["group_ids"] is None
    assert multi["command"] == "/usr/bin/date" and multi["cwd"] == "" and multi["is_sudo"] is False
    assert isinstance(multi["interpreter"], str)
    assert multi["timeout_sec"] == 30
    assert multi["concurrent"] is False and multi["abort_on_err"] is True
    jobs = multi["jobs"]
    assert [j["client_id"] for j in jobs] == ["m-c", "m-a"]
    for job in jobs:
        assert set(job) == JOB_KEYS
        assert job["status"] == "successful", job
        assert job["multi_job_id"] == jid and job["command"] == "/usr/bin/date"
        assert job["created_by"] == "admin" and job["timeout_sec"] == 30
        assert job["pid"] and job["result"]["stdout"].endswith("\n")

    listed = api.get("/commands")
    assert listed.status_code == 200, listed.text
    rows = listed.json()["data"]
    assert listed.json()["meta"]["count"] == len(rows)
    mine = [r for r in rows if r["jid"] == jid]
    assert mine and set(mine[0]) == {"jid", "started_at", "created_by", "schedule_id"}

    # RPort's list of them: default fields jid, status, finished_at; sort, filter, fields, page
    resp = api.get(f"/commands/{jid}/jobs")
    assert resp.status_code == 200, resp.text
    assert resp.json()["meta"]["count"] == 2
    assert sorted(resp.json()["data"], key=lambda j: j["jid"]) == sorted(
        ({k: j[k] for k in ("jid", "status", "finished_at")} for j in jobs), key=lambda j: j["jid"])
    resp = api.get(f"/commands/{jid}/jobs", params={"sort": "client_id", "fields[commands]": "client_id,pid"})
    assert resp.json()["data"] == [{"client_id": "m-a", "pid": jobs[1]["pid"]},
                                   {"client_id": "m-c", "pid": jobs[0]["pid"]}], resp.text
    resp = api.get(f"/commands/{jid}/jobs", params={"filter[status]": "queued,running",
                                                   "page[limit]": "1"})
    assert resp.json() == {"data": [], "meta": {"count": 0}}, resp.text  # none still to finish
    resp = api.get(f"/commands/{jid}/jobs", params={"filter[status]": "Successful,failed",
                                                   "filter[client_id]": "m-*"})
    assert resp.json()["meta"]["count"] == 2, resp.text
    by_jid = sorted(j["jid"] for j in jobs)
    for sort, expected in (("jid", by_jid), ("-jid", by_jid[::-1])):  # paged by the database
        resp = api.get(f"/commands/{jid}/jobs", params={"filter[status]": "successful",
                                                       "sort": sort, "page[limit]": "1",
                                                       "page[offset]": "1", "fields[jobs]": "jid"})
        assert resp.json() == {"data": [{"jid": expected[1]}], "meta": {"count": 2}}, resp.text
    resp = api.get(f"/commands/{jid}/jobs", params={"filter[client_id]": "m-c", "page[limit]": "1"})
    assert [j["jid"] for j in resp.json()["data"]] == [jobs[0]["jid"]], resp.text
    assert api.get(f"/commands/{jid}/jobs", params={"sort": "pid"}).status_code == 400
    assert api.get(f"/commands/{jid}/jobs", params={"page[limit]": "1001"}).status_code == 400
    # a child job is also a job of its client
    assert get_job(api, "m-a", jobs[1]["jid"]) == jobs[1]
    assert_error(api.get("/commands/nope"), 404, 'Multi-client Job[id="nope"] not found.')


def test_list_of_multi_jobs_takes_rports_options(api: httpx.Client) -> None:
    """GET /commands: RPort's sorts (jid, started_at, created_by, schedule_id), filters (the
    same, started_at as [since]/[until]) and pages (100, at most 1000), newest first."""
    first = run_multi(api, command="/usr/bin/date", client_ids=["m-a"])
    second = run_multi(api, command="/usr/bin/date", client_ids=["m-b"])
    started = {m["jid"]: m["started_at"] for m in (wait_multi(api, first, 1), wait_multi(api, second, 1))}
    rows = api.get("/commands").json()["data"]
    assert [r["jid"] for r in rows if r["jid"] in started] == [second, first]  # newest first
    resp = api.get("/commands", params={"sort": "started_at", "filter[jid]": f"{first},{second}"})
    assert resp.json() == {"data": [{"jid": j, "started_at": started[j], "created_by": "admin",
                                     "schedule_id": None} for j in (first, second)],
                           "meta": {"count": 2}}, resp.text
    resp = api.get("/commands", params={"filter[started_at][since]": started[second],
                                        "filter[created_by]": "adm*", "page[limit]": "1"})
    assert [r["jid"] for r in resp.json()["data"]] == [second], resp.text
    resp = api.get("/commands", params={"filter[started_at][until]": started[first],
                                        "filter[jid]": f"{first},{second}"})
    assert [r["jid"] for r in resp.json()["data"]] == [first], resp.text
    total = api.get("/commands").json()["meta"]["count"]
    resp = api.get("/commands", params={"page[limit]": "1", "page[offset]": "1", "sort": "-jid"})
    assert len(resp.json()["data"]) == 1 and resp.json()["meta"]["count"] == total, resp.text
    for bad, title in (({"sort": "command"}, "unsupported sort field 'command'"),
                       ({"filter[started_at][after]": "2026-01-01"},
                        "unsupported filter field 'filter[started_at][after]'"),
                       ({"filter[started_at][since]": "yesterday"}, "invalid time 'yesterday'"),
                       ({"page[limit]": "1001"}, "pagination limit too big (1001) maximum is 1000"),
                       ({"status": "x"}, "unsupported query parameter 'status'")):
        resp = api.get("/commands", params=bad)
        assert resp.status_code == 400, (bad, resp.text)
        assert any(e["title"].startswith(title) for e in resp.json()["errors"]), (bad, resp.text)


def test_multi_by_group(api: httpx.Client) -> None:
    make_group(api)
    jid = run_multi(api, command="/usr/bin/date", group_ids=["gx"])
    multi = wait_multi(api, jid, 2)
    assert multi["group_ids"] == ["gx"] and multi["client_ids"] is None
    assert [j["client_id"] for j in multi["jobs"]] == ["m-a", "m-b"]
    assert all(j["status"] == "successful" for j in multi["jobs"]), multi["jobs"]


def test_multi_by_client_ids_and_group(api: httpx.Client) -> None:
    make_group(api)
    jid = run_multi(api, command="/usr/bin/date", client_ids=["m-c", "m-b"], group_ids=["gx"])
    multi = wait_multi(api, jid, 3)
    # the listed clients first, then the group's other members; each once
    assert [j["client_id"] for j in multi["jobs"]] == ["m-c", "m-b", "m-a"]
    assert all(j["status"] == "successful" for j in multi["jobs"]), multi["jobs"]


@pytest.mark.parametrize(("target", "expected"), [
    ({"tags": {"operator": "AND", "tags": ["x", "web"]}}, ["m-a"]),
    ({"tags": {"operator": "OR", "tags": ["x", "web"]}}, ["m-a", "m-b", "m-c"]),
    ({"labels": {"operator": "AND", "labels": ["zone:EU", "env:prod1"]}}, ["m-a"]),
    ({"labels": {"operator": "OR", "labels": ["zone:EU", "env:prod1"]}}, ["m-a", "m-b"]),
], ids=["tags-and", "tags-or", "labels-and", "labels-or"])
def test_multi_by_tags_and_labels(api: httpx.Client, target: dict[str, Any], expected: list[str]) -> None:
    jid = run_multi(api, command="/usr/bin/date", **target)
    multi = wait_multi(api, jid, len(expected))
    assert [j["client_id"] for j in multi["jobs"]] == expected
    assert all(j["status"] == "successful" for j in multi["jobs"]), multi["jobs"]
    key = next(iter(target))
    assert multi[key] == target[key]


@pytest.mark.parametrize(("body", "status", "title"), [
    ({}, 400, "Missing targeting parameters."),
    ({"client_ids": ["m-a"], "tags": {"tags": ["x"]}}, 400, "Multiple targeting parameters."),
    ({"group_ids": ["gx"], "tags": {"tags": ["x"]}}, 400, "Multiple targeting parameters."),
    ({"client_ids": ["m-a"], "labels": {"labels": ["zone:EU"]}}, 400, "Multiple targeting parameters."),
    ({"tags": {"tags": ["x"]}, "labels": {"labels": ["zone:EU"]}}, 400, "Multiple targeting parameters."),
    ({"tags": {"operator": "AND", "tags": []}}, 400, "No tags specified."),
    ({"tags": {"operator": "AND"}}, 400, "No tags specified."),
    ({"labels": {"operator": "AND", "labels": []}}, 400, "No labels specified."),
    ({"group_ids": ["nope"]}, 400, 'Unknown group with id="nope".'),
    ({"client_ids": ["m-a", "nope"]}, 404, 'Client with id="nope" not found.'),
    ({"tags": {"tags": ["no-such-tag"]}}, 400, "at least 1 client should be specified"),
], ids=["none", "ids+tags", "groups+tags", "ids+labels", "tags+labels", "no-tags", "tags-missing",
        "no-labels", "unknown-group", "unknown-client", "nothing-selected"])
def test_multi_invalid_targeting(api: httpx.Client, body: dict[str, Any], status: int, title: str) -> None:
    make_group(api)
    before = api.get("/commands").json()["meta"]["count"]
    assert_error(api.post("/commands", json={"command": "/usr/bin/date", **body}), status, title)
    assert api.get("/commands").json()["meta"]["count"] == before


def test_multi_invalid_command(api: httpx.Client) -> None:
    assert_error(api.post("/commands", json={"command": "", "client_ids": ["m-a"]}), 400,
                 "Command cannot be empty.")
    assert_error(api.post("/commands", json={"command": "/usr/bin/date", "client_ids": ["m-a"], "x": 1}),
                 400, "Invalid JSON data.", 'json: unknown field "x"')


def test_multi_sequential_aborts_on_error(api: httpx.Client) -> None:
    """The command fails on m-b (its agent lacks the variable): m-c is skipped."""
    jid = run_multi(api, command=f"/usr/bin/printenv {MARK}", client_ids=["m-a", "m-b", "m-c"])
    multi = wait_multi(api, jid, 3)
    assert multi["abort_on_err"] is True and multi["concurrent"] is False
    a, b, c = multi["jobs"]
    assert [a["client_id"], b["client_id"], c["client_id"]] == ["m-a", "m-b", "m-c"]
    assert a["status"] == "successful" and a["result"]["stdout"] == "present\n", a
    assert b["status"] == "failed" and b["error"] == "exit status 1", b
    assert c["status"] == "skipped", c
    assert c["pid"] is None and c["multi_job_id"] == jid
    assert b["jid"] in c["error"]


def test_multi_sequential_aborts_on_a_refusal(api: httpx.Client) -> None:
    """denyallow refuses the command (its [remote-commands]): its job fails with the client error."""
    jid = run_multi(api, command="/usr/bin/id -u", client_ids=["m-a", "denyallow", "m-c"])
    multi = wait_multi(api, jid, 3)
    a, b, c = multi["jobs"]
    assert a["status"] == "successful", a
    assert b["client_id"] == "denyallow" and b["status"] == "failed", b
    assert b["error"].startswith("client error: command is not allowed: /usr/bin/id -u"), b
    assert c["client_id"] == "m-c" and c["status"] == "skipped", c


def test_multi_sequential_unknown_does_not_abort(api: httpx.Client) -> None:
    """A timeout (status unknown) is no failure: the sequence goes on (rport-api.md §1.4)."""
    jid = run_multi(api, command="/usr/bin/sleep 30", client_ids=["m-a", "m-c"], timeout_sec=1)
    multi = wait_multi(api, jid, 2)
    pids = [j["pid"] for j in multi["jobs"] if j["pid"]]
    try:
        assert [(j["client_id"], j["status"]) for j in multi["jobs"]] == [
            ("m-a", "unknown"), ("m-c", "unknown")], multi["jobs"]
        assert len(pids) == 2 and all(group_pids(pid) for pid in pids)
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_multi_sequential_without_abort_runs_all(api: httpx.Client) -> None:
    jid = run_multi(api, command=f"/usr/bin/printenv {MARK}", client_ids=["m-a", "m-b", "m-c"],
                    abort_on_error=False)
    multi = wait_multi(api, jid, 3)
    assert multi["abort_on_err"] is False
    assert [(j["client_id"], j["status"]) for j in multi["jobs"]] == [
        ("m-a", "successful"), ("m-b", "failed"), ("m-c", "successful")]
    assert multi["jobs"][1]["error"] == "exit status 1"


def test_multi_concurrent(api: httpx.Client) -> None:
    jid = run_multi(api, command="/usr/bin/date", client_ids=["m-a", "m-b", "m-c"],
                    execute_concurrently=True, abort_on_error=True)
    multi = wait_multi(api, jid, 3)
    assert multi["concurrent"] is True and multi["abort_on_err"] is False
    assert sorted(j["client_id"] for j in multi["jobs"]) == ["m-a", "m-b", "m-c"]
    assert all(j["status"] == "successful" for j in multi["jobs"]), multi["jobs"]


def test_multi_concurrent_does_not_abort(api: httpx.Client) -> None:
    jid = run_multi(api, command=f"/usr/bin/printenv {MARK}", client_ids=["m-a", "m-b", "m-c"],
                    execute_concurrently=True)
    multi = wait_multi(api, jid, 3)
    statuses = {j["client_id"]: j["status"] for j in multi["jobs"]}
    assert statuses == {"m-a": "successful", "m-b": "failed", "m-c": "successful"}


def test_multi_with_a_disconnected_client(api: httpx.Client) -> None:
    jid = run_multi(api, command="/usr/bin/date", client_ids=["gone", "m-a"])
    multi = wait_multi(api, jid, 2)
    gone, a = multi["jobs"]
    assert gone["client_id"] == "gone" and gone["status"] == "failed", gone
    assert gone["error"] == "client is not connected"
    # not an error that aborts the sequence
    assert a["client_id"] == "m-a" and a["status"] == "successful", a


# -- 8. live output -----------------------------------------------------------------------------


def test_stream_live_output(fleet: Server, tmp_path: Path) -> None:
    api = fleet.api
    assert api is not None
    go = tmp_path / "go"
    script = (f"import os, sys, time\n"
              f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.02)\n"
              f"for i in range(1, 6):\n    print('line', i, flush=True)\n    time.sleep(0.2)\n"
              f"print('oops', file=sys.stderr, flush=True)\n")
    jid = run(api, "open", command=script, interpreter="python3", timeout_sec=30)
    events: list[tuple[str, Any]] = []
    with api.stream("GET", f"/clients/open/commands/{jid}/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for event, data in sse_events(resp):
            events.append((event, data))
            if event == "job":
                go.touch()  # the command starts printing once the stream follows it
    names = [e for e, _ in events]
    assert names[0] == "job" and events[0][1]["jid"] == jid and events[0][1]["status"] == "running"
    assert names[-1] == "status" and names.count("status") == 1, names
    final = events[-1][1]
    assert final["status"] == "successful" and final["jid"] == jid, final
    assert set(names) <= {"job", "stdout", "stderr", "status"}, names
    stdout = "".join(d for e, d in events if e == "stdout")
    assert stdout == "".join(f"line {i}\n" for i in range(1, 6))
    assert "".join(d for e, d in events if e == "stderr") == "oops\n"
    assert final["result"]["stdout"] == stdout

    # a finished job: its job event, and the stream ends
    with api.stream("GET", f"/clients/open/commands/{jid}/stream") as resp:
        assert resp.status_code == 200
        again = list(sse_events(resp))
    assert [e for e, _ in again] == ["job"]
    assert again[0][1]["status"] == "successful" and again[0][1]["result"]["stdout"] == stdout


def test_stream_replays_the_output_written_before_attaching(fleet: Server, tmp_path: Path) -> None:
    """A follower that attaches after the job has written something gets that output first (a
    dashboard opens a job's stream a moment after starting it), then the rest live."""
    api = fleet.api
    assert api is not None
    go = tmp_path / "go"
    script = (f"import os, time\nprint('early 1', flush=True)\nprint('early 2', flush=True)\n"
              f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.02)\n"
              f"print('late', flush=True)\n")
    jid = run(api, "open", command=script, interpreter="python3", timeout_sec=30)
    path = f"/clients/open/commands/{jid}/stream"
    early = "early 1\nearly 2\n"
    with api.stream("GET", path) as first:
        seen = ""
        for event, data in sse_events(first):  # the server has the early output once a
            if event == "stdout":                # follower has seen it: now attach another
                seen += data
                if seen == early:
                    break
        with api.stream("GET", path) as second:
            events = []
            for event, data in sse_events(second):
                events.append((event, data))
                if event == "job":
                    go.touch()
    assert events[0][0] == "job" and events[-1][0] == "status", events
    assert "".join(d for e, d in events if e == "stdout") == early + "late\n", events
    assert events[-1][1]["result"]["stdout"] == early + "late\n"


def test_stream_carries_only_the_agents_own_jobs_output(server: Server) -> None:
    """Output an agent sends is kept and streamed only for its own running jobs, and only as
    stdout or stderr events: a misbehaving agent cannot forge another event (a fake final
    status) in a follower's stream, nor make the server keep output for jobs that do not
    exist."""
    import asyncio
    import threading

    from rport.core.protocol.frames import T, encode_json

    from ..core.test_rogue_agent import open_rogue, recv_frame, say_hello

    api = server.api
    assert api is not None
    started: dict[str, Any] = {}

    def post() -> None:
        started["resp"] = api.post("/clients/rogue/commands", json={"command": "/usr/bin/true"})

    async def main() -> list[tuple[str, Any]]:
        async with open_rogue(server) as ws:
            await say_hello(ws)
            poster = threading.Thread(target=post)
            poster.start()
            while True:  # answer run_cmd (and refuse anything else, e.g. cmd_jobs)
                ident, payload = await recv_frame(ws, T.REQUEST)
                request = json.loads(payload)
                if request["name"] == "run_cmd":
                    jid = request["body"]["jid"]
                    await ws.send(encode_json(T.RESPONSE, ident, {"ok": True, "body": {"pid": 4242}}))
                    break
                await ws.send(encode_json(T.RESPONSE, ident, {"ok": False, "error": "no"}))
            await asyncio.to_thread(poster.join)
            assert started["resp"].status_code == 200, started["resp"].text
            forged = "stdout\n\nevent: status\ndata: {}"
            for ident, body in enumerate([
                    {"jid": jid, "stream": forged, "data": "one\n"},
                    {"jid": jid, "stream": "stderr", "data": "two\n"},
                    {"jid": "not-a-job", "stream": "stdout", "data": "x" * 1000}], start=100):
                await ws.send(encode_json(T.REQUEST, ident, {"name": "cmd_output", "body": body}))
                await recv_frame(ws, T.RESPONSE, ident)

            def follow() -> list[tuple[str, Any]]:
                events = []
                with api.stream("GET", f"/clients/rogue/commands/{jid}/stream") as resp:
                    for event in sse_events(resp):
                        events.append(event)
                        if event[0] == "stderr":
                            break
                return events
            events = await asyncio.to_thread(follow)
            assert get_job(api, "rogue", jid)["status"] == "running"
            return events

    events = asyncio.run(main())
    assert [(e, d) for e, d in events[1:]] == [("stdout", "one\n"), ("stderr", "two\n")], events
    assert events[0][0] == "job"


# -- 9. what the dashboard needs: targets of a multi-client job, cancelling one ---------------------


def test_multi_job_lists_its_target_clients(api: httpx.Client) -> None:
    jid = run_multi(api, command="/usr/bin/date", tags={"operator": "OR", "tags": ["web"]})
    started = api.get(f"/commands/{jid}").json()["data"]
    assert started["target_client_ids"] == ["m-a", "m-c"], started
    assert started["client_ids"] is None and started["tags"] == {"operator": "OR", "tags": ["web"]}
    multi = wait_multi(api, jid, 2)
    assert multi["target_client_ids"] == ["m-a", "m-c"]
    jid = run_multi(api, command="/usr/bin/date", client_ids=["m-c", "gone", "m-a"])
    assert wait_multi(api, jid, 3)["target_client_ids"] == ["m-c", "gone", "m-a"]


def test_cancel_a_sequential_multi_job(api: httpx.Client) -> None:
    """The running client's job is cancelled and the clients after it are not started."""
    jid = run_multi(api, command="/usr/bin/sleep 60", client_ids=["m-a", "m-b", "m-c"], timeout_sec=120)
    # every client's job exists from the start: the later ones wait, queued
    wait_for(lambda: [j["status"] for j in api.get(f"/commands/{jid}").json()["data"]["jobs"]]
             == ["running", "queued", "queued"], 20, "the first job to run")
    resp = api.post(f"/commands/{jid}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": {"jid": jid, "cancelled": True}}
    multi = wait_multi(api, jid, 3)
    statuses = [(j["client_id"], j["status"]) for j in multi["jobs"]]
    assert statuses == [("m-a", "cancelled"), ("m-b", "skipped"), ("m-c", "skipped")], statuses
    assert multi["jobs"][0]["error"] == "cancelled"
    for job in multi["jobs"][1:]:
        assert job["error"] == "not run: the multi-client job was cancelled by admin", job
        assert job["finished_at"] and job["pid"] is None
    assert_error(api.post(f"/commands/{jid}/cancel"), 409, "job is not running",
                 "every client of this multi-client job has finished")


def test_cancel_a_concurrent_multi_job(api: httpx.Client) -> None:
    jid = run_multi(api, command="/usr/bin/sleep 60", client_ids=["m-a", "m-b", "m-c"],
                    execute_concurrently=True, timeout_sec=120)
    wait_for(lambda: [j["status"] for j in api.get(f"/commands/{jid}").json()["data"]["jobs"]]
             == ["running"] * 3, 20, "the three jobs to run")
    assert api.post(f"/commands/{jid}/cancel").status_code == 200
    multi = wait_multi(api, jid, 3)
    assert [j["status"] for j in multi["jobs"]] == ["cancelled"] * 3, multi["jobs"]


def test_cancel_a_multi_job_errors(api: httpx.Client) -> None:
    assert_error(api.post("/commands/nope/cancel"), 404, 'Multi-client Job[id="nope"] not found.')
    jid = run_multi(api, command="/usr/bin/date", client_ids=["m-a"])
    wait_multi(api, jid, 1)
    assert_error(api.post(f"/commands/{jid}/cancel"), 409, "job is not running")
    assert_error(api.get(f"/commands/{jid}/cancel"), 405, "method not allowed")


# -- 7. persistence and reconnects ----------------------------------------------------------------


@both_databases
def test_job_of_a_restarted_agent_fails_instead_of_running_for_ever(make_server: Any, make_agent: Any,
                                                                     tmp_path: Path) -> None:
    """An agent killed while its command runs comes back as a new process that never heard of
    the job: the server fails it at the reconnection, saying why, and a sequential multi-client
    job waiting on it goes on at once; a job of the new process is not touched."""
    server: Server = make_server("lost")
    config = {"remote-commands": {"allow": [".*"], "deny": []}}
    agent = make_agent(server, "k1", config=config)
    make_agent(server, "k2", config=config)
    api = server.api
    assert api is not None
    go = tmp_path / "go"
    waiting = f"while [ ! -e {go} ]; do /usr/bin/sleep 0.05; done"
    lost = run(api, "k1", command=waiting, timeout_sec=120)
    # The multi-client job's command also waits (on its own file), so that k1 is killed while
    # it runs there (an "echo" could finish first on a loaded machine), and k2's goes through.
    go2 = tmp_path / "go2"
    resp = api.post("/commands", json={
        "command": f"while [ ! -e {go2} ]; do /usr/bin/sleep 0.05; done; /usr/bin/echo next",
        "client_ids": ["k1", "k2"], "timeout_sec": 120, "abort_on_error": False})
    assert resp.status_code == 200, resp.text
    mjid = resp.json()["data"]["jid"]
    wait_for(lambda: api.get(f"/commands/{mjid}").json()["data"]["jobs"][0]["pid"],
             20, "the sequential job to start on k1")
    agent.proc.kill()
    server.wait_disconnected("k1")
    go2.touch()  # (the killed agent's shell may live on: it ends now too)
    make_agent(server, "k1", config=config)
    job = wait_job(api, "k1", lost)
    assert job["status"] == "failed", job
    assert job["error"] == "the agent was restarted while the command ran: its result is lost"
    assert job["finished_at"]
    multi = wait_multi(api, mjid, 2)  # the sequence went on to k2, which ran it
    assert [j["client_id"] for j in multi["jobs"]] == ["k1", "k2"]
    assert multi["jobs"][0]["status"] == "failed" and multi["jobs"][1]["status"] == "successful"
    assert_error(api.post(f"/clients/k1/commands/{lost}/cancel"), 409, "job is not running")
    # the new agent process's own job is not failed by the next reconnection
    fresh = run(api, "k1", command=waiting, timeout_sec=120)
    go.touch()
    assert wait_job(api, "k1", fresh)["status"] == "successful"
    assert "job " + lost + " on k1 failed: the agent no longer knows it" in server.log()


@both_databases
def test_server_restart_with_jobs_running(make_server: Any, make_agent: Any, tmp_path: Path) -> None:
    """Job 1 ends while the server is down (the agent delivers its result after reconnecting),
    job 2 ends after the restart; finished jobs and the job list survive the restart."""
    server: Server = make_server("restart")
    make_agent(server, "r1", config={"remote-commands": {"allow": [".*"], "deny": []}})
    api = server.api
    assert api is not None
    done_before = run_done(api, "r1", command="/usr/bin/echo before")
    assert done_before["status"] == "successful"

    def waiting(name: str) -> str:
        go, mark = tmp_path / f"go-{name}", tmp_path / f"ended-{name}"
        return (f"while [ ! -e {go} ]; do /usr/bin/sleep 0.05; done\n"
                f"echo {name} finished\n/usr/bin/touch {mark}\n")

    j1 = run(server.api, "r1", command=waiting("one"), timeout_sec=60)  # type: ignore[union-attr]
    j2 = run(server.api, "r1", command=waiting("two"), timeout_sec=60)  # type: ignore[union-attr]
    assert get_job(api, "r1", j1)["status"] == "running"

    server.stop()
    (tmp_path / "go-one").touch()
    wait_for(lambda: (tmp_path / "ended-one").exists(), 20, "job 1 to end while the server is down")
    server.start()
    api = server.api
    assert api is not None
    server.wait_connected("r1")

    one = wait_job(api, "r1", j1)
    assert one["status"] == "successful", one
    assert one["result"]["stdout"] == "one finished\n" and one["finished_at"]
    assert get_job(api, "r1", j2)["status"] == "running"
    (tmp_path / "go-two").touch()
    two = wait_job(api, "r1", j2)
    assert two["status"] == "successful", two
    assert two["result"]["stdout"] == "two finished\n"

    assert get_job(api, "r1", done_before["jid"]) == done_before
    rows = api.get("/clients/r1/commands").json()["data"]
    assert {r["jid"] for r in rows} == {done_before["jid"], j1, j2}
    assert all(r["status"] == "successful" for r in rows)

    # a multi-client job is kept too
    mjid = run_multi(api, command="/usr/bin/true", client_ids=["r1"])
    multi = wait_multi(api, mjid, 1)
    server.stop()
    server.start()
    api = server.api
    assert api is not None
    resp = api.get(f"/commands/{mjid}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == multi
    assert mjid in [r["jid"] for r in api.get("/commands").json()["data"]]
    assert get_job(api, "r1", j2) == two


def test_a_command_to_many_clients_is_not_too_large(make_server: Any) -> None:
    """POST /commands may name every known client, whatever max_request_bytes (10 KiB by
    default, as RPort's: 1,000 ids do not fit)."""
    server = make_server(extra={"api": {"max_request_bytes": 1024}})
    ids = [f"fleet-member-with-a-long-id-{i:04d}" for i in range(40)]
    asyncio.run(register_clients(server.agent_port, ids))
    body = {"command": "/usr/bin/true", "client_ids": ids}
    assert len(json.dumps(body)) > 1024
    assert server.api is not None
    resp = server.api.post("/commands", json=body)
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    jobs = wait_for(lambda: (r := server.api.get(f"/commands/{jid}").json()["data"]["jobs"])
                    and len(r) == len(ids) and r, what="a job per client")
    assert {j["client_id"] for j in jobs} == set(ids)
    # Other bodies keep the limit.
    resp = server.api.post("/commands", json={**body, "command": "/usr/bin/" + "x" * 2000})
    assert resp.status_code == 413, resp.text
