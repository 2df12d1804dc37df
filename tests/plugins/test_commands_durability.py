"""Commands that survive what can happen to rportd and the agents while they run: rportd killed
(SIGKILL) right after it answered ``POST /commands``; clients that do not come back after such a
restart; the connection breaking after the command went out but before the agent answered; an
agent killed mid-job (its process orphaned) or after its command finished but before the server
had the result.

Real ``rportd`` and ``rport`` processes (and, for the broken connection, a scripted agent
speaking the protocol, which the test makes drop the connection at the exact moment); every
wait is on a condition, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from rport.core.keys import client_ssl_context
from rport.core.protocol.frames import T, decode, decode_json_object, encode_json
from websockets.asyncio.client import ClientConnection, connect

from ..procs import Agent, Server, wait_for
from ..services import both_databases
from .test_commands import FINAL, get_job, run, wait_job, wait_multi

OPEN = {"remote-commands": {"allow": [".*"], "deny": []}}
TIMEOUT = 20.0
LOST = ("the agent did not confirm the command and, reconnected, does not know it: it did not "
        "receive it, or it was restarted")


@both_databases
def test_multi_jobs_go_on_after_rportd_is_killed_right_after_answering(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """Two multi-client jobs (concurrent, then sequential), rportd killed (SIGKILL) as soon as
    the second is answered: every job of both exists after the restart and every command runs
    exactly once on each client (the sequence in its order)."""
    server = make_server("killed")
    ids = ["d1", "d2", "d3"]
    for cid in ids:
        make_agent(server, cid, config=OPEN, env={"WHO": cid})
    api = server.api
    assert api is not None
    fan, seq, go = tmp_path / "fan.txt", tmp_path / "seq.txt", tmp_path / "go"
    concurrent = api.post("/commands", json={
        "command": f"echo $WHO >> {fan}", "client_ids": ids, "execute_concurrently": True})
    sequential = api.post("/commands", json={
        "command": f"while [ ! -e {go} ]; do /usr/bin/sleep 0.05; done; echo $WHO >> {seq}",
        "client_ids": ids, "timeout_sec": 60})
    server.stop(signal.SIGKILL)
    assert concurrent.status_code == 200 and sequential.status_code == 200, sequential.text
    fan_jid, seq_jid = concurrent.json()["data"]["jid"], sequential.json()["data"]["jid"]
    server.start()
    api = server.api
    assert api is not None
    # Both exist with a job per client at once, whatever ran before the kill.
    for jid in (fan_jid, seq_jid):
        jobs = api.get(f"/commands/{jid}").json()["data"]["jobs"]
        assert [j["client_id"] for j in jobs] == ids, jobs
    go.touch()
    for jid in (fan_jid, seq_jid):
        multi = wait_multi(api, jid, 3)
        assert [(j["client_id"], j["status"]) for j in multi["jobs"]] == \
            [(cid, "successful") for cid in ids], multi["jobs"]
    assert sorted(fan.read_text().split()) == ids  # each once
    assert seq.read_text().split() == ids  # once each, in the sequence's order
    assert "goes on after the restart" in server.log()


def test_queued_jobs_of_a_client_that_does_not_come_back_fail_saying_why(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """After a restart a queued job waits ``resume_wait`` for its client, then fails with the
    reason; the clients that did come back run theirs."""
    server = make_server("gone", extra={"plugins.commands": {"resume_wait": "1s"}})
    back = make_agent(server, "back", config=OPEN)
    gone = make_agent(server, "gone", config=OPEN)
    api = server.api
    assert api is not None
    go = tmp_path / "go"
    # The sequence waits on "back" (first), so "gone" is still queued when rportd dies.
    resp = api.post("/commands", json={
        "command": f"while [ ! -e {go} ]; do /usr/bin/sleep 0.05; done", "timeout_sec": 60,
        "client_ids": ["back", "gone"], "abort_on_error": True})
    assert resp.status_code == 200, resp.text
    jid = resp.json()["data"]["jid"]
    wait_for(lambda: api.get(f"/commands/{jid}").json()["data"]["jobs"][0]["status"] == "running",
             TIMEOUT, "the first job to run")
    server.stop(signal.SIGKILL)
    gone.stop(signal.SIGKILL)
    server.start()
    go.touch()
    multi = wait_multi(server.api, jid, 2)  # type: ignore[arg-type]
    first, second = multi["jobs"]
    assert (first["client_id"], first["status"]) == ("back", "successful"), first
    assert (second["client_id"], second["status"]) == ("gone", "failed"), second
    assert second["error"] == ("client is not connected (rportd restarted before it sent the "
                               "command, and the client did not reconnect within 1s)")
    assert back.proc.alive()


# -- a connection broken between the command and the agent's answer ---------------------------


class ScriptedAgent:
    """An agent that speaks the protocol as the test says, one connection at a time, with the
    same session id (the same agent process, reconnecting)."""

    def __init__(self, server: Server, client_id: str) -> None:
        self.server, self.client_id = server, client_id
        self.ws: ClientConnection | None = None
        self.next_request = 1

    @contextlib.asynccontextmanager
    async def connection(self, process: str = "one-process") -> AsyncIterator[ClientConnection]:
        """A connection of agent process ``process`` (its session id)."""
        async with connect(f"wss://127.0.0.1:{self.server.agent_port}", ssl=client_ssl_context(),
                           subprotocols=["rport-py"], proxy=None, compression=None,
                           open_timeout=TIMEOUT, ping_interval=None) as ws:
            await ws.send(encode_json(T.HELLO, 0, {
                "protocols": [1], "version": "scripted", "auth": {"id": "user1", "password": "1234"},
                "client": {"id": self.client_id, "session_id": process}}))
            ftype, _, payload = decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert ftype is T.WELCOME, payload
            yield ws

    async def request(self, ws: ClientConnection, name: str) -> tuple[int, Any]:
        """The next request of ``name`` from the server (others are refused as unknown)."""
        while True:
            ftype, ident, payload = decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if ftype is not T.REQUEST:
                continue
            request = decode_json_object(ftype, payload, "name")
            if request["name"] == name:
                return ident, request.get("body")
            await ws.send(encode_json(T.RESPONSE, ident, {"ok": False, "error": "unknown request"}))

    async def ask(self, ws: ClientConnection, name: str, body: Any) -> Any:
        ident = self.next_request
        self.next_request += 2
        await ws.send(encode_json(T.REQUEST, ident, {"name": name, "body": body}))
        while True:
            ftype, got, payload = decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if ftype is T.RESPONSE and got == ident:
                return decode_json_object(ftype, payload, "ok")
            if ftype is T.REQUEST:
                await ws.send(encode_json(T.RESPONSE, got, {"ok": False, "error": "unknown request"}))


def test_a_command_left_without_an_answer_is_decided_by_the_agent(
        make_server: Callable[..., Server]) -> None:
    """The connection breaks after ``run_cmd`` went out, before the agent answered. The job is
    not failed on the spot (the command may be running): the agent, back on a new connection,
    says it knows the job and delivers its result, which counts. When the same agent process,
    back, does not know the job, the command never reached it: it is sent again, and runs.
    When a new agent process does not know it, the job fails saying so."""
    server = make_server("unanswered")
    api = server.api
    assert api is not None
    agent = ScriptedAgent(server, "scripted")

    def post() -> str:
        resp = api.post("/commands", json={"command": "/usr/bin/true", "client_ids": ["scripted"]})
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]["jid"]

    async def cmd_jobs(ws: ClientConnection, jids: list[str]) -> None:
        ident, _ = await agent.request(ws, "cmd_jobs")
        await ws.send(encode_json(T.RESPONSE, ident, {"ok": True, "body": {"jids": jids}}))

    async def result(ws: ClientConnection, jid: str, stdout: str) -> None:
        answer = await agent.ask(ws, "cmd_result", {
            "jid": jid, "status": "successful", "pid": 4242, "started_at": "2026-12-03T10:00:00Z",
            "finished_at": "2026-12-03T10:00:01Z", "error": "",
            "result": {"stdout": stdout, "stderr": "", "summary": ""}})
        assert answer["ok"] is True, answer

    async def dropped(ws_context: Any) -> tuple[str, str]:
        """A multi-job whose run_cmd arrives and is left unanswered as the connection drops."""
        async with ws_context as ws:
            await asyncio.to_thread(server.wait_connected, "scripted")
            multi_jid = await asyncio.to_thread(post)
            _, job = await agent.request(ws, "run_cmd")
        await asyncio.to_thread(server.wait_disconnected, "scripted")
        assert (await asyncio.to_thread(get_job, api, "scripted", job["jid"]))["status"] == "running"
        return multi_jid, job["jid"]

    async def main() -> None:
        # 1. The agent knows the job: its result counts.
        multi_jid, jid = await dropped(agent.connection())
        async with agent.connection() as ws:
            await cmd_jobs(ws, [jid])
            await result(ws, jid, "first\n")
            multi = await asyncio.to_thread(wait_multi, api, multi_jid, 1)
            assert multi["jobs"][0]["status"] == "successful", multi["jobs"]
            assert multi["jobs"][0]["result"]["stdout"] == "first\n"

        # 2. The same agent process does not know it: it never arrived; it comes again.
        multi_jid, jid = await dropped(agent.connection())
        async with agent.connection() as ws:
            await cmd_jobs(ws, [])
            ident, again = await agent.request(ws, "run_cmd")
            assert again["jid"] == jid
            await ws.send(encode_json(T.RESPONSE, ident, {"ok": True, "body": {
                "pid": 4243, "started_at": "2026-12-03T10:00:02Z", "error": ""}}))
            await result(ws, jid, "second\n")
            multi = await asyncio.to_thread(wait_multi, api, multi_jid, 1)
            assert multi["jobs"][0]["status"] == "successful", multi["jobs"]
            assert multi["jobs"][0]["result"]["stdout"] == "second\n"

        # 3. A new agent process does not know it: nobody can say what became of it.
        multi_jid, jid = await dropped(agent.connection())
        async with agent.connection("another-process") as ws:
            await cmd_jobs(ws, [])
            multi = await asyncio.to_thread(wait_multi, api, multi_jid, 1)
            lost = multi["jobs"][0]
            assert lost["status"] == "failed", lost
            assert lost["error"] == LOST

    asyncio.run(main())


# -- agents killed ------------------------------------------------------------------------------


def journaled(jobs: Path) -> str:
    """What the agent's journal of its jobs holds (its segments, in order)."""
    return "".join(p.read_text() for p in sorted(jobs.iterdir()))


