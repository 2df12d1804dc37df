"""Running one command on the agent, as RPort does (§5): the command is written to
``{data_dir}/scripts/<uuid>`` and run by its interpreter (``/bin/sh`` by default; a ``#!`` first
line runs the file itself), optionally through ``sudo -n``, in ``cwd``. The pid is known at once;
the outcome (``successful``, ``failed``, or ``unknown`` when the timeout passes: the process is
left running) comes later. stdout and stderr are each kept up to ``send_back_limit`` bytes and
streamed live as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

CHUNK = 1 << 16
_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.S)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class Refused(Exception):
    """The command cannot be accepted (the API answers 409 with this text)."""


class _Capture:
    """One of stdout/stderr: kept up to ``limit`` bytes, the rest drained and counted."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit
        self.data = bytearray()
        self.overflow = False

    def add(self, chunk: bytes) -> bytes:
        room = self.limit - len(self.data)
        if room <= 0:
            self.overflow = True
            return b""
        kept = chunk[:room]
        self.data += kept
        if len(chunk) > room:
            self.overflow = True
        return kept

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class Runner:
    def __init__(self, data_dir: Path, send_back_limit: int, *,
                 on_output: Callable[[str, str, bytes], None],
                 on_result: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.scripts = data_dir / "scripts"
        self.limit = send_back_limit
        self.on_output = on_output
        self.on_result = on_result
        self.running: dict[str, asyncio.subprocess.Process] = {}
        self._cancelled: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def _argv(self, job: dict[str, Any], script: Path, first_line: str) -> list[str]:
        interpreter = job.get("interpreter") or ""
        if first_line.startswith("#!"):
            argv = [str(script)]
        else:
            if interpreter in ("", "/bin/sh", "sh"):
                path = "/bin/sh"
            elif interpreter in ("cmd", "powershell") and os.name != "nt":
                raise Refused(f"interpreter {interpreter} is only available on Windows clients")
            else:
                path = shutil.which(interpreter) or ""
                if not path:
                    raise Refused(f'interpreter "{interpreter}" not found on this client')
            argv = [path, str(script)]
        if job.get("is_sudo"):
            sudo = shutil.which("sudo")
            if not sudo:
                raise Refused("is_sudo is set but sudo is not installed on this client")
            argv = [sudo, "-n", *argv]
        return argv

    async def start(self, job: dict[str, Any]) -> dict[str, Any]:
        """Start the job; returns ``{"pid", "started_at", "error"}`` at once (``error`` and no
        pid if the process could not start: the job then fails with that reason)."""
        command = str(job.get("command", ""))
        self.scripts.mkdir(mode=0o700, parents=True, exist_ok=True)
        script = self.scripts / str(uuid.uuid4())
        argv = self._argv(job, script, command.split("\n", 1)[0])
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(command if command.endswith("\n") else command + "\n")
        os.chmod(script, 0o540)
        started_at = now_rfc3339()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=job.get("cwd") or None, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
        except OSError as exc:
            script.unlink(missing_ok=True)
            return {"pid": None, "started_at": started_at,
                    "error": f"failed to start {argv[0]}: {exc.strerror or exc}"
                             + (f" (cwd {job.get('cwd')})" if job.get("cwd") else "")}
        jid = str(job["jid"])
        self.running[jid] = proc
        task = asyncio.create_task(self._watch(job, jid, proc, script, started_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"pid": proc.pid, "started_at": started_at, "error": ""}

    async def _watch(self, job: dict[str, Any], jid: str, proc: asyncio.subprocess.Process,
                     script: Path, started_at: str) -> None:
        out, err = _Capture("stdout", self.limit), _Capture("stderr", self.limit)
        readers = [asyncio.create_task(self._pump(jid, proc.stdout, out)),
                   asyncio.create_task(self._pump(jid, proc.stderr, err))]
        timeout = float(job.get("timeout_sec") or 60)
        status, error = "", ""
        waiting = asyncio.gather(proc.wait(), *readers)
        # shielded, so it outlives a cancelled wait (agent shutdown): its outcome is read here,
        # or asyncio would log "exception was never retrieved" with a traceback
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except TimeoutError:
            status = "unknown"
            error = f"timeout of {timeout:g}s reached: the command is still running (pid {proc.pid})"
        if not status:
            if jid in self._cancelled:
                status, error = "cancelled", "cancelled"
            elif proc.returncode == 0:
                status = "successful"
            else:
                status = "failed"
                code = proc.returncode or 0
                error = (f"terminated by signal {-code}" if code < 0 else f"exit status {code}")
        for cap in (out, err):
            if cap.overflow:
                note = (f"overflow of {'stdOut' if cap.name == 'stdout' else 'stdErr'} buffer: "
                        f"maximum send_back_limit of {self.limit} bytes exceeded")
                error = f"{error}; {note}" if error else note
        stdout = out.text()
        summary = _SUMMARY.search(stdout)
        result = {
            "jid": jid, "status": status, "pid": proc.pid, "started_at": started_at,
            "finished_at": now_rfc3339() if status != "unknown" else None, "error": error,
            "result": {"stdout": stdout, "stderr": err.text(),
                       "summary": summary.group(1).strip() if summary else ""},
        }
        await self.on_result(result)
        # A timed-out process keeps running, as RPort's; its output is drained, not kept.
        await asyncio.gather(proc.wait(), *readers, return_exceptions=True)
        if status == "unknown" and jid in self._cancelled:
            # Cancelled after its timeout: the job's status follows what really happened.
            await self.on_result({**result, "status": "cancelled", "finished_at": now_rfc3339(),
                                  "error": "cancelled after the timeout"})
        self._cancelled.discard(jid)
        self.running.pop(jid, None)
        script.unlink(missing_ok=True)

    async def _pump(self, jid: str, pipe: asyncio.StreamReader | None, cap: _Capture) -> None:
        if pipe is None:
            return
        while chunk := await pipe.read(CHUNK):
            kept = cap.add(chunk)
            if kept:
                self.on_output(jid, cap.name, kept)

    def cancel(self, jid: str) -> bool:
        proc = self.running.get(jid)
        if proc is None or proc.returncode is not None:
            return False
        self._cancelled.add(jid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        return True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
