"""Running one command on the agent, as RPort does (§5): the command is written to
``{data_dir}/scripts/<uuid>`` and run by its interpreter (``/bin/sh`` by default; a ``#!`` first
line runs the file itself), optionally through ``sudo -n``, in ``cwd``. The pid is known at once;
the outcome (``successful``, ``failed``, or ``unknown`` when the timeout passes: the process is
left running) comes later. stdout and stderr are each kept up to ``send_back_limit`` bytes and
streamed live as they come.

What the agent must not lose if it is killed (or restarted) mid-job is journaled in
``{data_dir}/jobs`` (:mod:`.journal`): the job once started, then its result until the server has
it.
A new agent process (:meth:`Runner.recover`) delivers the results it finds, and reports a job
whose process it can no longer watch as ``unknown``, saying why (never ``failed``: the process
may well finish fine); the scripts of a dead agent process are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from .journal import Journal

CHUNK = 1 << 16
log = logging.getLogger("rport.plugins.commands")
_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.S)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class _PipeReader:
    """The read end of a child's stdout or stderr, read on the event loop as the child writes:
    each chunk (at most :data:`CHUNK` bytes) goes to ``on_data``, then ``on_eof`` is called
    once. Nothing is kept here: what the job keeps of its output is bounded by its capture
    (``send_back_limit``), and live output by the outbox.

    The runner owns the descriptor and closes it once, at the end. (An event loop's pipe
    transport over a ``Popen`` file object closes the number twice, libuv's close and then the
    file object's: a file another thread opened in between, a command's script, was closed
    under it.)"""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop,
                 on_data: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self._fd = fd
        self._loop = loop
        self._on_data = on_data
        self._on_eof = on_eof
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._on_data(data)
        else:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self._loop.remove_reader(fd)
            os.close(fd)
            self._on_eof()


class _Process:
    """A child process started by :func:`spawn`: ``pid``, ``returncode``, and :meth:`watch`,
    which reads its stdout and stderr. Its exit is watched through a pidfd on the event loop.
    (One future per job, no task per stream: a thousand jobs at once are a thousand of these.)"""

    def __init__(self, popen: subprocess.Popen[bytes], pipes: tuple[int, int],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.returncode: int | None = None
        self._pipes = pipes
        self._exited: asyncio.Future[int] = loop.create_future()
        self._left = 3  # the exit and each pipe's end
        self.finished: asyncio.Future[None] = loop.create_future()
        """Done once the process has exited and both its pipes have ended."""
        self._loop = loop
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except OSError:  # no pidfd (a kernel before 5.3): a thread waits instead
            self._pidfd = -1
            loop.run_in_executor(None, popen.wait).add_done_callback(self._waited)
        else:
            loop.add_reader(self._pidfd, self._on_exit)

    def watch(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
              ) -> asyncio.Future[None]:
        """Read the pipes (once) into the callbacks; returns :attr:`finished`."""
        if self._pipes:
            (out, err), self._pipes = self._pipes, ()
            _PipeReader(out, self._loop, on_stdout, self._one_done)
            _PipeReader(err, self._loop, on_stderr, self._one_done)
        return self.finished

    def _one_done(self) -> None:
        self._left -= 1
        if self._left == 0 and not self.finished.done():
            self.finished.set_result(None)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        try:
            _, status = os.waitpid(self.pid, 0)  # exited: does not block
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = 255  # reaped by someone else: its status is lost
        self._done(code)

    def _waited(self, fut: asyncio.Future[int]) -> None:
        self._done(fut.result() if not fut.cancelled() and fut.exception() is None else 255)

    def _done(self, code: int) -> None:
        self.returncode = self._popen.returncode = code
        if not self._exited.done():
            self._exited.set_result(code)
            self._one_done()

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


def _watch_streams(proc: Any, on_stdout: Callable[[bytes], None],
                   on_stderr: Callable[[bytes], None]) -> asyncio.Future[Any]:
    """:meth:`_Process.watch` for an ``asyncio.subprocess.Process`` (where there is no pidfd)."""
    async def pump(stream: Any, on_data: Callable[[bytes], None]) -> None:
        if stream is not None:
            while chunk := await stream.read(CHUNK):
                on_data(chunk)
    return asyncio.gather(proc.wait(), pump(proc.stdout, on_stdout), pump(proc.stderr, on_stderr))


class SpawnFailed(Exception):
    """The command's process could not be started (``OSError`` as the cause)."""