def test_an_agent_killed_mid_job_leaves_no_script_and_no_false_failure(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """The agent is killed (SIGKILL) while its command runs: the agent started again removes the
    script left behind and reports the job ``unknown`` with the reason (the orphaned process may
    well finish fine: not ``failed``)."""
    server = make_server("agent-killed")
    agent = make_agent(server, "k1", config=OPEN)
    api = server.api
    assert api is not None
    go = tmp_path / "go"
    jid = run(api, "k1", command=f"while [ ! -e {go} ]; do /usr/bin/sleep 0.05; done",
              timeout_sec=60)
    pid = get_job(api, "k1", jid)["pid"]
    scripts = agent.workdir / "data" / "scripts"
    assert len(list(scripts.iterdir())) == 1
    agent.stop(signal.SIGKILL)
    server.wait_disconnected("k1")
    try:
        again = make_agent(server, "k1", config=OPEN, workdir=agent.workdir)
        job = wait_job(api, "k1", jid)
        assert job["status"] == "unknown", job
        assert job["error"] == (f"the agent was restarted while the command ran (pid {pid}); its "
                                "outcome and output are unknown")
        assert list(scripts.iterdir()) == []
        wait_for(lambda: journaled(agent.workdir / "data" / "jobs") == "", TIMEOUT,
                 "the delivered job to be forgotten")
        assert again.proc.alive()
    finally:
        go.touch()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_a_result_finished_while_rportd_was_down_survives_the_agent_being_killed(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """The command ends while rportd is down (the result cannot be delivered), then the agent is
    killed: the agent started again delivers the real result, not a failure."""
    server = make_server("result-kept")
    agent = make_agent(server, "r1", config=OPEN)
    api = server.api
    assert api is not None
    go, ended = tmp_path / "go", tmp_path / "ended"
    jid = run(api, "r1", command=f"while [ ! -e {go} ]; do /usr/bin/sleep 0.05; done\n"
                                 f"echo finished; /usr/bin/touch {ended}", timeout_sec=60)
    server.stop()
    go.touch()
    wait_for(lambda: ended.exists(), TIMEOUT, "the command to end while rportd is down")
    journal = agent.workdir / "data" / "jobs"
    wait_for(lambda: "finished" in journaled(journal), TIMEOUT, "the result in the agent's journal")
    agent.stop(signal.SIGKILL)
    server.start()
    make_agent(server, "r1", config=OPEN, workdir=agent.workdir)
    job = wait_job(server.api, "r1", jid)  # type: ignore[arg-type]
    assert job["status"] == "successful", job
    assert job["result"]["stdout"] == "finished\n"
    assert job["status"] in FINAL and json.loads(json.dumps(job)) == job
    wait_for(lambda: journaled(journal) == "", TIMEOUT, "the journal to be emptied")


def test_results_are_journaled_only_until_delivered(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    """In the normal course nothing stays in the agent's data directory."""
    server = make_server("journal")
    agent = make_agent(server, "j1", config=OPEN)
    api = server.api
    assert api is not None
    for _ in range(3):
        job = wait_job(api, "j1", run(api, "j1", command="/usr/bin/echo hi"))
        assert job["status"] == "successful"
    data = agent.workdir / "data"
    wait_for(lambda: journaled(data / "jobs") == "", TIMEOUT, "the journal to be emptied")
    assert len(list((data / "jobs").iterdir())) == 1  # the current segment, emptied
    assert list((data / "scripts").iterdir()) == []


# -- what a job leaves behind -------------------------------------------------------------------


def test_jobs_leave_no_descriptor_open(
        make_server: Callable[..., Server], make_agent: Callable[..., Agent]) -> None:
    """Forty commands at once, each writing to both streams: afterwards the agent holds the
    descriptors it held before (each pipe, pidfd and journal closed, once), and /dev/null is as
    it was (a descriptor closed twice once let a script's fchmod land on it)."""
    server = make_server("descriptors")
    agent = make_agent(server, "fd1", config=OPEN)
    api = server.api
    assert api is not None
    fds = Path(f"/proc/{agent.proc.pid}/fd")
    job = wait_job(api, "fd1", run(api, "fd1", command="/usr/bin/true"))  # first use: imports
    assert job["status"] == "successful"
    wait_for(lambda: journaled(agent.workdir / "data" / "jobs") == "", TIMEOUT, "an idle journal")
    before = len(list(fds.iterdir()))
    null_mode = os.stat("/dev/null").st_mode
    with ThreadPoolExecutor(8) as pool:
        jids = list(pool.map(lambda i: run(api, "fd1", command=f"echo out {i}; echo err {i} >&2"),
                             range(40)))
    for i, jid in enumerate(jids):
        job = wait_job(api, "fd1", jid)
        assert job["status"] == "successful", job
        assert (job["result"]["stdout"], job["result"]["stderr"]) == (f"out {i}\n", f"err {i}\n")
    wait_for(lambda: len(list(fds.iterdir())) == before, TIMEOUT,
             f"the agent's descriptors back to {before}")
    assert os.stat("/dev/null").st_mode == null_mode
