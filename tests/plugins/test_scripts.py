"""End to end: scripts (plugin scripts) with a real rportd and real agents running real scripts:
RPort's ``POST /clients/{id}/scripts`` and ``POST /scripts`` (base64 scripts, interpreters and
``[interpreter-aliases]``, a ``#!`` line, cwd), the jobs they make (read with the commands
routes, ``is_script`` true), sequential and concurrent runs on many clients, and the agent's
``[remote-scripts]`` (off by default: RPort's refusal), which is not subject to the
``[remote-commands]`` allow/deny of command lines.
"""

from __future__ import annotations

import base64
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..procs import PY, Agent, Proc, Server, running, write_toml
from .test_commands import assert_error, get_job, wait_job, wait_multi

SCRIPTS_ON = {"remote-scripts": {"enabled": True},
              "interpreter-aliases": {"py": sys.executable, "shell": ["/bin/sh", "utf-8", "utf-8"]}}
FLEET = {
    "s-on": SCRIPTS_ON,   # the default [remote-commands]: only full paths, no ; | & ...
    "s-on2": SCRIPTS_ON,
    "s-off": {},          # RPort's default: [remote-scripts] enabled = false
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("scripts")
    server = Server(root / "server").start()
    agents = [Agent(root / f"agent-{cid}", server, cid, config=conf) for cid, conf in FLEET.items()]
    server.scripts_root = root  # type: ignore[attr-defined]
    with running(server, agents):
        yield server


@pytest.fixture
def api(fleet: Server) -> httpx.Client:
    assert fleet.api is not None
    return fleet.api


def run_script(api: httpx.Client, client_id: str, script: str, **options: Any) -> str:
    resp = api.post(f"/clients/{client_id}/scripts", json={"script": b64(script), **options})
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(data) == {"jid"}, data
    return data["jid"]


def run_done(api: httpx.Client, client_id: str, script: str, **options: Any) -> dict[str, Any]:
    return wait_job(api, client_id, run_script(api, client_id, script, **options))


def test_a_script_on_one_client(api: httpx.Client, fleet: Server) -> None:
    # pipes, ; and & are what [remote-commands]' default deny refuses in a command line: a
    # script is not a command line and runs anyway (RPort: scripts bypass allow/deny)
    script = "echo one; echo two | tr a-z A-Z\nprintf '<summary>all good</summary>' && echo err >&2\n"
    job = run_done(api, "s-on", script, timeout_sec=20)
    assert job["status"] == "successful", job
    assert job["is_script"] is True
    assert job["command"] == script  # the decoded script, as RPort stores it
    assert job["interpreter"] == "/bin/sh" and job["timeout_sec"] == 20
    assert job["result"]["stdout"] == "one\nTWO\n<summary>all good</summary>"
    assert job["result"]["stderr"] == "err\n"
    assert job["result"]["summary"] == "all good"
    assert job["created_by"] == "admin" and job["client_id"] == "s-on"
    # listed with the client's commands, and the script file is gone from the agent
    jobs = api.get("/clients/s-on/commands", params={"fields[jobs]": "jid,is_script"}).json()["data"]
    assert {"jid": job["jid"], "is_script": True} in jobs
    scripts_dir = fleet.scripts_root / "agent-s-on" / "data" / "scripts"  # type: ignore[attr-defined]
    assert scripts_dir.is_dir() and list(scripts_dir.iterdir()) == []


def test_a_failing_script(api: httpx.Client) -> None:
    job = run_done(api, "s-on", "echo before\nexit 3\n")
    assert job["status"] == "failed" and job["error"] == "exit status 3", job
    assert job["result"]["stdout"] == "before\n"


@pytest.mark.parametrize("interpreter, script, expected", [
    ("bash", 'echo "bash ${BASH_VERSINFO[0]}"', "bash "),
    ("python3", "import sys\nprint('python', sys.version_info[0])", "python 3"),
    ("py", "import sys\nprint('alias', sys.version_info[0])", "alias 3"),  # [interpreter-aliases]
    ("shell", "echo alias with encodings", "alias with encodings"),
    (sys.executable, "print('absolute path')", "absolute path"),
    ("", f"#!{sys.executable}\nprint('shebang')", "shebang"),
])
def test_interpreters(api: httpx.Client, interpreter: str, script: str, expected: str) -> None:
    if interpreter == "bash" and not shutil.which("bash"):
        pytest.skip("no bash")
    job = run_done(api, "s-on", script, interpreter=interpreter)
    assert job["status"] == "successful", job
    assert job["result"]["stdout"].startswith(expected), job
    assert job["interpreter"] == (interpreter or "/bin/sh")


def test_cwd(api: httpx.Client, tmp_path: Path) -> None:
    job = run_done(api, "s-on", "pwd", cwd=str(tmp_path))
    assert job["result"]["stdout"] == f"{tmp_path}\n", job


def test_an_interpreter_the_client_lacks_is_409(api: httpx.Client) -> None:
    resp = api.post("/clients/s-on/scripts", json={"script": b64("x"), "interpreter": "tacoscript"})
    assert_error(resp, 409, 'client error: interpreter "tacoscript" not found on this client')


def test_scripts_disabled_on_the_agent(api: httpx.Client) -> None:
    before = len(api.get("/clients/s-off/commands").json()["data"])
    resp = api.post("/clients/s-off/scripts", json={"script": b64("echo hi")})
    assert_error(resp, 409, "client error: remote scripts are disabled on this client "
                            "([remote-scripts] enabled = false)")
    assert len(api.get("/clients/s-off/commands").json()["data"]) == before  # no job kept
    # commands still run there: only scripts are off
    resp = api.post("/clients/s-off/commands", json={"command": "/usr/bin/true"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("body, title, detail", [
    ({}, "Missing script body", None),
    ({"script": ""}, "Missing script body", None),
    ({"script": b64("   \n")}, "Missing script body", None),
    ({"script": "not base64!"}, "failed to decode script payload from base64", None),
    ({"script": base64.b64encode(b"\xff\xfe").decode()}, "failed to decode script payload from base64",
     "not UTF-8"),
    ({"script": 42}, "Invalid JSON data.", "script must be a string"),
    ({"script": b64("x"), "command": "x"}, "Invalid JSON data.", 'unknown field "command"'),
    ({"script": b64("x"), "timeout_sec": "10"}, "Invalid JSON data.", "timeout_sec"),
    ({"script": b64("x"), "interpreter": "bash; rm"}, "Invalid interpreter.", None),
])
def test_invalid_requests_are_400(api: httpx.Client, body: dict[str, Any], title: str,
                                  detail: str | None) -> None:
    assert_error(api.post("/clients/s-on/scripts", json=body), 400, title, detail)
    assert_error(api.post("/scripts", json={**body, "client_ids": ["s-on"]}), 400, title, detail)


def test_base64_with_line_breaks_and_unknown_clients(api: httpx.Client) -> None:
    script = "echo " + "x" * 100
    wrapped = "\n".join(b64(script)[i:i + 76] for i in range(0, len(b64(script)), 76))
    resp = api.post("/clients/s-on/scripts", json={"script": wrapped})
    assert resp.status_code == 200, resp.text
    assert wait_job(api, "s-on", resp.json()["data"]["jid"])["result"]["stdout"] == "x" * 100 + "\n"
    assert_error(api.post("/clients/nope/scripts", json={"script": b64("x")}), 404,
                 'Active client with id="nope" not found.')


@pytest.mark.parametrize("concurrent", [False, True])
def test_a_script_on_many_clients(api: httpx.Client, concurrent: bool) -> None:
    resp = api.post("/scripts", json={"script": b64('echo "on $(hostname) ok"'),
                                      "client_ids": ["s-on", "s-on2"], "timeout_sec": 30,
                                      "execute_concurrently": concurrent})
    assert resp.status_code == 200, resp.text
    multi = wait_multi(api, resp.json()["data"]["jid"], 2)
    assert multi["is_script"] is True and multi["concurrent"] is concurrent
    assert multi["command"] == 'echo "on $(hostname) ok"' and multi["created_by"] == "admin"
    jobs = {j["client_id"]: j for j in multi["jobs"]}
    assert set(jobs) == {"s-on", "s-on2"}
    for job in jobs.values():
        assert job["status"] == "successful" and job["is_script"] is True, job
        assert job["result"]["stdout"].endswith(" ok\n")
        assert job["multi_job_id"] == multi["jid"]
        assert get_job(api, job["client_id"], job["jid"])["is_script"] is True


def test_many_clients_sequential_aborts_on_error_and_a_disabled_client_fails(api: httpx.Client) -> None:
    resp = api.post("/scripts", json={"script": b64("exit 4"), "client_ids": ["s-on", "s-on2"]})
    multi = wait_multi(api, resp.json()["data"]["jid"], 2)
    statuses = [(j["client_id"], j["status"]) for j in multi["jobs"]]
    assert statuses == [("s-on", "failed"), ("s-on2", "skipped")], multi["jobs"]

    resp = api.post("/scripts", json={"script": b64("echo hi"), "client_ids": ["s-off", "s-on"],
                                      "abort_on_error": False})
    multi = wait_multi(api, resp.json()["data"]["jid"], 2)
    jobs = {j["client_id"]: j for j in multi["jobs"]}
    assert jobs["s-off"]["status"] == "failed"
    assert "remote scripts are disabled" in jobs["s-off"]["error"]
    assert jobs["s-on"]["status"] == "successful"


def test_multi_by_tags_needs_existing_targets(api: httpx.Client) -> None:
    assert_error(api.post("/scripts", json={"script": b64("x")}), 400, "Missing targeting parameters.")
    assert_error(api.post("/scripts", json={"script": b64("x"), "client_ids": ["nope"]}), 404,
                 'Client with id="nope" not found.')


def test_routes_in_the_openapi_document(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/clients/{client_id}/scripts", "/api/v1/scripts"):
        op = paths[path]["post"]
        assert op["x-rport-permission"] == "scripts"
        assert op["requestBody"]["content"]["application/json"]["schema"]["required"] == ["script"]
        assert {"200", "400", "404"} <= set(op["responses"])


def test_scripts_enabled_with_commands_disabled_is_a_configuration_error(tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:1", "auth": "a:b", "id": "x", "data_dir": str(tmp_path / "d")},
        "remote-commands": {"enabled": False}, "remote-scripts": {"enabled": True},
        "interpreter-aliases": {"bad": 3}})
    proc = Proc([PY, "-m", "rport.agent.cli", "-c", str(conf)], tmp_path / "rport.log")
    assert proc.proc.wait(30) == 2
    log = proc.log()
    assert "remote-scripts.enabled: remote scripts execution requires remote commands to be enabled" in log
    assert "interpreter-aliases.bad: must be an interpreter's path" in log
    proc.stop()
