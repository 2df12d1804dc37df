"""API tokens for scripts (RPort's ``/me/tokens``): ``<prefix>_<uuid>`` used as the password of
HTTP Basic auth, each limited to a scope. Only a SHA-256 of the token is stored (table
``api_tokens`` of rportd.db): the token has 122 random bits, so a slow hash would add nothing but
latency to every call. The token itself is shown once, when it is created.

Plain logic: the store runner and the clock are injected, as in :mod:`.sessions`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
import string
import time
import uuid
from typing import Any

import attrs

from .sessions import Clock, Runner

SCOPES = ("read", "read+write", "clients-auth")
PREFIX_LENGTH = 8
MAX_NAME = 249
TOKEN_RE = re.compile(r"([A-Za-z0-9]{8})_([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})")
_ALPHABET = string.ascii_letters + string.digits

_SCHEMA = """CREATE TABLE IF NOT EXISTS api_tokens (
    username TEXT NOT NULL,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_used REAL,
    PRIMARY KEY (username, prefix)
)"""


class TokenConflict(Exception):
    """Another token of the user has this name."""


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def parse_time(value: str) -> float:
    """An RFC 3339 date-time (``2025-01-31T12:00:00Z``; no zone means UTC) as Unix seconds;
    ValueError otherwise."""
    parsed = dt.datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(password: str) -> bool:
    return TOKEN_RE.fullmatch(password) is not None


@attrs.frozen
class ApiToken:
    username: str
    prefix: str
    name: str
    scope: str
    created_at: float
    expires_at: float
    last_used: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "name": self.name, "scope": self.scope,
                "created_at": rfc3339(self.created_at), "expires_at": rfc3339(self.expires_at),
                "last_used_at": rfc3339(self.last_used)}


_COLUMNS = "username, prefix, name, scope, created_at, expires_at, last_used"


class ApiTokens:
    def __init__(self, run: Runner, *, clock: Clock = time.time) -> None:
        self._run = run
        self.clock = clock

    async def open(self) -> None:
        def setup(db: sqlite3.Connection) -> None:
            with db:
                db.execute(_SCHEMA)
        await self._run(setup)

    async def create(self, username: str, name: str, scope: str, expires_at: float) -> tuple[ApiToken, str]:
        """A new token; returns it and its secret value (never stored in clear)."""
        now = self.clock()

        def write(db: sqlite3.Connection) -> tuple[ApiToken, str]:
            with db:
                if db.execute("SELECT 1 FROM api_tokens WHERE username=? AND name=?",
                              (username, name)).fetchone():
                    raise TokenConflict(name)
                while True:
                    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LENGTH))
                    if not db.execute("SELECT 1 FROM api_tokens WHERE username=? AND prefix=?",
                                      (username, prefix)).fetchone():
                        break
                value = f"{prefix}_{uuid.uuid4()}"
                db.execute(f"INSERT INTO api_tokens ({_COLUMNS}, token_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (username, prefix, name, scope, now, expires_at, None, hash_token(value)))
            return ApiToken(username, prefix, name, scope, now, expires_at), value
        return await self._run(write)

    async def list(self, username: str) -> list[ApiToken]:
        def read(db: sqlite3.Connection) -> list[ApiToken]:
            rows = db.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE username=? "
                              "ORDER BY created_at, prefix", (username,)).fetchall()
            return [ApiToken(*row) for row in rows]
        return await self._run(read)

    async def get(self, username: str, prefix: str) -> ApiToken | None:
        def read(db: sqlite3.Connection) -> ApiToken | None:
            row = db.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE username=? AND prefix=?",
                             (username, prefix)).fetchone()
            return ApiToken(*row) if row else None
        return await self._run(read)

    async def update(self, username: str, prefix: str, *, name: str | None = None,
                     expires_at: float | None = None) -> ApiToken | None:
        """Rename or re-date a token; None if the user has no such token."""
        def write(db: sqlite3.Connection) -> ApiToken | None:
            with db:
                if name is not None and db.execute(
                        "SELECT 1 FROM api_tokens WHERE username=? AND name=? AND prefix<>?",
                        (username, name, prefix)).fetchone():
                    raise TokenConflict(name)
                if name is not None:
                    db.execute("UPDATE api_tokens SET name=? WHERE username=? AND prefix=?",
                               (name, username, prefix))
                if expires_at is not None:
                    db.execute("UPDATE api_tokens SET expires_at=? WHERE username=? AND prefix=?",
                               (expires_at, username, prefix))
                row = db.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE username=? AND prefix=?",
                                 (username, prefix)).fetchone()
            return ApiToken(*row) if row else None
        return await self._run(write)

    async def delete(self, username: str, prefix: str) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            with db:
                return db.execute("DELETE FROM api_tokens WHERE username=? AND prefix=?",
                                  (username, prefix)).rowcount > 0
        return await self._run(write)

    async def check(self, username: str, value: str) -> ApiToken | str | None:
        """The token ``value`` of ``username``: the token if it is valid, a reason (str) if it
        is this user's token but expired, None if it is not one of the user's tokens."""
        match = TOKEN_RE.fullmatch(value)
        if match is None:
            return None
        prefix, digest, now = match.group(1), hash_token(value), self.clock()

        def touch(db: sqlite3.Connection) -> ApiToken | str | None:
            with db:
                row = db.execute(f"SELECT {_COLUMNS}, token_hash FROM api_tokens "
                                 "WHERE username=? AND prefix=?", (username, prefix)).fetchone()
                if row is None or not hmac.compare_digest(row[-1], digest):
                    return None
                token = ApiToken(*row[:-1])
                if token.expires_at <= now:
                    return f"API token {prefix} expired at {rfc3339(token.expires_at)}"
                if token.last_used is None or now - token.last_used >= 1:
                    db.execute("UPDATE api_tokens SET last_used=? WHERE username=? AND prefix=?",
                               (now, username, prefix))
                return attrs.evolve(token, last_used=now)
        return await self._run(touch)
