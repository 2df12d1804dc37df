"""commands, agent side: run the server's commands within ``[remote-commands]``, stream their
output, and deliver every result, also one finished while the server was unreachable.
Hook implementations only; see :mod:`.runner` and :mod:`.policy`."""

from __future__ import annotations

import asyncio
import codecs
import collections
import dataclasses
import json
import logging
from typing import Any, NamedTuple

from rport.agent.plugin import (
    ConfigError,
    RemoteError,
    SessionClosed,
    StreamRefused,
    hookimpl,
    structure_config,
)

from .config import RemoteCommandsConfig
from .policy import CommandPolicy, PolicyError
from .runner import Refused, Runner

_utf8 = codecs.getincrementaldecoder("utf-8")
NAME = "commands"
SECTION = "remote-commands"
log = logging.getLogger("rport.plugins.commands")


OUTPUT_DELAY = 0.05
"""Live output is sent this long after it was written (with what the job writes meanwhile), or
not at all if the job has ended by then: its result carries the whole output, and the server
gives it to whoever follows the job. A command that prints and exits at once (most of them)
then costs one message and its answer less on both sides."""
OUTPUT_HELD = 1 << 16
"""Live output of a job held back at most (characters): more is sent at once."""


class _Outbox:
    """Ordered messages to the server: live output (held back :data:`OUTPUT_DELAY`; dropped
    when the server is unreachable or the queue is full: the final result has it all) and
    results (kept until delivered)."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.on_delivered: Any = lambda jid: None
        """Told of each result the server has (or refused) by job id."""
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(512)
        self.undelivered: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self.pending: set[str] = set()  # jids whose result is queued or undelivered
        self.connected = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._held: dict[str, tuple[list[tuple[str, str]], asyncio.TimerHandle]] = {}
        """Live output not sent yet, by job: its chunks and the timer that sends them."""
        self._decoders: dict[tuple[str, str], Any] = {}
        self.task = asyncio.create_task(self._run())

    def output(self, jid: str, stream: str, data: bytes) -> None:
        # decoded as one text (a character may be cut between chunks): what is sent is the
        # start of the result's output, which the server relies on (see its LiveHub)
        decoder = self._decoders.get((jid, stream))
        if decoder is None:
            decoder = self._decoders[(jid, stream)] = _utf8(errors="replace")
        text = decoder.decode(data)
        if not text or not self.connected.is_set():
            return
        held = self._held.get(jid)
        if held is None:
            timer = asyncio.get_running_loop().call_later(OUTPUT_DELAY, self._send_output, jid)
            held = self._held[jid] = ([], timer)
        chunks = held[0]
        if chunks and chunks[-1][0] == stream:
            chunks[-1] = (stream, chunks[-1][1] + text)
        else:
            chunks.append((stream, text))
        if sum(len(t) for _, t in chunks) >= OUTPUT_HELD:
            self._send_output(jid)

    def _send_output(self, jid: str) -> None:
        held = self._held.pop(jid, None)
        if held is None:
            return
        held[1].cancel()
        for stream, text in held[0]:
            try:
                self.queue.put_nowait(("cmd_output", {"jid": jid, "stream": stream, "data": text}))
            except asyncio.QueueFull:
                pass  # live followers miss this chunk; the result keeps it

    async def result(self, result: dict[str, Any]) -> None:
        jid = str(result.get("jid"))
        self._decoders.pop((jid, "stdout"), None)
        self._decoders.pop((jid, "stderr"), None)
        held = self._held.pop(jid, None)
        if held is not None:  # the result has it: the server gives it to the job's followers
            held[1].cancel()
        self.pending.add(jid)
        await self.queue.put(("cmd_result", result))

    async def _run(self) -> None:
        while True:
            name, body = await self.queue.get()
            if name == "cmd_result":
                self.undelivered.append(body)
                await self.flush()
            elif self.connected.is_set() and self.agent.session is not None:
                try:
                    await self.agent.session.request(name, body)
                except (SessionClosed, RemoteError, TimeoutError):
                    pass

    async def flush(self) -> None:
        async with self._flushing:
            while self.undelivered and self.agent.session is not None:
                body = self.undelivered[0]
                try:
                    await self._send_result(body)
                except (SessionClosed, TimeoutError):
                    return  # delivered after the next reconnection
                except (RemoteError, StreamRefused) as exc:
                    log.error("the server rejected the result of job %s: %s", body.get("jid"), exc)
                self.undelivered.popleft()
                if not any(b.get("jid") == body.get("jid") for b in self.undelivered):
                    self.pending.discard(str(body.get("jid")))
                self.on_delivered(str(body.get("jid")))

    async def _send_result(self, body: dict[str, Any]) -> None:
        """A small result goes as one request. A result can hold up to send_back_limit bytes of
        each output: a large one goes over a flow-controlled stream, not as one message the
        server's size limit would refuse."""
        session = self.agent.session
        if session is None:
            raise SessionClosed("not connected")
        result = body.get("result") or {}
        text = sum(len(str(result.get(k) or "")) for k in ("stdout", "stderr", "summary"))
        # 12 bytes of JSON at most per character (a surrogate pair's escapes), and room for the
        # rest: within the frames the server accepts (at most 64 KiB, see Limits.max_frame)
        if 12 * (text + len(str(body.get("error") or ""))) + 2048 <= session.limits.max_frame:
            answer = await session.request("cmd_result", body)
            if not (isinstance(answer, dict) and answer.get("ok")):
                raise RemoteError(f"unexpected answer {answer!r}")
            return
        stream = await session.open_stream("cmd_result", {"jid": body.get("jid")})
        await stream.write(json.dumps(body).encode())
        await stream.write_eof()
        answer = b""
        while chunk := await stream.read():
            answer += chunk
        if answer != b"ok":
            raise RemoteError(answer.decode(errors="replace") or "no answer")


