"""Receiving a pushed file on the agent, within ``[file-reception]`` (RPort's rules):

- refused when reception is disabled, or when the target, its folder or any folder above it
  matches a ``protected`` glob (``/usr/bin`` protects ``/usr/bin/x`` and ``/usr/bin/a/x``; the
  folder is also checked with its symbolic links resolved, so a link cannot lead around it);
- an existing file is left alone (``ignored``) unless ``force``, or ``sync`` and its MD5, mode
  or owner differ;
- the data goes to ``{data_dir}/filepush/<uuid>_rport_filepush`` (0600 while it is written),
  its size and MD5 are checked, then it gets its mode (default 0764 less the umask, as RPort)
  and owner, and is moved into place in one rename (the folder is created if missing). chmod and
  chown failures are warnings in the message, as in RPort; chown to another user, and a move
  into a folder the agent may not write, use ``sudo -n`` when ``sudo`` is on.

Blocking file work runs in threads; data is written as it arrives (at most ``FLUSH`` bytes held).
"""

from __future__ import annotations

import asyncio
import grp
import hashlib
import json
import os
import posixpath
import pwd
import re
import shutil
import stat
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from .config import FileReceptionConfig

FLUSH = 1 << 20
DEFAULT_MODE = 0o764
DISABLED = "uploads are disabled on this client, check [file-reception] enabled option"


class ReceptionError(Exception):
    """The file cannot be received; the text says why (the client's result message)."""


# -- protected paths ----------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as Go's filepath.Match reads it (RPort's): ``*`` and ``?`` never match ``/``,
    ``[...]`` a class (``[^...]`` or ``[!...]`` negated), ``\\`` escapes. Raises ValueError."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i == n:
                raise ValueError(f"invalid glob pattern {pattern!r}: trailing backslash")
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("^", "!") else i + 1)
            if end < 0:
                raise ValueError(f"invalid glob pattern {pattern!r}: unclosed [")
            body = pattern[i + 1:end]
            if body[:1] in ("^", "!"):
                body = "^" + body[1:]
            out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def compile_protected(patterns: list[str]) -> tuple[list[tuple[str, re.Pattern[str]]], list[str]]:
    compiled, problems = [], []
    for pattern in patterns:
        text = pattern.rstrip("/") or "/"
        try:
            compiled.append((pattern, glob_regex(text)))
        except (ValueError, re.error) as exc:
            problems.append(f"file-reception.protected: {exc}")
    return compiled, problems


def _candidates(path: str) -> list[str]:
    """The path and every folder above it (but ``/``)."""
    out = [path]
    while (parent := posixpath.dirname(path)) not in ("/", path):
        out.append(parent)
        path = parent
    return out


def protected_by(dest: str, protected: list[tuple[str, re.Pattern[str]]]) -> tuple[str, str] | None:
    """``(path, pattern)`` if ``dest`` is in a protected place, else None (blocking: it resolves
    the folder's symbolic links)."""
    paths = _candidates(dest)
    real_dir = os.path.realpath(posixpath.dirname(dest))
    paths += _candidates(posixpath.join(real_dir, posixpath.basename(dest)))
    for path in dict.fromkeys(paths):
        for pattern, regex in protected:
            if regex.fullmatch(path):
                return path, pattern
    return None


# -- the request ----------------------------------------------------------------------------------


