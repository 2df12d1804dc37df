"""Credential tables for agents (``[server] auth``/``auth_file``) and API users (``[api]
auth``/``auth_file``): plain passwords compared in constant time, or bcrypt hashes (``$2y$``,
``$2b$``, ``$2a$``, as RPort accepts) checked in a worker thread so the event loop never blocks.

Identical checks in flight share one bcrypt run, and a successful check is remembered as an HMAC under a per-process random key (never the
password itself), so an agent reconnecting, or a script calling the API every second, costs one
bcrypt check, not one per call: a server restart does not turn 1,000 reconnecting agents into
minutes of hashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import bcrypt

BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
AGENT_THREADS = max(1, (os.cpu_count() or 2) - 1)  # leave a core to the event loop
_DUMMY_HASH = bcrypt.hashpw(b"dummy", bcrypt.gensalt(4))


class CredentialsError(Exception):
    """A credentials file or setting is unusable; the message says which and why."""


@attrs.frozen
class Entry:
    secret: str  # plain password or bcrypt hash
    groups: tuple[str, ...] = ()


class PasswordChecker:
    """Checks passwords against stored secrets (plain, compared in constant time, or bcrypt,
    hashed in a bounded worker pool), remembering successful bcrypt checks as HMACs of
    (name, password, stored hash) under a per-process random key: a changed password (a new
    hash) is a new check, so nothing stale is ever accepted."""

    def __init__(self, *, threads: int = 2) -> None:
        # Each table hashes in its own bounded pool: 1,000 agents with distinct bcrypt
        # passwords must not delay an administrator's API login behind them.
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="rport-bcrypt")
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}

    async def check(self, name: str, password: str, stored: str | None) -> bool:
        """True if ``password`` matches ``stored`` (None: no such user, which takes the same
        path as a wrong password)."""
        known = stored is not None
        stored = stored or ""
        if not stored.startswith(BCRYPT_PREFIXES):
            ok = hmac.compare_digest(stored.encode(), password.encode())
            return ok and known and stored != ""
        token = hmac.new(self._key, b"\0".join((name.encode(), password.encode(), stored.encode())),
                         hashlib.sha256).digest()
        if token in self._verified:
            self._verified.move_to_end(token)
            return True
        # Single flight: identical checks already running share its result.
        pending = self._inflight.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        self._inflight[token] = fut
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                self._pool, _bcrypt_check, password, stored)
            if ok:
                self._verified[token] = None
                while len(self._verified) > 10_000:
                    self._verified.popitem(last=False)
            fut.set_result(ok)
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            del self._inflight[token]
        return ok

    async def hash(self, password: str) -> str:
        """A bcrypt hash of ``password`` (``$2y$``, as RPort and htpasswd write them), made in
        the worker pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, hash_password, password)


def hash_password(password: str, rounds: int = 10) -> str:
    """RPort's bcrypt hash (cost 10, the ``$2y$`` prefix that htpasswd writes)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    return "$2y$" + hashed[4:]


class CredentialTable:
    def __init__(self, entries: dict[str, Entry], source: str, *, threads: int = 2) -> None:
        self.entries = entries
        self.checker = PasswordChecker(threads=threads)
        self.source = source

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    async def check(self, name: str, password: str) -> bool:
        """True if ``password`` is ``name``'s. Unknown names take the same path as wrong passwords."""
        entry = self.entries.get(name)
        return await self.checker.check(name, password, entry.secret if entry is not None else None)

    def groups(self, name: str) -> tuple[str, ...]:
        entry = self.entries.get(name)
        return entry.groups if entry else ()

    def set(self, name: str, entry: Entry) -> None:
        """Add or replace ``name`` in the live table (used by clients-auth writes)."""
        self.entries[name] = entry

    def remove(self, name: str) -> Entry | None:
        """Take ``name`` out of the live table: from now on its checks fail."""
        return self.entries.pop(name, None)

    def stored(self) -> dict[str, str]:
        """Name -> stored secret (plain password or hash), in the table's order."""
        return {name: entry.secret for name, entry in self.entries.items()}