class CommandsState(NamedTuple):
    """``agent.state["commands"]``: the scripts plugin runs scripts with the same runner and
    delivers their results through the same outbox."""

    cfg: RemoteCommandsConfig
    policy: CommandPolicy
    runner: Runner
    outbox: _Outbox


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


@hookimpl
def rport_config_sections() -> list[str]:
    return [SECTION]


@hookimpl
async def rport_agent_startup(agent: Any) -> None:
    raw = agent.config.extra_sections.get(SECTION, {})
    problems: list[str] = []
    try:
        cfg = structure_config(raw, RemoteCommandsConfig, prefix=SECTION)
    except ConfigError as exc:
        problems += exc.problems
        cfg = RemoteCommandsConfig()
        # The rules that did structure are still checked, so that every mistake shows at once.
        rules = {key: raw[key] for key in ("allow", "deny", "order") if _strings(raw.get(key))}
        cfg = dataclasses.replace(cfg, **rules)
    try:
        policy = CommandPolicy.build(cfg.allow, cfg.deny, cfg.order)
    except PolicyError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    outbox = _Outbox(agent)
    runner = Runner(agent.data_dir, cfg.send_back_limit, on_output=outbox.output,
                    on_result=outbox.result)
    outbox.on_delivered = runner.delivered
    # What a previous agent process left: results to deliver, jobs it could not finish watching.
    for result in await asyncio.to_thread(runner.recover):
        log.info("job %s: %s result left by the previous agent process, to deliver",
                 result["jid"], result["status"])
        await outbox.result(result)
    agent.state[NAME] = CommandsState(cfg, policy, runner, outbox)


@hookimpl
def rport_register_handlers(agent: Any, register: Any) -> None:
    async def run_cmd(session: Any, job: Any) -> Any:
        cfg, policy, runner, _ = agent.state[NAME]
        if not isinstance(job, dict) or not isinstance(job.get("command"), str) or not job.get("jid"):
            raise RemoteError("invalid run_cmd request")
        if not cfg.enabled:
            raise RemoteError("remote commands are disabled on this client ([remote-commands] enabled = false)")
        why = policy.check(job["command"])
        if why is not None:
            log.warning("command refused: %r: %s", job["command"], why)
            raise RemoteError(f"command is not allowed: {job['command']}: {why}")
        try:
            started = await runner.start(job)  # goes on if the connection drops meanwhile
        except Refused as exc:
            raise RemoteError(str(exc)) from None
        log.debug("job %s started (pid %s): %r", job["jid"], started["pid"], job["command"])
        return started

    async def cancel_cmd(session: Any, body: Any) -> Any:
        _, _, runner, _ = agent.state[NAME]
        return {"cancelled": runner.cancel(str((body or {}).get("jid", "")))}

    async def cmd_jobs(session: Any, body: Any) -> Any:
        """The jobs this agent process still knows: running, or with a result to deliver. The
        server fails the others it thinks are running (this process never saw them finish)."""
        _, _, runner, outbox = agent.state[NAME]
        return {"jids": sorted(runner.known() | outbox.pending)}

    register.request("run_cmd", run_cmd)
    register.request("cancel_cmd", cancel_cmd)
    register.request("cmd_jobs", cmd_jobs)


@hookimpl
async def rport_agent_connected(agent: Any, session: Any) -> None:
    outbox: _Outbox = agent.state[NAME][3]
    outbox.connected.set()
    asyncio.create_task(outbox.flush())


@hookimpl
def rport_agent_disconnected(agent: Any) -> None:
    agent.state[NAME][3].connected.clear()


@hookimpl
async def rport_agent_shutdown(agent: Any) -> None:
    if NAME in agent.state:
        _, _, runner, outbox = agent.state[NAME]
        outbox.task.cancel()
        await runner.close()