@attrs.frozen
class Push:
    uuid: str
    filepath: str
    size: int
    md5: str
    mode: int | None = None
    user: str = ""
    group: str = ""
    force: bool = False
    sync: bool = False

    @classmethod
    def from_meta(cls, meta: Any) -> "Push":
        if not isinstance(meta, dict):
            raise ReceptionError("invalid upload request")
        try:
            push = cls(uuid=str(meta["uuid"]), filepath=str(meta["filepath"]),
                       size=int(meta["size"]), md5=str(meta["md5"]).lower(),
                       mode=None if meta.get("mode") is None else int(meta["mode"]),
                       user=str(meta.get("user") or ""), group=str(meta.get("group") or ""),
                       force=bool(meta.get("force")), sync=bool(meta.get("sync")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReceptionError(f"invalid upload request: {exc}") from None
        path = push.filepath
        if not path.startswith("/") or "\0" in path or posixpath.normpath(path) != path or path == "/":
            raise ReceptionError(f"invalid destination path {path!r}: an absolute, normalised path is required")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", push.uuid) or push.size < 0:
            raise ReceptionError("invalid upload request")
        return push

    @property
    def owned(self) -> bool:
        return bool(self.user or self.group)


def _md5_of(path: str) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(FLUSH):
            md5.update(chunk)
    return md5.hexdigest()


def _uid(name: str) -> int:
    return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid


def decide(push: Push, protected: list[tuple[str, re.Pattern[str]]]) -> str | None:
    """None to receive the file, or the message of an ``ignored`` result; raises
    :class:`ReceptionError` for a refusal (blocking)."""
    found = protected_by(push.filepath, protected)
    if found is not None:
        raise ReceptionError(f"target path {found[0]} matches protected pattern {found[1]}, "
                             "therefore the file push request is rejected")
    try:
        st = os.stat(push.filepath)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReceptionError(f"cannot check {push.filepath}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ReceptionError(f"{push.filepath} is a directory")
    if push.force:
        return None
    if push.sync:
        try:
            if _md5_of(push.filepath) != push.md5:
                return None
            if push.mode is not None and stat.S_IMODE(st.st_mode) != push.mode:
                return None
            if push.user and st.st_uid != _uid(push.user):
                return None
            if push.group and st.st_gid != _gid(push.group):
                return None
        except KeyError as exc:
            raise ReceptionError(f"no such user or group on this client: {exc.args[0]}") from None
        except OSError as exc:
            raise ReceptionError(f"cannot compare with {push.filepath}: {exc.strerror or exc}") from None
    return (f"file {push.filepath} already exists, should not be synched or overwritten with force")


# -- receiving ------------------------------------------------------------------------------------


def _open_temp(path: Path) -> BinaryIO:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _write(fh: BinaryIO, md5: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        fh.write(chunk)
        md5.update(chunk)


async def _run(*argv: str) -> str:
    """Run a helper (sudo -n chown/mv); "" on success, else what it said."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}"
    out, _ = await proc.communicate()
    if proc.returncode:
        return f"{' '.join(argv)}: {out.decode(errors='replace').strip() or f'exit status {proc.returncode}'}"
    return ""


class Receiver:
    """Receives pushed files for one agent."""

    def __init__(self, data_dir: Path, cfg: FileReceptionConfig,
                 protected: list[tuple[str, re.Pattern[str]]], umask: int) -> None:
        self.dir = data_dir / "filepush"
        self.cfg = cfg
        self.protected = protected
        self.umask = umask

    async def decide(self, push: Push) -> str | None:
        if not self.cfg.enabled:
            raise ReceptionError(DISABLED)
        return await asyncio.to_thread(decide, push, self.protected)

    async def receive(self, push: Push, stream: Any) -> dict[str, Any]:
        """Read the file from ``stream`` (to its EOF) and put it in place; the result."""
        temp = self.dir / f"{push.uuid}_rport_filepush"
        md5, size, fh = hashlib.md5(), 0, None
        failure = ""
        try:
            fh = await asyncio.to_thread(_open_temp, temp)
        except OSError as exc:
            failure = f"cannot create {temp}: {exc.strerror or exc}"
        held: list[bytes] = []
        held_bytes = 0
        while chunk := await stream.read():
            size += len(chunk)
            if size > push.size:
                if fh is not None:
                    await asyncio.to_thread(fh.close)
                await asyncio.to_thread(temp.unlink, True)
                stream.reset(f"more data than the {push.size} bytes announced")
                raise ReceptionError("more data than announced")
            if failure:
                continue  # drain: the server finds the result once it has sent everything
            held.append(chunk)
            held_bytes += len(chunk)
            if held_bytes >= FLUSH:
                failure = await self._flush(fh, md5, held)
                held, held_bytes = [], 0
        if not failure and held:
            failure = await self._flush(fh, md5, held)
        if fh is not None:
            await asyncio.to_thread(fh.close)
        if not failure and size != push.size:
            failure = f"received {size} bytes of {push.size}"
        if not failure and md5.hexdigest() != push.md5:
            failure = (f"md5 check failed: checksum from server {push.md5} doesn't equal the "
                       f"calculated checksum {md5.hexdigest()}")
        if failure:
            await asyncio.to_thread(temp.unlink, True)
            raise ReceptionError(failure)
        try:
            notes = await self._place(push, temp)
        finally:
            await asyncio.to_thread(temp.unlink, True)
        notes.append(f"file successfully copied to destination {push.filepath}")
        return {"uuid": push.uuid, "filepath": push.filepath, "size": size,
                "message": ". ".join(notes), "status": "success"}

    async def _flush(self, fh: BinaryIO | None, md5: Any, chunks: list[bytes]) -> str:
        try:
            await asyncio.to_thread(_write, fh, md5, chunks)
        except OSError as exc:
            return f"cannot write the file: {exc.strerror or exc}"
        return ""

    async def _place(self, push: Push, temp: Path) -> list[str]:
        """chmod, chown, then move into place; the warnings (chmod and chown failures)."""
        notes: list[str] = []
        mode = push.mode if push.mode is not None else DEFAULT_MODE & ~self.umask
        try:
            await asyncio.to_thread(os.chmod, temp, mode)
        except OSError as exc:
            notes.append(f"chmod failed: {exc.strerror or exc}")
        if push.owned:
            why = await self._chown(push, temp)
            if why:
                notes.append(f"chown of {temp} failed: {why}")
        await self._move(temp, push.filepath)
        return notes

    async def _chown(self, push: Push, temp: Path) -> str:
        try:
            uid = _uid(push.user) if push.user else -1
            gid = _gid(push.group) if push.group else -1
        except KeyError as exc:
            return f"no such user or group: {exc.args[0]}"
        if (uid in (-1, os.geteuid())) and (gid in (-1, os.getegid())):
            return ""  # already the agent's own user and group
        try:
            await asyncio.to_thread(os.chown, temp, uid, gid)
            return ""
        except PermissionError as exc:
            if not self.cfg.sudo:
                return f"{exc.strerror}: changing a file's owner needs root ([file-reception] sudo)"
        except OSError as exc:
            return exc.strerror or str(exc)
        chown = shutil.which("chown") or "/bin/chown"
        return await _run("sudo", "-n", chown, f"{push.user}:{push.group}", str(temp))

    async def _move(self, temp: Path, dest: str) -> None:
        folder = posixpath.dirname(dest)
        try:
            await asyncio.to_thread(os.makedirs, folder, 0o755, True)
        except OSError as exc:
            if not (self.cfg.sudo and isinstance(exc, PermissionError)):
                raise ReceptionError(f"cannot create {folder}: {exc.strerror or exc}") from None
        try:
            await asyncio.to_thread(os.replace, temp, dest)
            return
        except PermissionError as exc:
            if not self.cfg.sudo:
                raise ReceptionError(f"rename {temp} {dest}: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno != 18:  # EXDEV: another file system, copied below
                raise ReceptionError(f"rename {temp} {dest}: {exc.strerror or exc}") from None
            try:
                await asyncio.to_thread(_copy_into, temp, dest)
                return
            except PermissionError:
                if not self.cfg.sudo:
                    raise ReceptionError(f"cannot write {dest}: permission denied") from None
            except OSError as err:
                raise ReceptionError(f"cannot write {dest}: {err.strerror or err}") from None
        why = await _run("sudo", "-n", shutil.which("mv") or "/bin/mv", str(temp), dest)
        if why:
            raise ReceptionError(f"rename {temp} {dest}: permission denied; {why}")


def _copy_into(temp: Path, dest: str) -> None:
    """Across file systems: copy next to the target (mode and owner kept), then rename."""
    staging = posixpath.join(posixpath.dirname(dest), f".{posixpath.basename(dest)}.rport-{os.getpid()}")
    try:
        shutil.copy2(temp, staging)
        st = os.stat(temp)
        try:
            os.chown(staging, st.st_uid, st.st_gid)
        except PermissionError:
            pass
        os.replace(staging, dest)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def result_of_error(push_uuid: str, message: str) -> dict[str, Any]:
    return {"uuid": push_uuid, "filepath": "", "size": 0, "message": message, "status": "error"}


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"