async def spawn(script: Path, text: bytes, argv: list[str], cwd: str | None) -> Any:
    """Write ``text`` to the new file ``script`` (mode 0540), then start ``argv`` in a new
    session with stdin from /dev/null and stdout/stderr piped. An error writing the script is
    raised as it is; one starting the process as :class:`SpawnFailed` (the script removed).

    Both happen in a thread (:func:`_start_in_thread`), in one hop: making a file blocks, 2-3 ms
    on a machine busy with a thousand commands, and so does starting a process: ``Popen`` forks
    with vfork, and the forking thread is suspended until the child has run ``exec`` (the
    agent's memory is not copied, but an agent starting 250 commands at once had its event
    loop stopped for half a second of such waits). The pipes are the runner's own, read on the
    loop by :class:`_PipeReader` and closed once: uvloop's pipe transports closed each
    descriptor twice, and a script file opened by a thread in between was closed under it (its
    ``fchmod`` once landed on the ``/dev/null`` Popen had opened with the same number). The
    process's exit is watched through a pidfd, rather than by the event loop's own subprocess
    support: uvloop's spawn forks the whole process, 2-17 ms per command depending on the
    agent's size (docs/performance.md). Where there is no pidfd (not Linux), asyncio's
    subprocesses."""
    loop = asyncio.get_running_loop()
    if not hasattr(os, "pidfd_open"):
        await asyncio.to_thread(_write_script, script, text)
        try:
            return await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            script.unlink(missing_ok=True)
            raise SpawnFailed(exc) from exc
    started = loop.run_in_executor(None, _start_in_thread, script, text, argv, cwd)
    try:
        popen, out_r, err_r = await asyncio.shield(started)
    except asyncio.CancelledError:
        # (the agent is stopping) the process may start all the same: its pipes are closed
        started.add_done_callback(_close_unwatched)
        raise
    return _Process(popen, (out_r, err_r), loop)


def _start_in_thread(script: Path, text: bytes, argv: list[str],
                     cwd: str | None) -> tuple[subprocess.Popen[bytes], int, int]:
    """In a thread: the script written, then the process started with the read ends of its
    stdout and stderr pipes (non-blocking) returned."""
    _write_script(script, text)
    try:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
        except BaseException:
            os.close(out_r)
            os.close(out_w)
            raise
        os.set_blocking(out_r, False)  # (the command's ends stay blocking, as it expects)
        os.set_blocking(err_r, False)
        try:
            popen = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out_w,
                                     stderr=err_w, start_new_session=True)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
    except OSError as exc:
        script.unlink(missing_ok=True)
        raise SpawnFailed(exc) from exc
    return popen, out_r, err_r


def _close_unwatched(started: asyncio.Future[Any]) -> None:
    if not started.cancelled() and started.exception() is None:
        _, out_r, err_r = started.result()
        os.close(out_r)
        os.close(err_r)


def _write_script(script: Path, text: bytes) -> None:
    fd = _create(script, 0o600)
    try:
        os.write(fd, text)
        os.fchmod(fd, 0o540)
    finally:
        os.close(fd)


class Refused(Exception):
    """The command cannot be accepted (the API answers 409 with this text)."""