def _bcrypt_check(password: str, stored: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), stored.encode())
    except ValueError:
        bcrypt.checkpw(b"x", _DUMMY_HASH)
        return False


def parse_pair(value: str, what: str) -> tuple[str, str]:
    name, sep, password = value.partition(":")
    if not sep or not name or not password:
        raise CredentialsError(f'{what}: must be "name:password"')
    return name, password


def load_agent_credentials(auth: str, auth_file: str) -> CredentialTable | None:
    """``auth = "id:password"`` or ``auth_file`` = JSON ``{"id": "password or bcrypt hash"}``."""
    if auth:
        name, password = parse_pair(auth, "server.auth")
        return CredentialTable({name: Entry(password)}, "Static Credentials", threads=AGENT_THREADS)
    if not auth_file:
        return None
    data = _read_json(auth_file, "server.auth_file")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise CredentialsError(f'server.auth_file: {auth_file} must be a JSON object {{"id": "password"}}')
    _no_empty_password({k: v for k, v in data.items()}, f"server.auth_file: {auth_file}")
    return CredentialTable({k: Entry(v) for k, v in data.items()}, "File", threads=AGENT_THREADS)


def _no_empty_password(passwords: dict[str, str], where: str) -> None:
    """An empty password would let anyone in with the name alone: a mistake, not a choice."""
    empty = sorted(name for name, password in passwords.items() if not password)
    if empty:
        raise CredentialsError(f"{where}: {empty[0]!r} has an empty password")


def load_api_users(auth: str, auth_file: str) -> CredentialTable | None:
    """``auth = "user:password"`` (an administrator) or ``auth_file``: RPort's JSON list
    ``[{"username", "password", "groups"}]``, or a plain ``{"user": "password"}`` object whose
    users are administrators."""
    if auth:
        name, password = parse_pair(auth, "api.auth")
        return CredentialTable({name: Entry(password, ("Administrators",))}, "Static Credentials")
    if not auth_file:
        return None
    data = _read_json(auth_file, "api.auth_file")
    entries: dict[str, Entry] = {}
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        entries = {k: Entry(v, ("Administrators",)) for k, v in data.items()}
    elif isinstance(data, list):
        for i, item in enumerate(data):
            if not (isinstance(item, dict) and isinstance(item.get("username"), str)
                    and isinstance(item.get("password"), str)
                    and isinstance(item.get("groups", []), list)):
                raise CredentialsError(f"api.auth_file: entry {i} of {auth_file} needs a username, "
                                       "a password and optionally a list of groups")
            entries[item["username"]] = Entry(item["password"], tuple(map(str, item.get("groups", []))))
    else:
        raise CredentialsError(f"api.auth_file: {auth_file} must be a JSON list of users "
                               '[{"username", "password", "groups"}]')
    _no_empty_password({k: e.secret for k, e in entries.items()}, f"api.auth_file: {auth_file}")
    return CredentialTable(entries, "File")


def save_agent_credentials(path: str, credentials: dict[str, str]) -> None:
    """Write ``auth_file`` (JSON ``{"id": "password or hash"}``) atomically: a temporary file in
    the same directory, flushed to disk, then renamed over the old one (whose mode it keeps), so
    a crash never leaves a half-written file and readers see the old or the new one."""
    target = Path(path).expanduser()
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(credentials, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: str, key: str) -> Any:
    try:
        return json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise CredentialsError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # also UnicodeDecodeError: not UTF-8
        raise CredentialsError(f"{key}: {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CredentialsError(f"{key}: {path} is not valid JSON: nested too deeply") from None


def generated_pair(path: Path, name: str) -> tuple[str, str, bool]:
    """A ``name:password`` pair generated once and kept in ``path`` (mode 0600).
    Returns (name, password, created now)."""
    if path.exists():
        name, _, password = path.read_text(encoding="utf-8").strip().partition(":")
        if name and password:
            return name, password, False
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"{name}:{password}\n")
    return name, password, True