class _Capture:
    """One of stdout/stderr: kept up to ``limit`` bytes, the rest drained and counted."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit
        self.data = bytearray()
        self.overflow = False
        self.live = True
        """Output is sent live until the job's result is handed on (a timed-out process's
        later output is drained, not sent: the server no longer follows the job)."""

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
        self.journal = Journal(data_dir / "jobs")
        self.limit = send_back_limit
        self.on_output = on_output
        self.on_result = on_result
        self.running: dict[str, asyncio.subprocess.Process] = {}
        self._undelivered: dict[str, int] = {}
        """Results of each job handed on and not yet delivered (their journal stays)."""
        self._starting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._started: dict[str, dict[str, Any]] = {}
        """The answer to each job's start, kept while the job is known (:meth:`known`)."""
        self._cancelled: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def _argv(self, job: dict[str, Any], script: Path, first_line: str) -> list[str]:
        import shutil  # here: it brings bz2, lzma and zlib, 0.4 MiB that an idle agent would hold

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

    def known(self) -> set[str]:
        """The jobs this agent process received and the server may not have the outcome of:
        being started, running, or with a result to deliver (see :meth:`delivered`)."""
        return set(self._starting) | set(self._started) | set(self.running)

    async def start(self, job: dict[str, Any]) -> dict[str, Any]:
        """Start the job; returns ``{"pid", "started_at", "error"}`` at once (``error`` and no
        pid if the process could not start: the job then fails with that reason). A job this
        agent already knows (the server sent it again, not knowing it had arrived) is not run
        twice: the answer is the first one's. Once begun, a start goes on even if its caller is
        cancelled (the connection dropped): the process is then a job of this agent, whose
        result is delivered on the next connection, not a process nobody watches."""
        jid = str(job.get("jid"))
        if jid in self._started:
            return self._started[jid]
        task = self._starting.get(jid)
        if task is None:
            task = self._starting[jid] = asyncio.ensure_future(self._start(job))

            def done(task: asyncio.Task[dict[str, Any]]) -> None:
                self._starting.pop(jid, None)
                if not task.cancelled():
                    task.exception()  # (read: a refusal's caller may be gone)
            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _start(self, job: dict[str, Any]) -> dict[str, Any]:
        import uuid  # here, at the first command: an idle agent does without it (0.2 MiB)

        command = str(job.get("command", ""))
        script = self.scripts / str(uuid.uuid4())
        argv = self._argv(job, script, command.split("\n", 1)[0])
        text = (command if command.endswith("\n") else command + "\n").encode()
        started_at = now_rfc3339()
        try:
            proc = await spawn(script, text, argv, job.get("cwd") or None)
        except SpawnFailed as failed:
            exc = failed.__cause__
            reason = (exc.strerror if isinstance(exc, OSError) else None) or exc
            return {"pid": None, "started_at": started_at,
                    "error": f"failed to start {argv[0]}: {reason}"
                             + (f" (cwd {job.get('cwd')})" if job.get("cwd") else "")}
        jid = str(job["jid"])
        self.running[jid] = proc
        answer = self._started[jid] = {"pid": proc.pid, "started_at": started_at, "error": ""}
        # Journaled before the server learns the pid: an agent killed right after answering
        # must find the job at its next start (and report it unknown, not leave it to be failed).
        await self.journal.write(jid, {"jid": jid, "pid": proc.pid, "started_at": started_at})
        task = asyncio.create_task(self._watch(job, jid, proc, script, started_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return answer

    # -- the journal ---------------------------------------------------------------------------

    def recover(self) -> list[dict[str, Any]]:
        """At start-up (in a thread): the results a previous agent process did not deliver, and
        for each job it was still watching an ``unknown`` result saying so; its scripts are
        removed (their processes, if still running, have opened them long ago). The scripts and
        journal directories are made here, so that the first command does not wait for them
        (a fan-out to a fresh fleet paid two ``mkdir`` per agent in its window)."""
        for directory in (self.scripts, self.journal.dir):
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:  # commands will say why they cannot start
                log.warning("cannot make %s: %s", directory, exc.strerror or exc)
        results = []
        for jid, entry in self.journal.recover().items():
            result = entry.get("result")
            if not isinstance(result, dict):
                pid = entry.get("pid")
                result = {
                    "jid": jid, "status": "unknown", "pid": pid,
                    "started_at": entry.get("started_at"), "finished_at": None,
                    "error": f"the agent was restarted while the command ran (pid {pid}); its "
                             "outcome and output are unknown",
                    "result": {"stdout": "", "stderr": "", "summary": ""}}
                self.journal.record(jid, {**entry, "result": result})
            results.append(result)
            self._undelivered[jid] = self._undelivered.get(jid, 0) + 1
        for leftover in self.scripts.glob("*"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
        return results

    def delivered(self, jid: str) -> None:
        """The server has one more of the job's results (or refused it): once it has them all
        and the job no longer runs (a timed-out job's final result comes later), its journal
        goes."""
        left = self._undelivered.get(jid, 0) - 1
        if left > 0:
            self._undelivered[jid] = left
            return
        self._undelivered.pop(jid, None)
        if jid not in self.running:
            self._forget(jid)

    def _forget(self, jid: str) -> None:
        self._started.pop(jid, None)
        self.journal.done(jid)

    async def _result(self, jid: str, entry: dict[str, Any], result: dict[str, Any]) -> None:
        """Journal a result, then hand it on for delivery."""
        await self.journal.write(jid, {**entry, "result": result})  # before the server has it
        self._undelivered[jid] = self._undelivered.get(jid, 0) + 1
        await self.on_result(result)

    # -- watching a job -------------------------------------------------------------------------

    async def _watch(self, job: dict[str, Any], jid: str, proc: Any, script: Path,
                     started_at: str) -> None:
        entry = {"jid": jid, "pid": proc.pid, "started_at": started_at}  # (journaled by _start)
        out, err = _Capture("stdout", self.limit), _Capture("stderr", self.limit)

        def reader(cap: _Capture) -> Callable[[bytes], None]:
            def on_data(chunk: bytes) -> None:
                kept = cap.add(chunk)
                if kept and cap.live:
                    self.on_output(jid, cap.name, kept)
            return on_data
        watch = proc.watch if isinstance(proc, _Process) else functools.partial(_watch_streams, proc)
        waiting = watch(reader(out), reader(err))
        timeout = float(job.get("timeout_sec") or 60)
        status, error = "", ""
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
        out.live = err.live = False
        await self._result(jid, entry, result)
        # A timed-out process keeps running, as RPort's; its output is drained, not sent.
        with contextlib.suppress(Exception):
            await asyncio.shield(waiting)
        if status == "unknown" and jid in self._cancelled:
            # Cancelled after its timeout: the job's status follows what really happened.
            await self._result(jid, entry, {**result, "status": "cancelled",
                                            "finished_at": now_rfc3339(),
                                            "error": "cancelled after the timeout"})
        self._cancelled.discard(jid)
        self.running.pop(jid, None)
        script.unlink(missing_ok=True)
        if jid not in self._undelivered:  # the server already has every result
            self._forget(jid)

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
        self.journal.close()


def _create(path: Path, mode: int) -> int:
    """A new file open for writing; its directory (private) is made the first time."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return os.open(path, flags, mode)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, flags, mode)
